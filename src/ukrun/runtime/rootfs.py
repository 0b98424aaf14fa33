"""The container's rootfs as the shim mounted it, and its handoff to the VM.

Kinds: `devmapper` (a dm device), `blockfile` (a loop device over a file; the loop device vanishes at
unmount, so the monitor gets the backing file), `block` (another block device) and `dir` (not a
block device). Whether the device may go to the VM at all is `runtime.handoff`'s rule, from the facts
gathered here. Before the handoff, files the guest needs are written into the block filesystem; then
the rootfs is unmounted in the mount namespace of the process that mounted it (the shim) and the
device is checked to be mounted nowhere: a VM writing to a device the host still mounts corrupts it.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Sequence
from pathlib import Path

from ukrun import host
from ukrun.artifacts import paths
from ukrun.containerd.records import Mount
from ukrun.errors import HostError, ImageError
from ukrun.runtime.handoff import FileId, RootfsInfo, RootfsKind, SnapshotMount
from ukrun.runtime.mountplan import UKRUN_DIR

KERNEL_FOLDERS = ("/proc", "/sys")  # the guest's kernel mounts its own file systems there


def inspect(rootfs: Path, table: list[host.MountEntry]) -> RootfsInfo:
    """What the shim mounted at `rootfs`, told by the kernel (sysfs), not by device names: a device-mapper
    node may be /dev/dm-N, a /dev/mapper symlink, or a plain node made without udev. `table`: this mount
    namespace's mountinfo, read once by the caller for every fact that needs it."""
    target = os.path.realpath(rootfs)
    entries = [m for m in table if m.mount_point == target]
    if not entries:
        return RootfsInfo(target, RootfsKind.DIR, "", target, "")
    m = entries[-1]
    rdev = _block_rdev(m.source)
    if rdev is None:
        return RootfsInfo(target, RootfsKind.DIR, m.fstype, m.source, m.device, m.root)
    sysfs = Path(f"/sys/dev/block/{os.major(rdev)}:{os.minor(rdev)}")
    if (sysfs / "loop" / "backing_file").exists():
        backing = (sysfs / "loop" / "backing_file").read_text().strip()
        return RootfsInfo(target, RootfsKind.BLOCKFILE, m.fstype, m.source, m.device, m.root, backing,
                          _file_id(backing))
    kind = RootfsKind.DEVMAPPER if (sysfs / "dm").is_dir() else RootfsKind.BLOCK
    return RootfsInfo(target, kind, m.fstype, m.source, m.device, m.root)


def snapshot_facts(mounts: Sequence[Mount]) -> tuple[SnapshotMount, ...]:
    """containerd's mounts for a snapshot, with what each source is on this host."""
    out = []
    for m in mounts:
        rdev = _block_rdev(m.source)
        out.append(SnapshotMount(m.type, m.source, tuple(m.options),
                                 f"{os.major(rdev)}:{os.minor(rdev)}" if rdev is not None else "",
                                 _file_id(m.source)))
    return tuple(out)


def _file_id(path: str) -> FileId | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISREG(st.st_mode) else None


def _block_rdev(path: str) -> int | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_rdev if stat.S_ISBLK(st.st_mode) else None


def other_mounts(info: RootfsInfo, table: list[host.MountEntry]) -> list[str]:
    """Other users of the rootfs's storage: mount points of the same filesystem in this mount namespace,
    and (blockfile) other loop devices over the same file, which may be mounted in any namespace."""
    found = [m.mount_point for m in table if m.device == info.device and m.mount_point != info.mount_point]
    if info.kind is RootfsKind.BLOCKFILE:
        own = os.path.realpath(info.source)
        found += [f"{dev} (a loop device over {info.backing_file})" for dev, backing in host.loop_devices().items()
                  if backing == info.backing_file and os.path.realpath(dev) != own]
    return found


