"""qemu-system: kernel, initrd, virtio block devices, 9p and virtio-fs folders, serial console on the
container's stdio, and named virtio-serial ports for exec sessions, each a Unix socket qemu listens on in
the container's state folder (`server=on,wait=off`: the guest boots without waiting for a client; qemu
takes one client at a time per port and listens again when it leaves).

virtio-fs (qemu's `vhost-user-fs-pci`) needs the guest's RAM in a shared memory object that the
virtiofsd process maps: the RAM then comes from a memfd backend (`share=on`) of exactly `-m`'s size,
made the guest's one NUMA node; qemu connects to virtiofsd's socket at start and fails if nobody listens.

A guest type may ask for another machine: FreeBSD boots on `microvm` (urunc's `unikernels/freebsd.go`),
which has no PCI bus, so its devices are the virtio-mmio ones (`virtio-blk-device`, `virtio-9p-device`,
`virtio-net-device`; qemu's `docs/system/i386/microvm.rst`) and it gets no pvpanic-pci. Hermit and
Mewz get a modern-only NIC (`disable-legacy=on`), as urunc's guest modules give them. urunc's
`[monitors.qemu]` options: `vhost=on` on the tap, a QMP control socket, `-L` for the data files
(runtime.monitorplan decides them).

Where urunc starts qemu with `-sandbox` (the spec carries a seccomp profile), ukrun does too, with the
same values; a spec without one (`seccomp=unconfined`) turns it off. Unlike urunc, ukrun does not
assume KVM: `accel` is "kvm" only where a probe booted a guest with these very flags (ukrun.kvm).

qemu's grammars, as its sources read them (see hypervisors.base for why this matters):
- `-drive`, `-fsdev`, `-chardev`, `-netdev` and `-device` take QemuOpts (util/qemu-option.c): `key=value`
  items separated by commas, a value running to the next comma, and `,,` a comma inside a value
  (`get_opt_value`); nothing else is special. Every value is written with its commas doubled. Object ids
  (`id=`, `drive=`, `netdev=`, `fsdev=`, `chardev=`) must be well-formed ids (a letter, then letters,
  digits, `-`, `.`, `_`) and are refused otherwise. A `file=` that is not absolute could name a block
  protocol (`nbd:`, `json:`) and is refused.
- `-kernel` and `-append` are taken whole.
- `-initrd` is taken whole for a Linux or PVH kernel, but a multiboot kernel (hw/i386/multiboot.c) reads a
  list of modules there: split at commas (`,,` a comma), each module's file name ending at its first
  space (the rest is the module's command line). No spelling means one file to both readers, so an initrd
  path with a comma or a space is refused: `-initrd <image>/boot/m,/etc/shadow` would load a host file.
"""

from __future__ import annotations

import os

from ukrun.hypervisors.base import (
    ExitDecoding,
    Hypervisor,
    MonitorLaunch,
    MonitorSpec,
    Unescapable,
    refuse_chars,
    register,
)

SANDBOX = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"
NAME = "qemu"


def opt(value: str) -> str:
    """A QemuOpts value: commas doubled."""
    return value.replace(",", ",,")


def object_id(value: str, option: str) -> str:
    """A QemuOpts object id (util/id.c, id_wellformed), refused when not well-formed."""
    if not (value[:1].isascii() and value[:1].isalpha()
            and all(c.isascii() and (c.isalnum() or c in "-._") for c in value)):
        raise Unescapable(NAME, option, value, "is not a qemu id (a letter, then letters, digits, '-', '.', '_')")
    return value


def file_path(value: str, option: str) -> str:
    """An absolute path as a QemuOpts value; a relative one could name a block protocol (`nbd:...`)."""
    if not value.startswith("/"):
        raise Unescapable(NAME, option, value, "is not an absolute path, and qemu could read it as a protocol")
    return opt(value)


def initrd(value: str) -> str:
    return refuse_chars(NAME, "-initrd", value, ", ", "qemu's -initrd cannot carry (a multiboot kernel reads "
                        "a comma-separated list of modules there, each with a command line after a space)")


