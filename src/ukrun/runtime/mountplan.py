"""What a guest gets from the spec's mounts and beside its rootfs, decided: a pure part of `runtime.plan`.

A VM cannot see the host's bind mounts, so, as urunc does, the spec's bind mounts reach the guest as
copies or devices:
- a bind mount of a regular file is copied to its destination in a block rootfs before the handoff, or
  into an archive appended to the image's initrd for a guest that unpacks a second archive (Linux);
- a bind mount of a folder (a Kubernetes secret or configMap volume) has its regular files copied the
  same way, when the folder holds at most TREE_ENTRIES entries; a larger one is not delivered (a note);
- a bind mount of the root of a file system on a block device is a block volume: the VM gets the device
  only when the operator allowed it ([volumes] block_devices) and it provably has no other user.
Copies are one-way: what the guest writes there never reaches the host. All copies together hold at most
FILES_LIMIT bytes. Destinations are guest paths: `..` is refused, and writing resolves them inside the
rootfs (runtime.rootfs), never following a link out of it.

What must stay true: a host device reaches a VM only when both the configuration names it and the facts
show that this mount is its only user; everything refused says which device, which mount and which fix.
"""

from __future__ import annotations

import enum
import posixpath

from ukrun import cpio
from ukrun.errors import PlanError
from ukrun.hypervisors import base as hv
from ukrun.runtime.handoff import RootDecision
from ukrun.runtime.rootplan import ImageBlock
from ukrun.tuples import NamedTuple
from ukrun.unikernel import UnikernelConfig
from ukrun.unikernels import base as guests
from ukrun.unikernels.base import GuestBlock, RootMode

FILES_LIMIT = 16 << 20  # bytes copied from the spec's mounts into one guest
TREE_ENTRIES = 1000  # entries of a folder mount; a larger folder is not copied
UKRUN_DIR = "/.ukrun"  # ukrun's own files in the guest's root: no mount may land there
VOLUME_ID = "vol"  # block volumes are vol0, vol1, ... (a virtio serial, urunit's block ID)
SETTING = "[volumes] block_devices"
# What every container engine mounts: copied where the guest can take them, not worth a note where not.
RUNTIME_FILES = frozenset({"/etc/hosts", "/etc/resolv.conf", "/etc/hostname"})


class MountKind(enum.Enum):
    FILE = "file"  # a regular file
    TREE = "tree"  # a folder: its regular files
    VOLUME = "volume"  # the root of a file system on a block device


class MountFile(NamedTuple):
    path: str  # inside the mount: "/" for a FILE mount, the file's path in the folder for a TREE
    data: bytes  # empty past the facts' reading budget (size says what it holds)
    size: int


class VolumeFacts(NamedTuple):
    """A block device mounted at a bind mount's source, as the host tells it."""

    device: str  # as the mount table names it
    real_device: str  # the device node it resolves to
    fstype: str
    allowed: bool  # the configuration names it (see `allowed`)
    mounted_at: tuple[str, ...]  # every mount point of its file system
    host_root: bool  # it holds the host's root file system
    snapshot: str = ""  # a container snapshot or ukrun view it backs ("" when none)
    autoclear: bool = False  # a loop device that goes away at unmount


class BoundMount(NamedTuple):
    destination: str
    source: str
    kind: MountKind
    files: tuple[MountFile, ...] = ()
    skipped: str = ""  # TREE: why its files were not read
    volume: VolumeFacts | None = None


class Volume(NamedTuple):
    id: str
    device: str  # what the monitor opens
    source: str  # the host mount point create unmounts
    destination: str  # where the guest mounts it


class MountsPlan(NamedTuple):
    files: tuple[tuple[str, bytes], ...] = ()  # into a block rootfs
    archive: bytes = b""  # an initrd root: appended to the image's initrd
    volumes: tuple[Volume, ...] = ()
    notes: tuple[str, ...] = ()


def allowed(device: str, real_device: str, patterns: tuple[str, ...], named: tuple[str, ...]) -> bool:
    """Whether the configuration's patterns name the device: by its name, its node, or (`named`) the nodes
    that the patterns' own paths resolve to (a /dev/disk/by-id link)."""
    import fnmatch  # only for a container with a block volume

    return (any(fnmatch.fnmatchcase(device, p) or fnmatch.fnmatchcase(real_device, p) for p in patterns)
            or real_device in named)


def resolv_conf(mounts: tuple[BoundMount, ...]) -> tuple[tuple[str, bytes], ...]:
    """The bind-mounted /etc/resolv.conf, for the network plan's name server."""
    return tuple(("/etc/resolv.conf", f.data) for m in mounts if m.kind is MountKind.FILE
                 and guest_path(m.destination) == "/etc/resolv.conf" for f in m.files)


