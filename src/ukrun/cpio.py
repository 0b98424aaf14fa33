"""A newc cpio archive, the format the Linux kernel unpacks as an initramfs.

The kernel unpacks every archive it finds in its initrd one after the other, so an archive appended to
an image's initrd adds files to the guest's root (later entries replace earlier files). Parent folders
are listed before their files; every member is owned by root.
"""

from __future__ import annotations

import posixpath
import stat

MAGIC = b"070701"
TRAILER = "TRAILER!!!"


def _member(name: str, mode: int, data: bytes, ino: int) -> bytes:
    fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name.encode()) + 1, 0)
    out = MAGIC + b"".join(b"%08x" % f for f in fields) + name.encode() + b"\0"
    out += b"\0" * (-len(out) % 4) + data
    return out + b"\0" * (-len(out) % 4)


def archive(files: dict[str, bytes], file_mode: int = 0o644) -> bytes:
    """An archive of `files` (absolute guest path -> content), with the folders that hold them."""
    folders: set[str] = set()
    for path in files:
        parent = posixpath.dirname(path)
        while parent not in ("/", ""):
            folders.add(parent)
            parent = posixpath.dirname(parent)
    members = [(d, stat.S_IFDIR | 0o755, b"") for d in sorted(folders)]
    members += [(p, stat.S_IFREG | file_mode, files[p]) for p in sorted(files)]
    out = b"".join(_member(name.lstrip("/"), mode, data, i) for i, (name, mode, data) in enumerate(members, 1))
    return out + _member(TRAILER, 0, b"", 0)
