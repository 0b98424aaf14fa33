"""What a guest type decides: the monitors it runs on, the root filesystems it can boot from, its kernel
command line in its framework's own convention, and what it needs beside the kernel (files written
into its rootfs, an extra initrd).

Guest types are pure and know nothing of containerd or of the host; `runtime.plan` composes them.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod

from ukrun.errors import UkrunError
from ukrun.hypervisors.base import ExitDecoding, ExitDevice
from ukrun.network.base import GuestNetwork
from ukrun.tuples import NamedTuple
from ukrun.unikernel import UnikernelConfig

TYPE_CHECKING = False  # not typing's, whose import costs a create without a helper about 2 ms
if TYPE_CHECKING:
    from typing import ClassVar


class RootMode(enum.Enum):
    """Where the guest's root filesystem comes from."""

    NONE = "none"  # the kernel alone (and its initrd, if any, as an initrd)
    BLOCK = "block"  # the container's snapshot device, handed over
    SHARED = "9p"  # the container's rootfs folder over virtio-9p, tag ROOT_TAG
    VIRTIOFS = "virtiofs"  # the container's rootfs folder over virtio-fs (a virtiofsd), tag ROOT_TAG
    INITRD = "initrd"  # the image's initrd is the root filesystem
    IMAGE_BLOCK = "image-block"  # the image's own block file (`com.urunc.unikernel.block` at blkMntPoint "/")


class GuestProcess(NamedTuple):
    args: tuple[str, ...]
    env: tuple[str, ...]
    cwd: str
    uid: int = 0
    gid: int = 0


class GuestBlock(NamedTuple):
    """A block device as the guest sees it: its id (a virtio serial, a solo5 device name) and where the
    guest mounts it ("" when it mounts nothing)."""

    id: str
    mount_point: str = ""


class GuestRequest(NamedTuple):
    config: UnikernelConfig
    process: GuestProcess
    root: RootMode
    monitor: str
    blocks: tuple[GuestBlock, ...] = ()
    network: GuestNetwork | None = None
    net_id: str = ""  # the guest's name for its network device (a Solo5 unikernel's, from its manifest)
    exec_ports: int = 0  # virtio-serial ports for exec sessions (runtime.execplan)


ROOT_TAG = "fs0"  # the 9p or virtio-fs tag of a shared rootfs, as urunc names it
FILES_TAG = "ukrun"  # a shared rootfs: the guest's files (rootfs_files) come on this read-only share


class UnikernelType(ABC):
    name: ClassVar[str]
    label: ClassVar[str]  # what a user calls it, in sentences: "a Unikraft unikernel"
    monitors: ClassVar[tuple[str, ...]]  # the monitors it runs on
    block_fs_types: ClassVar[tuple[str, ...]] = ()  # file systems it boots from as a block rootfs
    raw_block: ClassVar[bool] = False  # takes the rootfs device raw: any file system, nothing written
    shares_root: ClassVar[bool] = False  # boots from a folder rootfs over virtio-9p
    virtiofs_root: ClassVar[bool] = False  # boots from a folder rootfs over virtio-fs
    initrd_root: ClassVar[bool] = False  # boots with the image's initrd as its root filesystem
    appended_initrd: ClassVar[bool] = False  # unpacks an archive appended to its initrd (the spec's files)
    volumes: ClassVar[bool] = False  # mounts block volumes (of block_fs_types) where its command line says
    image_block_root: ClassVar[bool] = False  # boots from the image's block file when blkMntPoint is "/"
    modern_nic: ClassVar[bool] = False  # on qemu: a modern-only virtio-net device (disable-legacy=on)
    qemu_machine: ClassVar[str] = ""  # on qemu: a machine type (-M) other than the default PC; "microvm..." means
    #                                  virtio-mmio devices instead of PCI ones
    rootfs_id: ClassVar[str] = "rootfs"  # the id of the rootfs block device
    block_id: ClassVar[str] = "annot_vol"  # the id of the image's block (`com.urunc.unikernel.block`)
    net_id: ClassVar[str] = "net0"  # the guest's name for its network device (a solo5 device name)
    exit_device: ClassVar[ExitDevice | None] = None  # on qemu
    exit_decoding: ClassVar[ExitDecoding] = ExitDecoding.RAW

    @abstractmethod
    def cmdline(self, req: GuestRequest) -> str: ...

    def told_network(self, req: GuestRequest) -> bool:
        """Whether the command line tells the guest its address."""
        return req.network is not None

    def rootfs_files(self, req: GuestRequest) -> dict[str, bytes]:
        """Files (path -> content) the guest needs: written into a block rootfs before the handoff, or put
        on the FILES_TAG share beside a folder rootfs."""
        return {}

    def extra_initrd(self, req: GuestRequest) -> bytes | None:
        """An initrd the guest reads its configuration from, beside the image's (urunit's)."""
        return None

    def initrd_archive(self, req: GuestRequest) -> bytes:
        """A cpio archive appended to the image's initrd (urunit's configuration, in an initrd root)."""
        return b""

    def config_drive(self, req: GuestRequest) -> tuple[str, bytes] | None:
        """A raw block device the guest reads its configuration from, attached after the others: (id, data)."""
        return None

    def init_mounts_blocks(self, args: tuple[str, ...]) -> bool:
        """Whether the image's own init, started with these arguments, mounts the block devices wherever the
        root comes from (urunit's block section)."""
        return False
    def exec_refusal(self, req: GuestRequest) -> str:
        """Why `exec` cannot start a process in this guest; "" where ukrun's exec agent can."""
        return (f"{self.label} runs a single application and cannot start another process; to look inside it, "
                "read its output (ctr task logs, kubectl logs), probe it over the network (an httpGet or "
                "tcpSocket probe instead of an exec probe), or package the application as a Linux guest")

    def check(self, req: GuestRequest) -> None:  # noqa: B027 - most guests refuse nothing beyond the plan's rules
        """Refuses what this guest cannot boot, with one sentence naming the fix."""


REGISTRY: dict[str, type[UnikernelType]] = {}


def register(cls: type[UnikernelType]) -> type[UnikernelType]:
    REGISTRY[cls.name] = cls
    return cls


def get(name: str) -> UnikernelType:
    from ukrun.unikernels import freebsd, hermit, linux, mewz, mirage, rumprun, unikraft  # noqa: F401 - they register

    try:
        return REGISTRY[name]()
    except KeyError:
        raise UkrunError(
            f"unikernel type {name!r} is not supported by this ukrun yet; supported: {', '.join(sorted(REGISTRY))}"
        ) from None
