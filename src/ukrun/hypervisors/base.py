"""What every monitor builder shares: a plain description of the VM in, an argv (and the files the
monitor reads, such as firecracker's configuration) out.

Builders are pure and know nothing of containerd or OCI; `runtime.plan` composes them. What a monitor
cannot do (share a folder, load an initrd) is refused here with one sentence naming the fix.

What must stay true: no string reaches a monitor's option parser unescaped. Paths and names come from
hostile images (the kernel, initrd and block paths, a Solo5 manifest's device names) and pods, and each
monitor parses its options with its own grammar, in which a comma or a quote can start another option
(`-initrd a,/host/file`, `--disk path=a,path=/dev/vda`). So each builder writes every value in its
monitor's grammar: escaped where the grammar can escape it, passed where nothing in it is special, and
refused (`Unescapable`) where no escape exists; `runtime.plan` then names the image's or spec's field.
Its unit test parses each argv back with the monitor's rules.
"""

from __future__ import annotations

import enum
import os
from abc import ABC, abstractmethod

from ukrun.errors import PlanError, UkrunError
from ukrun.tuples import NamedTuple

TYPE_CHECKING = False  # not typing's, whose import costs a create without a helper about 2 ms
if TYPE_CHECKING:
    from typing import ClassVar


class BlockDevice(NamedTuple):
    id: str
    path: str
    read_only: bool = False


class Share(NamedTuple):
    """A host folder the guest mounts over virtio-9p under `tag`."""

    tag: str
    path: str
    read_only: bool = False


class VirtioFs(NamedTuple):
    """A host folder the guest mounts over virtio-fs under `tag`, served by a virtiofsd listening on
    `socket` (a vhost-user backend): the guest's memory must then be shared with that process."""

    tag: str
    socket: str


class NetDevice(NamedTuple):
    """A network device backed by a host tap; `id` is the guest's name for it (a solo5 device name)."""

    id: str
    tap: str
    mac: str
    modern: bool = False  # virtio 1.0 only, no legacy interface (qemu's disable-legacy=on): Hermit, Mewz


class SerialPort(NamedTuple):
    """A virtio-serial port the guest sees as `name`, served by the monitor on a Unix socket it listens on."""

    name: str
    socket: str


class ExitDevice(NamedTuple):
    """qemu's isa-debug-exit: a guest writing v to the port makes qemu exit with (v << 1) | 1."""

    iobase: int
    iosize: int = 4


class ExitDecoding(enum.Enum):
    """How the container's init turns the monitor's exit status into the container's exit code
    (see launcher.exit_code). Values cross into the launcher's configuration."""

    RAW = "raw"  # the status is the code (solo5's tenders: the unikernel's solo5_exit status)
    DEBUG_EXIT = "isa-debug-exit"  # an odd status above 1 is (code << 1) | 1; 0 a clean power-off
    UNIKRAFT = "unikraft"  # Unikraft writes 41 at a clean halt (status 83) and 42 at a crash (85)


class MonitorSpec(NamedTuple):
    kernel: str
    cmdline: str
    initrds: tuple[str, ...] = ()  # the image's initrd, then any the guest type adds (urunit's config)
    memory_mib: int = 256
    vcpus: int = 1
    blocks: tuple[BlockDevice, ...] = ()
    shares: tuple[Share, ...] = ()
    virtiofs: VirtioFs | None = None
    nets: tuple[NetDevice, ...] = ()
    accel: str = "tcg"  # "kvm" only where a probe showed it works
    exit_device: ExitDevice | None = None
    seccomp: bool = True  # the monitor's own sandbox (qemu -sandbox, cloud-hypervisor --seccomp, ...)
    workdir: str = ""  # the container's state folder: where a monitor's configuration file goes
    machine: str = ""  # qemu's machine type (-M) when not the default PC; a microvm has virtio-mmio devices
    vhost: bool = False  # qemu: the tap's vhost-net backend
    control_socket: str = ""  # the monitor's control socket (qemu QMP, firecracker and cloud-hypervisor API)
    data_path: str = ""  # qemu: its data files' folder (-L)
    app_args: tuple[str, ...] = ()  # the application's arguments, for a monitor that takes them itself
    serial_ports: tuple[SerialPort, ...] = ()  # exec sessions (runtime.execplan)


class MonitorLaunch(NamedTuple):
    argv: tuple[str, ...]
    files: tuple[tuple[str, str], ...] = ()  # (path, text) written before the monitor starts


class Unescapable(PlanError):
    """A value that a monitor's option grammar cannot carry. `chars` are the characters at fault ("" when
    it is something else, such as its length); runtime.plan turns this into a sentence naming the image's
    field the value came from, never the host path."""

    def __init__(self, monitor: str, option: str, value: str, reason: str, chars: str = "") -> None:
        super().__init__(f"monitor {monitor} cannot take {value!r} as {option}: it {reason}")
        self.monitor, self.option, self.value, self.reason, self.chars = monitor, option, value, reason, chars


def _shown(chars: str) -> str:
    names = {",": "a comma", " ": "a space", '"': "a double quote", "=": "an equals sign", "\n": "a newline",
             "\t": "a tab", "\0": "a NUL", "[": "a bracket", "]": "a bracket"}
    said = list(dict.fromkeys(names.get(c, repr(c)) for c in chars))
    return " and ".join([", ".join(said[:-1]), said[-1]] if len(said) > 1 else said)


