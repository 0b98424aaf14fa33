"""Resolving image paths inside a mounted rootfs without ever leaving it.

Paths are resolved as the guest would see them: an absolute symlink target starts again at the
rootfs, a relative one from the link's folder. A `..` that would climb above the rootfs is an error
(never clamped), and so is a loop of links. The result is a real path inside the root whose every
component was checked with lstat, so no host file outside the mount can be named.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from ukrun.errors import ImageError, UnsafePath

MAX_LINKS = 40


@dataclass(frozen=True)
class Resolved:
    path: Path  # host path inside the root
    followed_links: int


def resolve(root: Path, image_path: str, what: str = "path") -> Resolved:
    if not image_path.startswith("/"):
        raise ImageError(f"{what} {image_path!r} must be an absolute path inside the image")
    pending = [c for c in image_path.split("/") if c not in ("", ".")]
    pending.reverse()
    parts: list[str] = []
    links = 0
    while pending:
        comp = pending.pop()
        if comp == "..":
            if not parts:
                raise UnsafePath(f"{what} {image_path!r} climbs above the image's root with '..'; refused")
            parts.pop()
            continue
        current = root.joinpath(*parts, comp)
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            raise ImageError(f"{what} {image_path!r} does not exist in the image ('{comp}' is missing)") from None
        except NotADirectoryError:
            raise ImageError(f"{what} {image_path!r}: '{parts[-1] if parts else '/'}' is not a folder") from None
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > MAX_LINKS:
                raise UnsafePath(f"{what} {image_path!r} goes through more than {MAX_LINKS} symlinks; refused")
            target = os.readlink(current)
            if target.startswith("/"):
                parts = []
            follow = [c for c in target.split("/") if c not in ("", ".")]
            follow.reverse()
            pending.extend(follow)
            continue
        if pending and not stat.S_ISDIR(st.st_mode):
            raise ImageError(f"{what} {image_path!r}: '{comp}' is not a folder")
        parts.append(comp)
    return Resolved(root.joinpath(*parts), links)


def resolve_file(root: Path, image_path: str, what: str) -> Resolved:
    """Like resolve, and the result must be a regular file."""
    res = resolve(root, image_path, what)
    st = os.lstat(res.path)
    if not stat.S_ISREG(st.st_mode):
        raise ImageError(f"{what} {image_path!r} is not a regular file in the image")
    return res


def read_limited(path: Path, limit: int, what: str) -> bytes:
    """Reads a file that resolve_file returned, refusing one over `limit` bytes."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        if size > limit:
            raise ImageError(f"{what} is {size} bytes, over the {limit}-byte limit")
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read(limit + 1)[:limit]
    finally:
        os.close(fd)
