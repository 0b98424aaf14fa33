"""qemu-system: kernel, initrd, virtio block devices, serial console on the container's stdio."""

from __future__ import annotations

import platform

from ukrun.hypervisors.base import Hypervisor, MonitorSpec, register

EXIT_PORT = 0xF4


def _escape(value: str) -> str:
    return value.replace(",", ",,")  # qemu's option syntax doubles commas


@register
class Qemu(Hypervisor):
    name = "qemu"
    binary = f"qemu-system-{platform.machine()}"
    exit_code_map = "qemu-isa-debug-exit"

    @staticmethod
    def accel_args(accel: str) -> list[str]:
        """The accelerator and CPU model; the KVM probe boots with exactly these."""
        return ["-accel", "kvm", "-cpu", "host"] if accel == "kvm" else ["-accel", "tcg,thread=multi", "-cpu", "max"]

    def kvm_probe_args(self) -> list[str]:
        return self.accel_args("kvm")

    def argv(self, spec: MonitorSpec, binary: str) -> list[str]:
        argv = [
            binary, *self.accel_args(spec.accel),
            "-m", str(spec.memory_mib), "-smp", str(spec.vcpus),
            "-nodefaults", "-no-user-config", "-no-reboot",
            "-display", "none", "-serial", "stdio", "-monitor", "none",
            "-kernel", spec.kernel, "-append", spec.cmdline,
        ]
        if spec.initrd:
            argv += ["-initrd", spec.initrd]
        for dev in spec.blocks:
            ro = ",readonly=on" if dev.read_only else ""
            argv += [
                "-drive", f"file={_escape(dev.path)},format=raw,if=none,id={dev.id},cache=none,aio=threads{ro}",
                "-device", f"virtio-blk-pci,drive={dev.id},serial={dev.id}",
            ]
        for share in spec.shares:
            ro = ",readonly=on" if share.read_only else ""
            argv += [
                "-fsdev", f"local,id={share.tag},path={_escape(share.path)},security_model=none,multidevs=remap{ro}",
                "-device", f"virtio-9p-pci,fsdev={share.tag},mount_tag={share.tag}",
            ]
        if spec.exit_device:
            argv += ["-device", f"isa-debug-exit,iobase={EXIT_PORT:#x},iosize=0x04"]
        # A guest that panics (and has the pvpanic driver) makes qemu fail instead of exiting 0 at the
        # reboot that -no-reboot turns into an exit.
        argv += ["-device", "pvpanic-pci", "-action", "panic=exit-failure"]
        return argv + list(spec.extra)
