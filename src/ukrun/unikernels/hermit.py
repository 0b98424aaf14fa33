"""A Hermit (hermit-rs) unikernel on qemu: its application's arguments follow `--` when kernel
parameters precede them; its files come in its initrd."""

from __future__ import annotations

from ukrun.unikernels.base import GuestRequest, UnikernelType, register


@register
class Hermit(UnikernelType):
    name = "hermit"
    label = "a Hermit unikernel"
    monitors = ("qemu",)
    initrd_root = True
    modern_nic = True  # urunc's hermit_rs.go: virtio-net-pci with disable-legacy=on

    def cmdline(self, req: GuestRequest) -> str:
        args = " ".join(req.process.args or tuple(req.config.cmdline.split()))
        net = req.network
        if net is None:
            return args
        return f"ip={net.cidr} gateway={net.gateway}" + (f" -- {args}" if args else "")
