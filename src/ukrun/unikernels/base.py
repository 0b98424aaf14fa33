"""What a guest type decides: its kernel command line, which root filesystems it can boot from, and
what it needs written into a block rootfs before the VM gets it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

from ukrun.errors import UkrunError
from ukrun.unikernel import UnikernelConfig


@dataclass(frozen=True)
class GuestProcess:
    args: tuple[str, ...]
    env: tuple[str, ...]
    cwd: str


class UnikernelType(ABC):
    name: ClassVar[str]
    block_fs_types: ClassVar[tuple[str, ...]] = ()
    shares_root: ClassVar[bool] = False  # can boot from a folder rootfs shared over virtio-9p
    reports_exit_code: ClassVar[bool] = False

    @abstractmethod
    def cmdline(self, config: UnikernelConfig, process: GuestProcess, root: str) -> str:
        """`root`: "block" (the rootfs is /dev/vda, with `rootfs_files` written into it), "9p" (shared under
        the tag ROOT_TAG, `rootfs_files` on the read-only share FILES_TAG), or ""."""

    def rootfs_files(self, process: GuestProcess) -> dict[str, bytes]:
        """Files (path -> content) the guest needs: written into a block rootfs before the handoff, or put
        on the FILES_TAG share beside a folder rootfs."""
        return {}


ROOT_TAG = "rootfs"
FILES_TAG = "ukrun"  # a folder rootfs: the guest's files (rootfs_files) come on this read-only share
REGISTRY: dict[str, type[UnikernelType]] = {}


def register(cls: type[UnikernelType]) -> type[UnikernelType]:
    REGISTRY[cls.name] = cls
    return cls


def get(name: str) -> UnikernelType:
    from ukrun.unikernels import linux  # noqa: F401 - registers itself

    try:
        return REGISTRY[name]()
    except KeyError:
        raise UkrunError(
            f"unikernel type {name!r} is not supported by this ukrun yet; supported: {', '.join(sorted(REGISTRY))}"
        ) from None
