"""What a bind mount's source is, and what of it a guest gets copied, read through one descriptor.

Part of gathering create's facts (runtime.facts): each source is opened once (O_PATH, following its host
path as a bind mount does); its kind, its size and its content come through that descriptor, never by
its name again. A folder is listed through descriptors without entering links, and each of its files
is resolved inside it as the guest would resolve it (artifacts.paths) and read through the descriptor
that was checked.

What must stay true: another process may change a mounted folder while it is read (a pod's emptyDir
shared with an ordinary container): whatever it swaps in, nothing outside the folder is read, and no
device, FIFO or socket is opened.
"""

from __future__ import annotations

import os
import stat

from ukrun import host as hostmod
from ukrun.artifacts import paths
from ukrun.errors import ImageError, UkrunError
from ukrun.runtime import mountplan as mp
from ukrun.runtime.spec import SpecMount

TYPE_CHECKING = False  # not typing's, whose import costs a create without a helper about 2 ms
if TYPE_CHECKING:
    from typing import BinaryIO

# The kernel's views of itself: a bind mount from one of these is not delivered to a guest.
KERNEL_FILE_SYSTEMS = frozenset({"proc", "sysfs", "devtmpfs", "devpts", "cgroup", "cgroup2", "debugfs", "tracefs",
                                 "securityfs", "bpf", "configfs", "mqueue", "hugetlbfs", "pstore", "efivarfs"})


def open_source(source: str) -> int:
    """An O_PATH descriptor of a bind mount's source (-1 when there is none): nothing is opened for reading
    before it is known to be a regular file or a folder."""
    try:
        return os.open(source, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return -1


def kind(fd: int, table: list[hostmod.MountEntry]) -> tuple[mp.MountKind | None, hostmod.MountEntry | None]:
    """A regular file, a folder, or the root of a file system on a block device (None: anything else,
    such as a device node or what the kernel's own file systems show, which are the host's, not data)."""
    if fd < 0:
        return None, None
    st = os.fstat(fd)
    real = os.readlink(f"/proc/self/fd/{fd}")  # where the opened source is in this mount namespace
    holder = max((e for e in table if real == e.mount_point or real.startswith(e.mount_point.rstrip("/") + "/")),
                 key=lambda e: len(e.mount_point), default=None)
    if holder is not None and holder.fstype in KERNEL_FILE_SYSTEMS:
        return None, None
    if stat.S_ISREG(st.st_mode):
        return mp.MountKind.FILE, None
    if not stat.S_ISDIR(st.st_mode):
        return None, None
    entry = next((e for e in reversed(table) if e.mount_point == real), None)
    if entry is not None and entry.root == "/" and entry.source.startswith("/"):
        try:
            if stat.S_ISBLK(os.stat(entry.source).st_mode):
                return mp.MountKind.VOLUME, entry
        except OSError:
            pass
    return mp.MountKind.TREE, None


def file_mount(m: SpecMount, fd: int, budget: list[int]) -> mp.BoundMount:
    """A bind-mounted regular file, read through the descriptor its kind was told from."""
    try:
        with os.fdopen(paths.reopen(fd), "rb") as f:
            data = _read(f, budget)
    except OSError as exc:
        raise UkrunError(f"the spec's bind mount of {m.source} at {m.destination} cannot be read: "
                         f"{exc.strerror}") from None
    return mp.BoundMount(m.destination, m.source, mp.MountKind.FILE, (mp.MountFile("/", data, os.fstat(fd).st_size),))


def _read(f: BinaryIO, budget: list[int]) -> bytes:
    """Up to what is left of the reading budget; nothing once it is spent."""
    if budget[0] <= 0:
        return b""
    data = f.read(budget[0])
    budget[0] -= len(data)
    return data


def tree_mount(m: SpecMount, fd: int, budget: list[int]) -> mp.BoundMount:
    """A folder's regular files, by their paths inside it; a link is read only where it leads to a regular
    file inside the folder (resolved there, never on the host); folders reached by links, devices and
    sockets are left out."""
    try:
        found = paths.entries(fd, mp.TREE_ENTRIES)
    except OSError as exc:
        return mp.BoundMount(m.destination, m.source, mp.MountKind.TREE, skipped=f"cannot read it: {exc.strerror}")
    if found is None:
        return mp.BoundMount(m.destination, m.source, mp.MountKind.TREE,
                             skipped=f"it holds more than {mp.TREE_ENTRIES} entries")
    files = []
    for rel in found:
        try:
            opened = paths.open_file(fd, rel, "file")
        except (ImageError, OSError):
            continue  # a folder, a device, a link to a folder or out of the tree
        with os.fdopen(opened, "rb") as f:
            files.append(mp.MountFile(rel, _read(f, budget), os.fstat(opened).st_size))
    return mp.BoundMount(m.destination, m.source, mp.MountKind.TREE, tuple(files))
