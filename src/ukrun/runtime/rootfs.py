"""The container's rootfs as the shim mounted it, and its handoff to the VM.

Kinds: `devmapper` (a dm device), `blockfile` (a loop device over a file; the loop device vanishes at
unmount, so the monitor gets the backing file), `block` (another block device) and `dir` (not a
block device). Before the handoff, files the guest needs are written into the block filesystem; then
the rootfs is unmounted in the mount namespace of the process that mounted it (the shim) and the
device is checked to be mounted nowhere: a VM writing to a device the host still mounts corrupts it.
"""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from ukrun import host
from ukrun.artifacts import paths
from ukrun.errors import HostError, UkrunError

GUEST_FILES = ("/etc/hosts", "/etc/resolv.conf", "/etc/hostname")


@dataclass(frozen=True)
class RootfsInfo:
    mount_point: str
    kind: str  # devmapper, blockfile, block, dir
    fstype: str
    source: str  # what is mounted: /dev/loopN, /dev/mapper/..., or a folder
    device: str  # major:minor of the mounted filesystem
    handoff_path: str = ""  # what the monitor opens after the unmount


def inspect(rootfs: Path) -> RootfsInfo:
    """What the shim mounted at `rootfs`, told by the kernel (sysfs), not by device names: a device-mapper
    node may be /dev/dm-N, a /dev/mapper symlink, or a plain node made without udev."""
    target = os.path.realpath(rootfs)
    entries = host.mounts_at(target)
    if not entries:
        return RootfsInfo(target, "dir", "", target, "")
    m = entries[-1]
    rdev = _block_rdev(m.source)
    if rdev is None:
        return RootfsInfo(target, "dir", m.fstype, m.source, m.device)
    sysfs = Path(f"/sys/dev/block/{os.major(rdev)}:{os.minor(rdev)}")
    if (sysfs / "loop" / "backing_file").exists():
        backing = (sysfs / "loop" / "backing_file").read_text().strip()
        return RootfsInfo(target, "blockfile", m.fstype, m.source, m.device, backing)
    if (sysfs / "dm").is_dir():
        return RootfsInfo(target, "devmapper", m.fstype, m.source, m.device, m.source)
    return RootfsInfo(target, "block", m.fstype, m.source, m.device, m.source)


def _block_rdev(path: str) -> int | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_rdev if stat.S_ISBLK(st.st_mode) else None


def other_mounts(info: RootfsInfo) -> list[str]:
    """Other users of the rootfs's storage: mount points of the same filesystem in this mount namespace,
    and (blockfile) other loop devices over the same file, which may be mounted in any namespace."""
    found = [m.mount_point for m in host.mountinfo() if m.device == info.device and m.mount_point != info.mount_point]
    if info.kind == "blockfile":
        own = os.path.realpath(info.source)
        found += [f"{dev} (a loop device over {info.handoff_path})" for dev, backing in host.loop_devices().items()
                  if backing == info.handoff_path and os.path.realpath(dev) != own]
    return found


def write_guest_files(info: RootfsInfo, spec_mounts: list[tuple[str, str]], extra: dict[str, bytes]) -> None:
    """Copies the spec's bind-mounted /etc files and writes `extra` into the mounted block filesystem."""
    root = Path(info.mount_point)
    for destination, source in spec_mounts:
        if destination in GUEST_FILES and os.path.isfile(source):
            extra = {destination: Path(source).read_bytes(), **extra}
    for image_path, data in extra.items():
        parent = _inside(root, os.path.dirname(image_path))
        parent.mkdir(parents=True, exist_ok=True)
        target = parent / os.path.basename(image_path)
        if target.is_symlink():
            target.unlink()  # never write through a link the image put there
        tmp = parent / f".{target.name}.ukrun"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, target)


def _inside(root: Path, folder: str) -> Path:
    """A folder of the image, resolved without leaving the root; created if missing."""
    try:
        return paths.resolve(root, folder or "/", "folder").path
    except UkrunError as exc:
        if "does not exist" not in str(exc):
            raise
    parent = _inside(root, os.path.dirname(folder.rstrip("/")))
    made = parent / os.path.basename(folder.rstrip("/"))
    made.mkdir(exist_ok=True)
    return made


def _mount_ns(pid: int | str) -> str:
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return ""


def unmount(info: RootfsInfo, owner_pid: int) -> None:
    """Unmounts the rootfs in the owner's mount namespace (the shim's), entering it when it differs."""
    own, theirs = _mount_ns("self"), _mount_ns(owner_pid)
    if theirs and own != theirs:
        proc = subprocess.run(["nsenter", f"--mount=/proc/{owner_pid}/ns/mnt", "umount", info.mount_point],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise HostError(f"cannot unmount {info.mount_point} in the shim's mount namespace: {proc.stderr.strip()}")
    host.unmount_all(info.mount_point)


def verify_unmounted(info: RootfsInfo, timeout: float = 2.0) -> None:
    """Raises unless nothing mounts the rootfs's device or file anymore, in any mount namespace."""
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
    if info.kind == "blockfile":
        loops = [d for d, b in host.loop_devices().items() if b == info.handoff_path]
        return f"loop device {', '.join(loops)} still backed by {info.handoff_path}" if loops else ""
    if info.kind in ("devmapper", "block"):
        try:
            fd = os.open(info.handoff_path, os.O_RDONLY | os.O_EXCL)
        except OSError as exc:
            if exc.errno == errno.EBUSY:
                return f"{info.handoff_path} is busy (mounted or held open)"
            raise HostError(f"cannot open {info.handoff_path}: {exc}") from None
        os.close(fd)
    return ""
