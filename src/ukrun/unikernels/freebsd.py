"""A FreeBSD guest on qemu or firecracker, as urunc v0.8.1 runs it (its `unikernels/freebsd.go`).

FreeBSD boots through PVH (firecracker; qemu's `microvm` machine, which has virtio-mmio devices and no
PCI bus: `-M microvm,acpi=on,pic=on,pit=on,rtc=on`, ACPI being what FreeBSD reads its CPUs from). In
the PVH boot every `name=value` of the command line becomes a kernel environment variable
(FreeBSD's `loader.conf(5)` names): `vfs.root.mountfrom=<fs>:<device>` says the root and `init_path`
the first process. Its roots: the container's rootfs on a block snapshotter (`ext2fs:/dev/vtbd0`, an
ext2 file system: FreeBSD's ext2fs driver), the image's own block file at blkMntPoint `/`
(`ufs:/dev/vtbd0`), or the container's folder over 9p (`p9fs:fs0`, FreeBSD 15's virtio 9p, qemu only).
No initrd and no virtio-fs. FreeBSD starts init with no arguments and has no `ip=`: with urunit as
init (unikernels.urunit), the arguments, environment, user, folder, block mounts and network go in
urunit's configuration, attached as a raw block device after the others and named by
`URUNIT_CONFIG=/dev/vtbd<n>`; without urunit the image's init gets nothing but `init_path`.
"""

from __future__ import annotations

from ukrun.errors import UkrunError
from ukrun.unikernels import urunit
from ukrun.unikernels.base import ROOT_TAG, GuestRequest, RootMode, UnikernelType, register

MICROVM = "microvm,acpi=on,pic=on,pit=on,rtc=on"
ROOT_DEVICE = "/dev/vtbd0"
CONFIG_IDS = {"qemu": "urunit", "firecracker": "FC_URUNIT_CONFIG"}  # the config drive, as urunc names it


def _args(req: GuestRequest) -> tuple[str, ...]:
    return req.process.args or tuple(req.config.cmdline.split())


@register
class FreeBSD(UnikernelType):
    name = "freebsd"
    label = "a FreeBSD guest"
    monitors = ("qemu", "firecracker")
    block_fs_types = ("ext2",)
    shares_root = True
    image_block_root = True
    qemu_machine = MICROVM

    def told_network(self, req: GuestRequest) -> bool:
        return req.network is not None and urunit.named(_args(req))

    def init_mounts_blocks(self, args: tuple[str, ...]) -> bool:
        return urunit.named(args)

    def check(self, req: GuestRequest) -> None:
        if req.root not in (RootMode.BLOCK, RootMode.IMAGE_BLOCK, RootMode.SHARED):
            raise UkrunError("a freebsd guest needs a root file system, and this image gives it none: set "
                             "com.urunc.unikernel.mountRootfs (an ext2 block snapshot, or a folder over 9p on "
                             "qemu), or com.urunc.unikernel.block with blkMntPoint /")

    def cmdline(self, req: GuestRequest) -> str:
        if req.root is RootMode.SHARED:
            parts = [f"vfs.root.mountfrom=p9fs:{ROOT_TAG}"]
        else:
            fs = "ufs" if req.root is RootMode.IMAGE_BLOCK else "ext2fs"
            parts = [f"vfs.root.mountfrom={fs}:{ROOT_DEVICE}"]
        args = _args(req)
        if args:
            parts.append(f"init_path={args[0]}")
        if urunit.named(args):
            parts.append(f"URUNIT_CONFIG=/dev/vtbd{len(req.blocks)}")
            if urunit.default_route(req.network):
                parts.append("URUNIT_DEFROUTE=1")
        return " ".join(parts)

    def config_drive(self, req: GuestRequest) -> tuple[str, bytes] | None:
        args = _args(req)
        if not urunit.named(args):
            return None
        data = urunit.config(req.process, req.blocks, req.monitor, self.rootfs_id, args=args[1:], net=req.network)
        return CONFIG_IDS.get(req.monitor, "urunit"), data
