"""Whether ukrun's code on disk is still the code a resident helper loaded (ukrun.helper), for one read per
call: the kernel's inotify watches every folder of ukrun's package, set before the helper imports its
modules. Comparing every module's modification time instead took half a millisecond of each relayed call.

What must stay true:
  * the watches are set before the modules are loaded: a change at any later time is seen;
  * any event that may change a module, add one or take one away counts: a name ending in `.py`, a folder
    other than `__pycache__` made, removed or renamed, a watched folder itself removed or moved, or the
    kernel's queue overflowing (events were lost);
  * events that change no code (bytecode caches, an editor's swap file) are read and dropped: reading
    consumes them for the helper and all its workers, which share the descriptor.
"""

import ctypes
import os
import struct

IN_MODIFY, IN_ATTRIB, IN_CLOSE_WRITE = 0x2, 0x4, 0x8
IN_MOVED_FROM, IN_MOVED_TO, IN_CREATE, IN_DELETE = 0x40, 0x80, 0x100, 0x200
IN_DELETE_SELF, IN_MOVE_SELF, IN_Q_OVERFLOW, IN_ISDIR = 0x400, 0x800, 0x4000, 0x40000000
WATCHED = (IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
           | IN_DELETE_SELF | IN_MOVE_SELF)
SELF = IN_DELETE_SELF | IN_MOVE_SELF | IN_Q_OVERFLOW
EVENT = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len; then len bytes of name
CACHE = b"__pycache__"


class SourceWatch:
    """inotify's watches on a package's folders; `changed` tells whether its code may have changed since."""

    __slots__ = ("fd",)

    def __init__(self, package_dir: str) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self.fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise _refused(ctypes.get_errno(), "inotify_init1")
        for folder, subfolders, _ in os.walk(package_dir):
            subfolders[:] = [s for s in subfolders if s != CACHE.decode()]
            if libc.inotify_add_watch(self.fd, os.fsencode(folder), WATCHED) < 0:
                err = ctypes.get_errno()
                os.close(self.fd)
                raise _refused(err, f"inotify_add_watch {folder}")

    def changed(self) -> bool:
        """Reads every pending event: True when one of them may have changed the code."""
        found = False
        while True:
            try:
                data = os.read(self.fd, 64 * 1024)
            except BlockingIOError:
                return found
            found = found or any(_counts(mask, name) for mask, name in _events(data))

    def close(self) -> None:
        os.close(self.fd)


def _events(data: bytes) -> list[tuple[int, bytes]]:
    out, at = [], 0
    while at + EVENT.size <= len(data):
        _wd, mask, _cookie, size = EVENT.unpack_from(data, at)
        at += EVENT.size
        out.append((mask, data[at:at + size].rstrip(b"\0")))
        at += size
    return out


def _counts(mask: int, name: bytes) -> bool:
    if mask & SELF:
        return True
    if mask & IN_ISDIR:
        return name != CACHE
    return name.endswith(b".py")


def _refused(err: int, what: str) -> OSError:
    return OSError(err, f"cannot watch ukrun's code for changes ({what}: {os.strerror(err)}); raise "
                        "fs.inotify.max_user_instances or max_user_watches, or run without a helper")
