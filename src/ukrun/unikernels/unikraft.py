"""A Unikraft unikernel on qemu or firecracker.

Its command line is Unikraft's: library parameters (`uklibparam`), then `--`, then the application's
arguments; urunc's shape is `Unikraft [env.vars=[ K=V ... ]] [netdev.ip=<cidr>:<gw>:<dns>] [vfs.fstab=[ ... ]]
-- <args>` (the DNS server is the container's first nameserver, where urunc writes 8.8.8.8)
for `unikernelVersion` 0.16.1 and later (and when the version is not given), and
`vfs.rootfs=initrd` with no environment before that. Its root filesystem is the image's initrd
(extracted into a RAM file system) or the container's rootfs folder over 9p (tag fs0); it reads no
block device. On qemu it reports through isa-debug-exit at 0x501: 41 at a clean halt, 42 at a crash.
On hyperlight-unikraft (a kernel built for Hyperlight) the monitor takes the application's arguments
itself, and this command line is not used.
"""

from __future__ import annotations

from ukrun.hypervisors.base import ExitDecoding, ExitDevice
from ukrun.unikernels.base import ROOT_TAG, GuestRequest, RootMode, UnikernelType, register

NEW_FORM = (0, 16, 1)


def _version(text: str) -> tuple[int, ...] | None:
    try:
        return tuple(int(p) for p in text.strip().lstrip("v").split("."))
    except ValueError:
        return None


@register
class Unikraft(UnikernelType):
    name = "unikraft"
    label = "a Unikraft unikernel"
    monitors = ("qemu", "firecracker", "hyperlight-unikraft")
    shares_root = True
    initrd_root = True
    exit_device = ExitDevice(0x501, 2)
    exit_decoding = ExitDecoding.UNIKRAFT

    def cmdline(self, req: GuestRequest) -> str:
        version = _version(req.config.version)
        new = version is None or version >= NEW_FORM
        parts = ["Unikraft"]
        if new and req.process.env:
            parts.append(f"env.vars=[ {' '.join(req.process.env)} ]")
        net = req.network
        if net is not None:
            if new:
                parts.append(f"netdev.ip={net.cidr}:{net.gateway}" + (f":{net.dns}" if net.dns else ""))
            else:
                parts += [f"netdev.ipv4_addr={net.address}", f"netdev.ipv4_gw_addr={net.gateway}",
                          f"netdev.ipv4_subnet_mask={net.mask}"]
        if req.root is RootMode.INITRD:
            parts.append('vfs.fstab=[ "initrd0:/:extract:::" ]' if new else "vfs.rootfs=initrd")
        elif req.root is RootMode.SHARED and new:
            parts.append(f'vfs.fstab=[ "{ROOT_TAG}:/:9pfs:::" ]')
        args = req.process.args or tuple(req.config.cmdline.split())
        return " ".join([*parts, "--", *args])
