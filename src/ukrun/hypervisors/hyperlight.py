"""hyperlight-unikraft: a Unikraft kernel built for Hyperlight's platform, run by Hyperlight's own host.

Its command line, as its `--help` and README document it: `hyperlight-unikraft <kernel> [--initrd
<cpio>] [--memory <size>] [-- <app-args>]`, the size in binary units (`256Mi`); the application's
arguments follow `--`, one argv entry each (no kernel command line to format). urunc v0.8 runs it the
same way ("simple execution only": no network, no host folders, no block devices), so ukrun gives it no
network (a note says so) and refuses a block device or a shared folder. It needs KVM (or Hyper-V's
mshv, which this ukrun does not look for), has no control socket, and applies no seccomp filter of
its own; its exit status is the container's.
"""

from __future__ import annotations

from ukrun.hypervisors.base import Hypervisor, MonitorLaunch, MonitorSpec, register


@register
class Hyperlight(Hypervisor):
    name = "hyperlight-unikraft"
    binary = "hyperlight-unikraft"
    needs_kvm = True
    can_net = False
    can_block = False

    def _launch(self, spec: MonitorSpec, binary: str) -> MonitorLaunch:
        argv = [binary, spec.kernel]
        for initrd in spec.initrds:
            argv += ["--initrd", initrd]
        argv += ["--memory", f"{spec.memory_mib}Mi"]
        if spec.app_args:
            argv += ["--", *spec.app_args]
        return MonitorLaunch(tuple(argv))
