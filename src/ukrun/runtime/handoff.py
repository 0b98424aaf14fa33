"""Which rootfs a VM may be given as a block device: the pure rule, decided from facts gathered before.

A VM that gets a block device gets everything on it. So the container's rootfs is handed over as a
device only when it provably is the container's own snapshot:
  * the rootfs mount covers the whole filesystem (its root in mountinfo is `/`): a bind of a subfolder
    would hand over the rest of the device;
  * containerd names exactly one mount for the container's snapshot, and the mounted device is that
    mount: for blockfile, the loop device's backing file is the snapshot's file (same device and inode);
    for devmapper and other block snapshotters, the mounted device is the snapshot's device node.
Anything else (a bind of a host folder or of a foreign disk, `ctr run --rootfs`, a loop device over
some other file, overlayfs and native snapshots, a containerd that cannot be asked) is a folder: it is
shared with the guest, never its device, and ukrun writes nothing into it. `rule` says which rule
decided, for `ukrun plan` and for errors.
"""

from __future__ import annotations

import enum

from ukrun.tuples import NamedTuple

FileId = tuple[int, int]  # (st_dev, st_ino)


class RootfsKind(enum.Enum):
    DEVMAPPER = "devmapper"  # a device-mapper device
    BLOCKFILE = "blockfile"  # a loop device over a file
    BLOCK = "block"  # another block device
    DIR = "dir"  # not a mounted block device


class RootfsInfo(NamedTuple):
    """What is mounted at the bundle's rootfs, from mountinfo and sysfs."""

    mount_point: str
    kind: RootfsKind
    fstype: str
    source: str  # what is mounted: /dev/loopN, /dev/mapper/..., or a folder
    device: str  # major:minor of the mounted filesystem
    root: str = "/"  # the mount's root inside its filesystem ("/" unless a bind of a subfolder)
    backing_file: str = ""  # blockfile: the loop device's backing file
    backing_id: FileId | None = None


class SnapshotMount(NamedTuple):
    """One mount containerd names for the container's snapshot, with what its source is on the host."""

    type: str
    source: str
    options: tuple[str, ...]
    source_rdev: str = ""  # major:minor when the source is a block device
    source_id: FileId | None = None  # when the source is a regular file


class Handoff(enum.Enum):
    BLOCK = "block"
    FOLDER = "folder"


class RootDecision(NamedTuple):
    handoff: Handoff
    rule: str
    device: str = ""  # BLOCK: what the monitor opens after the unmount


def decide(info: RootfsInfo, snapshot: tuple[SnapshotMount, ...] | None) -> RootDecision:
    """`snapshot`: containerd's mounts for the container's snapshot, None when it names none."""
    if info.kind is RootfsKind.DIR:
        what = f"a {info.fstype} mount" if info.fstype else "not a mount"
        return RootDecision(Handoff.FOLDER, f"the rootfs is a folder ({what}), not a block device")
    if info.root != "/":
        return RootDecision(Handoff.FOLDER, f"the rootfs is a bind of the subfolder {info.root} of {info.source}: "
                                            "a VM given the device would see the rest of it")
    if snapshot is None:
        return RootDecision(Handoff.FOLDER, "containerd names no snapshot for this container (a --rootfs folder, "
                                            f"or containerd unreachable): {info.source} cannot be proven its own")
    if len(snapshot) != 1:
        return RootDecision(Handoff.FOLDER, f"the container's snapshot is {len(snapshot)} mounts, not one device")
    (mount,) = snapshot
    if info.kind is RootfsKind.BLOCKFILE:
        if "loop" in mount.options and mount.source_id is not None and mount.source_id == info.backing_id:
            return RootDecision(Handoff.BLOCK, f"blockfile: {info.source} is backed by the container's snapshot "
                                               f"file {mount.source}", info.backing_file)
        return RootDecision(Handoff.FOLDER, f"{info.source} is backed by {info.backing_file}, which is not the "
                                            f"container's snapshot ({mount.source})")
    if mount.source_rdev and mount.source_rdev == info.device:
        return RootDecision(Handoff.BLOCK, f"{info.kind.value}: {info.source} is the container's snapshot device "
                                           f"{mount.source}", info.source)
    return RootDecision(Handoff.FOLDER, f"{info.source} is not the container's snapshot device ({mount.source})")