def refuse_chars(monitor: str, option: str, value: str, chars: str, why: str) -> str:
    """`value` unchanged, or Unescapable when it holds any of `chars`, which `why` explains."""
    found = "".join(dict.fromkeys(c for c in value if c in chars))
    if found:
        raise Unescapable(monitor, option, value, f"holds {_shown(found)}, which {why}", found)
    return value


def utf8(monitor: str, option: str, value: str) -> str:
    """`value` unchanged, or Unescapable when it is not valid UTF-8 (a Rust monitor's strings must be)."""
    try:
        value.encode()
    except UnicodeEncodeError:
        raise Unescapable(monitor, option, value, "is not valid UTF-8, which its options must be") from None
    return value


def which(name: str) -> str:
    """shutil.which without shutil, whose import (bz2, lzma) costs create more than the lookup:
    a name with a slash is taken as a path; "" when not found or not executable."""
    candidates = [name] if "/" in name else [os.path.join(d or ".", name)
                                             for d in os.environ.get("PATH", os.defpath).split(os.pathsep)]
    return next((c for c in candidates if os.path.isfile(c) and os.access(c, os.X_OK)), "")


class Hypervisor(ABC):
    name: ClassVar[str]
    binary: ClassVar[str]
    needs_kvm: ClassVar[bool] = False  # cannot run without /dev/kvm (no emulation fallback)
    can_share: ClassVar[bool] = False  # virtio-9p folders
    can_virtiofs: ClassVar[bool] = False  # virtio-fs folders (vhost-user-fs), with ukrun's 9p files share beside
    max_initrds: ClassVar[int] = 1
    reads_manifest: ClassVar[bool] = False  # attaches devices by the names the kernel's Solo5 manifest declares
    control_socket: ClassVar[bool] = False  # serves a control socket ([monitors.<name>] socket_path)
    can_net: ClassVar[bool] = True  # gives the guest a network device backed by a tap
    can_block: ClassVar[bool] = True  # attaches block devices
    read_only_blocks: ClassVar[bool] = True  # attaches a block device read-only
    serial_ports: ClassVar[bool] = False  # named virtio-serial ports on Unix sockets (exec's transport)

    def __init__(self, path: str = "") -> None:
        self.path = path

    def find(self) -> str:
        """The monitor binary: the configured path, else the first on PATH; "" when there is none."""
        return which(self.path or self.binary)

    def missing(self) -> str:
        return (f"monitor {self.name}: binary {self.path or self.binary!r} is not installed; "
                f"install it or set path under [monitors.{self.name}] in ukrun's config.toml")

    def launch(self, spec: MonitorSpec, binary: str) -> MonitorLaunch:
        if spec.shares and not self.can_share:
            raise UkrunError(f"monitor {self.name} cannot share a folder with the guest; use a block snapshotter "
                             "(devmapper, blockfile) or a monitor that shares folders (qemu)")
        if spec.virtiofs is not None and not self.can_virtiofs:
            raise UkrunError(f"monitor {self.name} cannot share a folder over virtio-fs here; use qemu or 9p")
        if spec.blocks and not self.can_block:
            raise UkrunError(f"monitor {self.name} attaches no block device, and this guest needs "
                             f"{', '.join(d.id for d in spec.blocks)}: drop the block rootfs or the image's block, "
                             "or use another monitor")
        ro = [d.id for d in spec.blocks if d.read_only]
        if ro and not self.read_only_blocks:
            raise UkrunError(f"monitor {self.name} opens every block device read-write, and {', '.join(ro)} can "
                             "only be attached read-only (see the plan's notes): drop it, or mountRootfs")
        if spec.serial_ports and not self.serial_ports:
            raise UkrunError(f"monitor {self.name} has no virtio-serial ports here; exec into a guest needs qemu")
        if len(spec.initrds) > self.max_initrds:
            raise UkrunError(f"monitor {self.name} loads at most {self.max_initrds} initrd(s), this guest needs "
                             f"{len(spec.initrds)}: {', '.join(spec.initrds)}")
        for option, value in (("the kernel", spec.kernel), ("the command line", spec.cmdline),
                              *(("an initrd", i) for i in spec.initrds),
                              *(("a block device", b.path) for b in spec.blocks)):
            refuse_chars(self.name, option, value, "\0", "no command line or file name can carry")
        return self._launch(spec, binary)

    @abstractmethod
    def _launch(self, spec: MonitorSpec, binary: str) -> MonitorLaunch: ...

    def exit_decoding(self, spec: MonitorSpec, guest: ExitDecoding) -> ExitDecoding:
        """What the guest's exit means under this monitor: only qemu has the debug-exit device."""
        return ExitDecoding.RAW

    def kvm_probe_args(self) -> list[str] | None:
        """The accelerator and CPU arguments a KVM launch uses, for the probe that checks KVM really runs
        a guest (see ukrun.kvm); None for a monitor that cannot fall back from KVM."""
        return None


REGISTRY: dict[str, type[Hypervisor]] = {}


def register(cls: type[Hypervisor]) -> type[Hypervisor]:
    REGISTRY[cls.name] = cls
    return cls


def get(name: str, path: str = "") -> Hypervisor:
    from ukrun.hypervisors import cloud_hypervisor, firecracker, hyperlight, qemu, solo5  # noqa: F401 - they register

    try:
        return REGISTRY[name](path)
    except KeyError:
        raise UkrunError(f"unknown monitor {name!r}; ukrun supports {', '.join(sorted(REGISTRY))}") from None
