"""Solo5's tenders: `solo5-spt` (a seccomp-sandboxed process, no KVM) and `solo5-hvt` (KVM).

A Solo5 unikernel declares its devices by name in its manifest (unikernels.solo5_manifest); the
tender attaches each with `--block:<name>=<path>` or `--net:<name>=<tap>`, refuses a name the manifest
does not declare, and refuses to start when a declared device is not attached. The plan takes the names
from the kernel's manifest (runtime.solo5plan). Everything after the kernel is the unikernel's command line (the tender
joins its words with spaces). The tender's exit status is the unikernel's (`solo5_exit`), 255 for
`solo5_abort` and fatal traps, 1 when the tender itself refuses. Memory is in MiB. The tenders apply
their own seccomp filters; there is no shared folder, no initrd, no read-only block device (the tenders
open them read-write) and no control socket.

Its grammar (see hypervisors.base), as the tenders' modules scan their options (tenders/*/
*_module_{blk,block,net}.c): `--block:%67[A-Za-z0-9]=%4096s`, `--net:%67[A-Za-z0-9]=%19s` (`@<n>` there
is a file descriptor) and `--net-mac:<name>=<six hex pairs>`. No escape exists: the device name, which
comes from the kernel's manifest (the image's), must be 1 to 67 letters and digits, and a path or tap
name must hold no whitespace (where `%s` stops) and fit its width; anything else is refused. The kernel
and its command line come after `--`, taken whole.
"""

from __future__ import annotations

from ukrun.hypervisors.base import Hypervisor, MonitorLaunch, MonitorSpec, Unescapable, refuse_chars, register

NAME_MAX = 67  # MFT_NAME_MAX
PATH_MAX = 4096  # the tenders' `%4096s`
TAP_MAX = 19  # `%19s`
WHITESPACE = " \t\n\r\v\f"


def device_name(monitor: str, option: str, value: str) -> str:
    if not (0 < len(value) <= NAME_MAX and all(c.isascii() and c.isalnum() for c in value)):
        raise Unescapable(monitor, option, value, f"is not 1 to {NAME_MAX} letters and digits, a Solo5 device name")
    return value


def word(monitor: str, option: str, value: str, width: int) -> str:
    """A `%<width>s` field: no whitespace, at most `width` bytes."""
    refuse_chars(monitor, option, value, WHITESPACE, "a Solo5 tender's option cannot carry (it ends the value)")
    if len(value.encode(errors="surrogateescape")) > width:
        raise Unescapable(monitor, option, value, f"is over {width} bytes, which a Solo5 tender's option cannot "
                          "carry")
    return value


def mac(monitor: str, value: str) -> str:
    pairs = value.split(":")
    if not (len(pairs) == 6 and all(len(p) == 2 and all(c in "0123456789abcdefABCDEF" for c in p) for p in pairs)):
        raise Unescapable(monitor, "--net-mac:", value, "is not six hex pairs, a Solo5 tender's MAC address")
    return value


class _Solo5(Hypervisor):
    max_initrds = 0
    reads_manifest = True
    read_only_blocks = False  # the tenders open block devices O_RDWR

    def _launch(self, spec: MonitorSpec, binary: str) -> MonitorLaunch:
        argv = [binary, f"--mem={spec.memory_mib}"]
        for dev in spec.blocks:
            name = device_name(self.name, "--block:", dev.id)
            argv.append(f"--block:{name}={word(self.name, f'--block:{name}=', dev.path, PATH_MAX)}")
        for net in spec.nets:
            name = device_name(self.name, "--net:", net.id)
            if net.tap.startswith("@"):
                raise Unescapable(self.name, f"--net:{name}=", net.tap, "begins with '@', a file descriptor there")
            argv += [f"--net:{name}={word(self.name, f'--net:{name}=', net.tap, TAP_MAX)}",
                     f"--net-mac:{name}={mac(self.name, net.mac)}"]
        argv += ["--", spec.kernel]
        return MonitorLaunch(tuple(argv + ([spec.cmdline] if spec.cmdline else [])))


@register
class Spt(_Solo5):
    name = "spt"
    binary = "solo5-spt"


@register
class Hvt(_Solo5):
    name = "hvt"
    binary = "solo5-hvt"
    needs_kvm = True
