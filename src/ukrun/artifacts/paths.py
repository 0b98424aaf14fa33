"""Resolving image paths inside a mounted rootfs without ever leaving it.

Paths are resolved as the guest would see them: an absolute symlink target starts again at the
rootfs, a relative one from the link's folder. A `..` that would climb above the rootfs is an error
(never clamped), and so is a loop of links. The result is a real path inside the root whose every
component was checked with lstat, so no host file outside the mount can be named.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import NamedTuple

from ukrun.errors import ImageError, MissingInImage, UnsafePath

MAX_LINKS = 40
NAME_MAX = 255  # bytes in one path component, as Linux file systems allow
PATH_MAX = 4096


class Resolved(NamedTuple):
    path: Path  # host path inside the root
    followed_links: int


def resolve(root: Path, image_path: str, what: str = "path") -> Resolved:
    if not image_path.startswith("/"):
        raise ImageError(f"{what} {image_path!r} must be an absolute path inside the image")
    _check_length(image_path, f"{what} {_short(image_path)!r}")
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
            via = f", following {links} symlink(s) inside the image" if links else ""
            raise MissingInImage(f"{what} {image_path!r} does not exist in the image ('{comp}' is missing{via}; "
                                 "links are followed inside the image, never on the host)") from None
        except NotADirectoryError:
            raise ImageError(f"{what} {image_path!r}: '{parts[-1] if parts else '/'}' is not a folder") from None
        except OSError as exc:  # the message names the image's path only, never the host's
            raise ImageError(f"{what} {image_path!r} cannot be read in the image: {exc.strerror}") from None
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > MAX_LINKS:
                raise UnsafePath(f"{what} {image_path!r} goes through more than {MAX_LINKS} symlinks; refused")
            target = os.readlink(current)
            _check_length(target, f"{what} {_short(image_path)!r}: the target of symlink {_short(comp)!r}")
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


def _short(text: str, keep: int = 40) -> str:
    return text if len(text) <= keep else text[:keep] + "..."


def _check_length(path: str, what: str) -> None:
    """Names longer than a file system allows are the image's error, told before the host is asked."""
    size = len(path.encode(errors="surrogateescape"))
    if size > PATH_MAX:
        raise ImageError(f"{what} is {size} bytes long, over the {PATH_MAX} a path may have: shorten it")
    for comp in path.split("/"):
        size = len(comp.encode(errors="surrogateescape"))
        if size > NAME_MAX:
            raise ImageError(f"{what} has a component of {size} bytes ({_short(comp, 24)!r}); "
                             f"a file name holds at most {NAME_MAX}: shorten it")


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