def write_guest_files(root: Path, files: dict[str, bytes]) -> None:
    """Writes `files` into the folder `root` (the mounted block filesystem, or the guest's own files share)
    through directory descriptors (artifacts.paths): each file's folder is resolved inside the root as
    the guest sees it, made where missing, and the file replaces whatever held its name there (a link
    too, never followed). A file lands in /.ukrun only when named there (ukrun's own), and never in /proc
    or /sys, where the guest's kernel mounts its own file systems over it."""
    root.mkdir(exist_ok=True)
    root_fd = paths.open_root(root)
    try:
        for image_path, data in files.items():
            folder = paths.walk(root_fd, os.path.dirname(image_path), f"guest path {image_path!r}: folder",
                                make=True)
            try:
                _check_lands(image_path, folder)
                paths.replace(folder.fd, os.path.basename(image_path), data, image_path)
            finally:
                os.close(folder.fd)
    finally:
        os.close(root_fd)


def _check_lands(image_path: str, folder: paths.Walked) -> None:
    landed = "/" + "/".join((*folder.parts, os.path.basename(image_path)))
    resolves = f"resolves, through the image's links, to {landed!r}" if folder.links else "lies"
    top = f"/{folder.parts[0]}" if folder.parts else ""
    if top == UKRUN_DIR and not image_path.startswith(UKRUN_DIR + "/"):
        raise ImageError(f"the guest path {image_path!r} {resolves} in {UKRUN_DIR}, which holds ukrun's own files "
                         "for the guest: mount it elsewhere")
    if top in KERNEL_FOLDERS:
        raise ImageError(f"the guest path {image_path!r} {resolves} in {top}, where the guest's kernel mounts its "
                         "own file system over it: mount it elsewhere")


def mount_namespace(pid: int | str) -> str:
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return ""


def unmount(info: RootfsInfo, owner_pid: int) -> None:
    """Unmounts the rootfs in the owner's mount namespace (the shim's), entering it when it differs."""
    unmount_in(info.mount_point, owner_pid)


def unmount_in(mount_point: str, owner_pid: int) -> None:
    own, theirs = mount_namespace("self"), mount_namespace(owner_pid)
    if theirs and own != theirs:
        import subprocess

        proc = subprocess.run(["nsenter", f"--mount=/proc/{owner_pid}/ns/mnt", "umount", mount_point],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise HostError(f"cannot unmount {mount_point} in the shim's mount namespace: {proc.stderr.strip()}")
    host.unmount_all(mount_point)


def verify_unmounted(info: RootfsInfo, timeout: float = 20.0) -> None:
    """Raises unless nothing mounts the rootfs's device or file anymore, in any mount namespace.

    A loop device whose autoclear is still pending does not count (see _still_in_use). The wait is long
    for the rest: on a loaded node a concurrent create's new mount namespace may hold a copy of this
    mount until its init detaches other containers' rootfs; with 50 creates at once, 2 s was too short
    for some and 20 s was enough for all. A failure here only costs a late error, never safety."""
    deadline = time.monotonic() + timeout
    while True:
        busy = _still_in_use(info)
        if not busy:
            return
        if time.monotonic() > deadline:
            raise HostError(
                f"the rootfs device of {info.mount_point} is still in use after its unmount ({busy}); "
                "a VM must not write to a mounted device: unmount it everywhere (see `findmnt`, `losetup -a`)"
            )
        time.sleep(0.02)


def _still_in_use(info: RootfsInfo) -> str:
    """What still mounts the rootfs's device. A mounted filesystem claims its block device exclusively, so
    an exclusive open fails (EBUSY) while any mount namespace still mounts it. A loop device that is only
    still bound (its autoclear runs in a kernel worker, which can lag seconds on a loaded node) does not
    count: nothing can write through it once nothing mounts it."""
    if info.kind is RootfsKind.BLOCKFILE:
        loops = [d for d, b in host.loop_devices().items() if b == info.backing_file]
        busy = [d for d in loops if claimed(d, gone_ok=True)]
        return f"loop device {', '.join(busy)} of {info.backing_file} is still mounted" if busy else ""
    if info.kind in (RootfsKind.DEVMAPPER, RootfsKind.BLOCK) and claimed(info.source, gone_ok=False):
        return f"{info.source} is busy (mounted or held open)"
    return ""


def claimed(device: str, *, gone_ok: bool) -> bool:
    try:
        fd = os.open(device, os.O_RDONLY | os.O_EXCL | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            return True
        if gone_ok and exc.errno in (errno.ENOENT, errno.ENXIO):
            return False
        raise HostError(f"cannot open {device}: {exc}") from None
    os.close(fd)
    return False