def mounts_plan(mounts: tuple[BoundMount, ...], guest: guests.UnikernelType, root: RootMode,
                has_initrd: bool, own_init: bool = False) -> MountsPlan:
    """`own_init`: the image's init mounts the block devices itself, wherever its root is (urunit)."""
    volumes = _volumes([m for m in mounts if m.kind is MountKind.VOLUME], guest)
    told: tuple[str, ...] = ()
    if volumes and not own_init and root not in (RootMode.BLOCK, RootMode.SHARED, RootMode.VIRTIOFS):
        told = (f"block volumes {', '.join(v.id for v in volumes)} are attached, but only the image's own init "
                "can mount them: ukrun's init contract (ukrun.blocks=) comes with a block or folder rootfs",)
    copies = [m for m in mounts if m.kind is not MountKind.VOLUME]
    if not any(m.files or m.skipped for m in copies):
        return MountsPlan(volumes=volumes, notes=told)
    into_rootfs = root is RootMode.BLOCK and not guest.raw_block
    into_initrd = root is RootMode.INITRD and has_initrd and guest.appended_initrd
    if not (into_rootfs or into_initrd):
        asked = [m.destination for m in copies if guest_path(m.destination) not in RUNTIME_FILES]
        if not asked:
            return MountsPlan(volumes=volumes, notes=told)
        note = f"the spec's bind mounts {', '.join(asked)} are not copied into the guest: {_why_not(guest, root)}"
        return MountsPlan(volumes=volumes, notes=(*told, note))
    files, notes = _copies(copies)
    notes += told
    if into_rootfs:
        return MountsPlan(files=tuple(files.items()), volumes=volumes, notes=notes)
    return MountsPlan(archive=cpio.archive(files) if files else b"", volumes=volumes, notes=notes)


def _why_not(guest: guests.UnikernelType, root: RootMode) -> str:
    if root is RootMode.INITRD:
        return (f"a {guest.name} guest is not known to unpack a second archive in its initrd (Unikraft ignores "
                "one, urunc #985); boot a Linux guest, or one from a block rootfs (mountRootfs), to get them")
    if root in (RootMode.SHARED, RootMode.VIRTIOFS):
        return "ukrun writes nothing into a folder rootfs; use a block snapshotter (devmapper, blockfile)"
    if root is RootMode.BLOCK:
        return f"a {guest.name} guest takes its rootfs device raw, and ukrun writes nothing into it"
    if root is RootMode.IMAGE_BLOCK:
        return "the guest's root is the image's own block file, and ukrun writes nothing into it (nor does urunc)"
    return "the guest has no root file system to hold them"


def guest_path(path: str) -> str:
    """An absolute guest path as the guest's kernel reads it: repeated slashes (a leading `//` too) and `.`
    components dropped. `..` is kept, for the caller to refuse."""
    return "/" + "/".join(c for c in path.split("/") if c not in ("", "."))


def _destination(path: str, what: str) -> str:
    if not path.startswith("/") or ".." in path.split("/"):
        raise PlanError(f"the spec's mount destination {path!r} is not an absolute path inside the guest "
                        f"(no '..'): fix {what}")
    clean = guest_path(path)
    if clean == UKRUN_DIR or clean.startswith(UKRUN_DIR + "/"):
        raise PlanError(f"the spec's mount destination {path!r} lies in {UKRUN_DIR}, which holds ukrun's own "
                        f"files for the guest: move {what} elsewhere")
    return clean


def _copies(mounts: list[BoundMount]) -> tuple[dict[str, bytes], tuple[str, ...]]:
    """The files to copy (later mounts over earlier ones, as mounts stack), within FILES_LIMIT: single
    files must all fit (a missing configuration file is worse than a refused container); folders that
    do not fit, or that facts did not read, are not delivered, with a note."""
    singles = [m for m in mounts if m.kind is MountKind.FILE]
    size = sum(f.size for m in singles for f in m.files)
    if size > FILES_LIMIT:
        raise PlanError(f"the spec's bind-mounted files hold {size} bytes, over the {FILES_LIMIT} that ukrun "
                        "copies into a guest: mount fewer or smaller files, or put large data on a block volume")
    notes: list[str] = []
    out: dict[str, bytes] = {}
    for m in mounts:
        base = _destination(m.destination, f"the mount of {m.source}")
        if m.kind is MountKind.FILE:
            if base == "/":
                raise PlanError(f"the spec mounts the file {m.source} over the guest's root: give it a file's path")
            out.update((base, f.data) for f in m.files)
            continue
        tree = sum(f.size for f in m.files)
        if m.skipped or size + tree > FILES_LIMIT:
            why = m.skipped or f"its {tree} bytes would pass the {FILES_LIMIT}-byte limit of copies"
            notes.append(f"the folder mounted at {m.destination} is not copied into the guest: {why}")
            continue
        size += tree
        out.update((posixpath.join(base, f.path.lstrip("/")), f.data) for f in m.files)
    return out, tuple(notes)


