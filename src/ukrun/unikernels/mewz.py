"""A Mewz unikernel on qemu: no file system, no arguments; its command line carries only its network
(`ip=<addr>/<prefix> gateway=<gw>`, as urunc writes it). It reports through isa-debug-exit at 0x501.
Mewz wants 512 MiB or more (urunc's `docs/unikernel-support.md`)."""

from __future__ import annotations

from ukrun.hypervisors.base import ExitDecoding, ExitDevice
from ukrun.unikernels.base import GuestRequest, UnikernelType, register


@register
class Mewz(UnikernelType):
    name = "mewz"
    label = "a Mewz unikernel"
    monitors = ("qemu",)
    modern_nic = True  # urunc's mewz.go: virtio-net-pci with disable-legacy=on
    exit_device = ExitDevice(0x501, 2)
    exit_decoding = ExitDecoding.DEBUG_EXIT

    def cmdline(self, req: GuestRequest) -> str:
        net = req.network
        return f"ip={net.cidr} gateway={net.gateway}" if net is not None else ""