@register
class Qemu(Hypervisor):
    name = NAME
    binary = f"qemu-system-{os.uname().machine}"
    can_share = True
    can_virtiofs = True
    control_socket = True
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
        bus = "device" if spec.machine.startswith("microvm") else "pci"  # virtio-mmio on a microvm
        argv = [binary, *self.accel_args(spec.accel)]
        if spec.machine:
            argv += ["-M", spec.machine]
        if spec.data_path:
            argv += ["-L", spec.data_path]
        argv += [
            "-m", str(spec.memory_mib), "-smp", str(spec.vcpus),
            "-nodefaults", "-no-user-config", "-no-reboot",
            "-display", "none", "-serial", "stdio", "-monitor", "none",
        ]
        if spec.control_socket:
            qmp = file_path(spec.control_socket, "-chardev path=")
            argv += ["-chardev", f"socket,id=qmp,path={qmp},server=on,wait=off",
                     "-mon", "chardev=qmp,mode=control"]
        if spec.seccomp:
            argv += ["-sandbox", SANDBOX]
        if spec.virtiofs is not None:
            argv += ["-object", f"memory-backend-memfd,id=mem,size={spec.memory_mib}M,share=on",
                     "-numa", "node,memdev=mem"]
        argv += ["-kernel", spec.kernel, "-append", spec.cmdline]
        for path in spec.initrds:
            argv += ["-initrd", initrd(path)]
        for dev in spec.blocks:
            ro = ",readonly=on" if dev.read_only else ""
            drive = object_id(dev.id, "a block device's id")
            argv += [
                "-drive", f"file={file_path(dev.path, '-drive file=')},format=raw,if=none,id={drive},cache=none,"
                          f"aio=threads{ro}",
                "-device", f"virtio-blk-{bus},drive={drive},serial={opt(dev.id)}",
            ]
        for share in spec.shares:
            ro = ",readonly=on" if share.read_only else ""
            fsdev = object_id(share.tag, "a 9p share's tag")
            argv += [
                "-fsdev", f"local,id={fsdev},path={file_path(share.path, '-fsdev path=')},security_model=none,"
                          f"multidevs=remap{ro}",
                "-device", f"virtio-9p-{bus},fsdev={fsdev},mount_tag={opt(share.tag)}",
            ]
        if spec.virtiofs is not None:
            argv += ["-chardev", f"socket,id=vfs0,path={file_path(spec.virtiofs.socket, '-chardev path=')}",
                     "-device", f"vhost-user-fs-pci,chardev=vfs0,tag={opt(spec.virtiofs.tag)}"]
        for i, net in enumerate(spec.nets):
            vhost = ",vhost=on" if spec.vhost else ""
            modern = ",disable-legacy=on" if net.modern else ""
            argv += ["-netdev", f"tap,id=net{i},ifname={opt(net.tap)},script=no,downscript=no{vhost}",
                     "-device", f"virtio-net-{bus},netdev=net{i},mac={opt(net.mac)}{modern}"]
        if spec.serial_ports:
            argv += ["-device", f"virtio-serial-{bus},id=ukserial"]
        for i, port in enumerate(spec.serial_ports):
            argv += ["-chardev", f"socket,id=ukport{i},path={file_path(port.socket, '-chardev path=')},server=on,"
                                 "wait=off",
                     "-device", f"virtserialport,bus=ukserial.0,chardev=ukport{i},name={opt(port.name)}"]
        if spec.exit_device is not None:
            argv += ["-device", f"isa-debug-exit,iobase={spec.exit_device.iobase:#x},"
                                f"iosize={spec.exit_device.iosize:#x}"]
        if bus == "pci":
            # A guest that panics (and has the pvpanic driver) makes qemu fail instead of exiting 0 at the
            # reboot that -no-reboot turns into an exit.
            argv += ["-device", "pvpanic-pci", "-action", "panic=exit-failure"]
        return MonitorLaunch(tuple(argv))
