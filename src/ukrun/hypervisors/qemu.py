"""qemu-system: kernel, initrd, virtio block devices, 9p and virtio-fs folders, serial console on the
container's stdio, and named virtio-serial ports for exec sessions, each a Unix socket qemu listens on in
the container's state folder (`server=on,wait=off`: the guest boots without waiting for a client; qemu
takes one client at a time per port and listens again when it leaves).

virtio-fs (qemu's `vhost-user-fs-pci`) needs the guest's RAM in a shared memory object that the
virtiofsd process maps: the RAM then comes from a memfd backend (`share=on`) of exactly `-m`'s size,
made the guest's one NUMA node; qemu connects to virtiofsd's socket at start and fails if nobody listens.

Where urunc starts qemu with `-sandbox` (the spec carries a seccomp profile), ukrun does too, with the
same values; a spec without one (`seccomp=unconfined`) turns it off. Unlike urunc, ukrun does not
assume KVM: `accel` is "kvm" only where a probe booted a guest with these very flags (ukrun.kvm).
"""

from __future__ import annotations

import os

from ukrun.hypervisors.base import ExitDecoding, Hypervisor, MonitorLaunch, MonitorSpec, register

SANDBOX = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"


def _escape(value: str) -> str:
    return value.replace(",", ",,")  # qemu's option syntax doubles commas


@register
class Qemu(Hypervisor):
    name = "qemu"
    binary = f"qemu-system-{os.uname().machine}"
    can_share = True
    can_virtiofs = True
    serial_ports = True

    @staticmethod
    def accel_args(accel: str) -> list[str]:
        """The accelerator and CPU model; the KVM probe boots with exactly these."""
        return ["-accel", "kvm", "-cpu", "host"] if accel == "kvm" else ["-accel", "tcg,thread=multi", "-cpu", "max"]

    def kvm_probe_args(self) -> list[str]:
        return self.accel_args("kvm")

    def exit_decoding(self, spec: MonitorSpec, guest: ExitDecoding) -> ExitDecoding:
        return guest if spec.exit_device is not None else ExitDecoding.RAW

    def _launch(self, spec: MonitorSpec, binary: str) -> MonitorLaunch:
        argv = [
            binary, *self.accel_args(spec.accel),
            "-m", str(spec.memory_mib), "-smp", str(spec.vcpus),
            "-nodefaults", "-no-user-config", "-no-reboot",
            "-display", "none", "-serial", "stdio", "-monitor", "none",
        ]
        if spec.seccomp:
            argv += ["-sandbox", SANDBOX]
        if spec.virtiofs is not None:
            argv += ["-object", f"memory-backend-memfd,id=mem,size={spec.memory_mib}M,share=on",
                     "-numa", "node,memdev=mem"]
        argv += ["-kernel", spec.kernel, "-append", spec.cmdline]
        for initrd in spec.initrds:
            argv += ["-initrd", initrd]
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
        if spec.virtiofs is not None:
            argv += ["-chardev", f"socket,id=vfs0,path={_escape(spec.virtiofs.socket)}",
                     "-device", f"vhost-user-fs-pci,chardev=vfs0,tag={spec.virtiofs.tag}"]
        for i, net in enumerate(spec.nets):
            argv += ["-netdev", f"tap,id=net{i},ifname={net.tap},script=no,downscript=no",
                     "-device", f"virtio-net-pci,netdev=net{i},mac={net.mac}"]
        if spec.serial_ports:
            argv += ["-device", "virtio-serial-pci,id=ukserial"]
        for i, port in enumerate(spec.serial_ports):
            argv += ["-chardev", f"socket,id=ukport{i},path={_escape(port.socket)},server=on,wait=off",
                     "-device", f"virtserialport,bus=ukserial.0,chardev=ukport{i},name={_escape(port.name)}"]
        if spec.exit_device is not None:
            argv += ["-device", f"isa-debug-exit,iobase={spec.exit_device.iobase:#x},"
                                f"iosize={spec.exit_device.iosize:#x}"]
        # A guest that panics (and has the pvpanic driver) makes qemu fail instead of exiting 0 at the
        # reboot that -no-reboot turns into an exit.
        argv += ["-device", "pvpanic-pci", "-action", "panic=exit-failure"]
        return MonitorLaunch(tuple(argv))
