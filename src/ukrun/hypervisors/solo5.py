"""Solo5's tenders: `solo5-spt` (a seccomp-sandboxed process, no KVM) and `solo5-hvt` (KVM).

A Solo5 unikernel declares its devices by name in its manifest (unikernels.solo5_manifest); the
tender attaches each with `--block:<name>=<path>` or `--net:<name>=<tap>`, refuses a name the manifest
does not declare, and refuses to start when a declared device is not attached. The plan takes the names
from the kernel's manifest (runtime.solo5plan). Everything after the kernel is the unikernel's command line (the tender
joins its words with spaces). The tender's exit status is the unikernel's (`solo5_exit`), 255 for
`solo5_abort` and fatal traps, 1 when the tender itself refuses. Memory is in MiB. The tenders apply
their own seccomp filters; there is no shared folder, no initrd, no read-only block device (the tenders
open them read-write) and no control socket.
"""

from __future__ import annotations

from ukrun.hypervisors.base import Hypervisor, MonitorLaunch, MonitorSpec, register


class _Solo5(Hypervisor):
    max_initrds = 0
    reads_manifest = True
    read_only_blocks = False  # the tenders open block devices O_RDWR

    def _launch(self, spec: MonitorSpec, binary: str) -> MonitorLaunch:
        argv = [binary, f"--mem={spec.memory_mib}"]
        argv += [f"--block:{dev.id}={dev.path}" for dev in spec.blocks]
        for net in spec.nets:
            argv += [f"--net:{net.id}={net.tap}", f"--net-mac:{net.id}={net.mac}"]
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
