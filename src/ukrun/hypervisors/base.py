"""What every monitor builder shares: a plain description of the VM in, an argv out.

Builders know nothing of containerd or OCI; `runtime` composes them.
"""

from __future__ import annotations

import shutil
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar

from ukrun.errors import UkrunError


@dataclass(frozen=True)
class BlockDevice:
    id: str
    path: str
    read_only: bool = False


@dataclass(frozen=True)
class Share:
    """A host folder the guest mounts over virtio-9p under `tag`."""

    tag: str
    path: str
    read_only: bool = False


@dataclass(frozen=True)
class MonitorSpec:
    kernel: str
    cmdline: str
    initrd: str = ""
    memory_mib: int = 256
    vcpus: int = 1
    blocks: tuple[BlockDevice, ...] = ()
    shares: tuple[Share, ...] = ()
    accel: str = "tcg"  # "kvm" only where a probe showed it works
    exit_device: bool = False  # guest reports its exit code through an I/O port
    extra: tuple[str, ...] = field(default_factory=tuple)


class Hypervisor(ABC):
    name: ClassVar[str]
    binary: ClassVar[str]
    # How the container's init turns this monitor's exit status into the guest's exit code, when the
    # guest reports one (see launcher.exit_code); empty: the status is the code.
    exit_code_map: ClassVar[str] = ""

    def __init__(self, path: str = "") -> None:
        self.path = path

    def find(self) -> str:
        """The monitor binary: the configured path, else the first on PATH."""
        found = shutil.which(self.path or self.binary)
        if not found:
            raise UkrunError(
                f"monitor {self.name}: binary {self.path or self.binary!r} is not installed; "
                f"install it or set path under [monitors.{self.name}] in ukrun's config.toml"
            )
        return found

    @abstractmethod
    def argv(self, spec: MonitorSpec, binary: str) -> list[str]: ...

    def kvm_probe_args(self) -> list[str] | None:
        """The accelerator and CPU arguments a KVM launch uses, for the probe that checks KVM really runs
        a guest (see ukrun.kvm); None for a monitor that cannot fall back from KVM."""
        return None


REGISTRY: dict[str, type[Hypervisor]] = {}


def register(cls: type[Hypervisor]) -> type[Hypervisor]:
    REGISTRY[cls.name] = cls
    return cls


def get(name: str, path: str = "") -> Hypervisor:
    from ukrun.hypervisors import qemu  # noqa: F401 - registers itself

    try:
        return REGISTRY[name](path)
    except KeyError:
        raise UkrunError(f"unknown monitor {name!r}; ukrun supports {', '.join(sorted(REGISTRY))}") from None