def _volumes(mounts: list[BoundMount], guest: guests.UnikernelType) -> tuple[Volume, ...]:
    out: list[Volume] = []
    for m in mounts:
        v = m.volume
        assert v is not None
        what = f"block volume {v.device} (mounted at {m.source}, the spec's mount at {m.destination})"
        if not v.allowed:
            raise PlanError(f"{what} is not allowed: a VM gets a host device only when {SETTING} in ukrun's "
                            "configuration names it; add it there, or mount a folder that is not a device's root")
        if not guest.volumes or v.fstype not in guest.block_fs_types:
            kinds = ", ".join(guest.block_fs_types) if guest.volumes else "none"
            raise PlanError(f"{what} holds {v.fstype}, and a {guest.name} guest mounts block volumes of "
                            f"{kinds}: use a linux guest and an ext2/3/4 volume, or mount a folder instead")
        if v.host_root:
            raise PlanError(f"{what} holds the host's root file system: never hand it to a VM; remove it from "
                            f"{SETTING}")
        others = [p for p in v.mounted_at if p != m.source]
        if others:
            raise PlanError(f"{what} is also mounted at {', '.join(others)}: unmount it there first, a VM must "
                            "be the device's only user")
        if v.snapshot:
            raise PlanError(f"{what} backs {v.snapshot}: it is not a volume; remove it from {SETTING}")
        if v.autoclear:
            raise PlanError(f"{what} is a loop device that goes away at its unmount (autoclear): attach its file "
                            "with `losetup` (no autoclear) and mount that device instead")
        dest = _destination(m.destination, f"the mount of {m.source}")
        if dest == "/":
            raise PlanError(f"{what}: a volume cannot be the guest's root; boot from the container's rootfs and "
                            "mount the volume in a folder")
        if not all(c.isprintable() and not c.isspace() and c not in ",:" for c in dest):
            raise PlanError(f"{what}: its destination holds a space, comma or colon, which the guest's "
                            "command line cannot carry: mount it elsewhere")
        if any(o.device == v.device or o.source == m.source for o in out):
            raise PlanError(f"{what} is named by two mounts: mount it once")
        out.append(Volume(f"{VOLUME_ID}{len(out)}", v.device, m.source, dest))
    return tuple(out)


def devices(guest: guests.UnikernelType, rootfs_id: str, block_id: str, root: RootMode,
            decision: RootDecision | None, config: UnikernelConfig, image: ImageBlock | None,
            volumes: tuple[Volume, ...]) -> tuple[tuple[hv.BlockDevice, ...], tuple[GuestBlock, ...]]:
    """The VM's block devices, as the monitor opens them and as the guest names them (`rootfs_id`,
    `block_id`: the guest type's names, or a Solo5 manifest's): the container's rootfs (when handed
    over) or the image's own block as the root (urunc names both `rootfs`), else the image's block
    (`com.urunc.unikernel.block`) where blkMntPoint says, then the volumes."""
    blocks: list[hv.BlockDevice] = []
    seen: list[GuestBlock] = []
    if root is RootMode.BLOCK and decision is not None:
        blocks.append(hv.BlockDevice(rootfs_id, decision.device))
        seen.append(GuestBlock(rootfs_id, "/"))
    if root is RootMode.IMAGE_BLOCK and image is not None:
        blocks.append(hv.BlockDevice(rootfs_id, image.path, image.read_only))
        seen.append(GuestBlock(rootfs_id, "/"))
    elif image is not None:
        if not (guest.raw_block or guest.block_fs_types):
            raise PlanError(f"a {guest.name} guest reads no block device: drop com.urunc.unikernel.block "
                            "from the image")
        if root is RootMode.BLOCK and block_id == rootfs_id:
            raise PlanError(f"a {guest.name} guest takes one block device: the image's block "
                            f"({config.block}) and the container's rootfs (mountRootfs) cannot both be it")
        blocks.append(hv.BlockDevice(block_id, image.path, image.read_only))
        seen.append(GuestBlock(block_id, config.block_mount_point))
    for v in volumes:
        blocks.append(hv.BlockDevice(v.id, v.device))
        seen.append(GuestBlock(v.id, v.destination))
    return tuple(blocks), tuple(seen)
