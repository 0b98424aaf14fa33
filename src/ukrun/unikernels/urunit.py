"""urunit, urunc's init for Linux and FreeBSD guests: what it reads, and how urunc hands it over.

An image whose first argument names urunit (urunc: the word `urunit` in it) gets urunc's contract instead
of ukrun's: nothing of ukrun is written into its rootfs, and urunit reads one configuration file, named
by `URUNIT_CONFIG` in its environment (urunit's README, "Urunit configuration file"; urunc's
`unikernels/linux.go` and `freebsd.go` for where it goes). The file holds, in this order: the
environment (`UES`, one `K=V` a line, `UEE`), the process (`UCS`, `UID:`, `GID:`, `WD:`, `UCE`) and the
block devices to mount (`UBS`, then `ID:<virtio serial>` and `MP:<folder>` for each, `UBE`; the root
device is left out, and on firecracker, which has no serials, the ids carry `FC` and urunit finds the
devices by order). FreeBSD's urunit also takes the arguments there (`ARC:<count>`, `ARV:<arg>` each,
inside UCS/UCE), since FreeBSD starts init with none, and the network (`UNS`, `IP:`, `GW:`, `MSK:`,
`UNE`), since FreeBSD has no `ip=`; that file is a raw block device, padded with a `PAD` line and
newlines to whole 512-byte sectors (firecracker hides a trailing partial sector).

Where the file goes: for a Linux guest booting from an initrd, a member `/urunit.conf` (mode 0400)
of an archive appended to the image's initrd (`URUNIT_CONFIG=/urunit.conf`); for any other Linux root, an
extra initrd the kernel keeps (`retain_initrd URUNIT_CONFIG=/sys/firmware/initrd`, Linux 6.10 and
later); for FreeBSD, a block device after the others (`URUNIT_CONFIG=/dev/vtbd<n>`). urunit reads the
environment of the kernel's command line only for `URUNIT_CONFIG` and `URUNIT_DEFROUTE`, which asks it
for a default route through eth0 (urunc sets it when the gateway is outside the guest's subnet).

What must stay true: a line of the file is one value; an environment entry or working folder holding a
line break would start another section, so those are refused (they cannot reach a process through urunit).
"""

from __future__ import annotations

import ipaddress

from ukrun import cpio
from ukrun.errors import UkrunError
from ukrun.network.base import GuestNetwork
from ukrun.unikernels.base import GuestBlock, GuestProcess

INITRD_CONF = "/urunit.conf"  # in an initrd root, a member of an archive appended to the image's initrd
RETAINED = "/sys/firmware/initrd"  # any other Linux root: the kernel keeps the extra initrd there
SECTOR = 512
FIRECRACKER_PREFIX = "FC"


def named(args: tuple[str, ...]) -> bool:
    """Whether the process's first argument is urunit (urunc's test: the word urunit in it)."""
    return bool(args) and "urunit" in args[0]


def default_route(net: GuestNetwork | None) -> bool:
    """URUNIT_DEFROUTE: the gateway lies outside the guest's own subnet, so the kernel's `ip=` route is not
    enough (a /32 address with a link-local gateway, as some CNI plugins give)."""
    if net is None:
        return False
    return ipaddress.ip_address(net.gateway) not in ipaddress.ip_interface(net.cidr).network


def config(process: GuestProcess, blocks: tuple[GuestBlock, ...], monitor: str, rootfs_id: str,
           args: tuple[str, ...] | None = None, net: GuestNetwork | None = None) -> bytes:
    """urunit's configuration; `args` (FreeBSD) adds the arguments, and `net` with it the network section."""
    for item in (*process.env, process.cwd, *(args or ())):
        if "\n" in item or "\r" in item:
            raise UkrunError(f"{item.split('=', 1)[0]!r} holds a line break, which urunit's configuration (one "
                             "value a line) cannot carry: remove it from the process's environment, folder or "
                             "arguments")
    lines = ["UES", *process.env, "UEE", "UCS", f"UID:{process.uid}", f"GID:{process.gid}", f"WD:{process.cwd or '/'}"]
    if args is not None:
        lines += [f"ARC:{len(args)}", *(f"ARV:{a}" for a in args)]
    lines += ["UCE", "UBS"]
    prefix = FIRECRACKER_PREFIX if monitor == "firecracker" else ""
    for block in blocks:
        if block.mount_point and block.id != rootfs_id:
            lines += [f"ID:{prefix}{block.id}", f"MP:{block.mount_point}"]
    lines.append("UBE")
    if args is None:
        return ("\n".join(lines) + "\n").encode()
    lines += ["UNS", f"IP:{net.address if net else ''}", f"GW:{net.gateway if net else ''}",
              f"MSK:{net.mask if net else ''}", "UNE", "PAD"]
    data = ("\n".join(lines) + "\n").encode()
    return data + b"\n" * (-len(data) % SECTOR)


def initrd_member(data: bytes) -> bytes:
    """An archive holding the configuration as /urunit.conf, readable by root only, as urunc appends it."""
    return cpio.archive({INITRD_CONF: data}, file_mode=0o400)
