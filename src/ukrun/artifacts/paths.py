"""Resolving paths inside a root without ever leaving it, through directory file descriptors.

Everything ukrun reads from an image or from a bind-mounted folder, and everything it writes into a
container's rootfs, goes through here: the artifacts of a view (`resolve_file`), urunc.json
(`read_file`), the files of a bind-mounted folder (`entries`, `open_file`), the spec's files written
into a block rootfs (`walk` with `make`, then `replace`).

Paths are resolved as the guest would see them: an absolute symlink target starts again at the root, a
relative one from the link's folder. A `..` that would climb above the root is an error (never clamped),
and so is a loop of links.

What must stay true:
- the kernel never follows a link here: each component is opened with O_PATH|O_NOFOLLOW relative to the
  descriptor of the folder before it, and told apart by fstat on what was opened; a link's target is read
  from that descriptor and walked by the same rules, inside the root;
- `..` steps back along the walk's own descriptors and never asks the file system, so a folder moved
  away meanwhile cannot lead out of the root;
- a file is opened once, checked through its descriptor (fstat) and read through it (re-opened from that
  very descriptor, never by name): nothing swapped in after the check is read, no device is ever opened;
- missing folders are made (mkdirat) in a folder already walked, then walked like any other; a file is
  written under a temporary name in its walked folder and renamed over its name there (renameat), which
  replaces a link without following it;
- errors name the path inside the root, never the host's.

Not openat2: RESOLVE_IN_ROOT clamps `..` at the root where this rule refuses it, RESOLVE_BENEATH refuses
the absolute links a guest resolves at its root, and Python's `os` has no openat2 (ctypes would cost
create its import). The walk costs an open, an fstat and a close per component: microseconds.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from ukrun.errors import ImageError, MissingInImage, UkrunError, UnsafePath
from ukrun.tuples import NamedTuple

MAX_LINKS = 40
NAME_MAX = 255  # bytes in one path component, as Linux file systems allow
PATH_MAX = 4096
_PATH = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
_TEMPORARY = ".ukrun.tmp"  # a file being written, before its rename


class Resolved(NamedTuple):
    path: Path  # host path inside the root, free of links
    followed_links: int


class Walked(NamedTuple):
    fd: int  # O_PATH descriptor of what the path names (never a link); the caller closes it
    parts: tuple[str, ...]  # its path inside the root, links resolved
    mode: int  # its st_mode, from that descriptor
    links: int  # symlinks followed on the way


def open_root(root: Path | str) -> int:
    return os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)


def walk(root_fd: int, image_path: str, what: str = "path", *, make: bool = False) -> Walked:
    """What `image_path` names inside the folder `root_fd`, links followed inside it. With `make`, the
    path is a folder: what is missing of it is made."""
    if not image_path.startswith("/"):
        raise ImageError(f"{what} {image_path!r} must be an absolute path inside the image")
    _check_length(image_path, f"{what} {_short(image_path)!r}")
    pending = _components(image_path)
    names: list[str] = []
    fds: list[int] = []  # fds[i]: the folder names[:i + 1]
    links = 0
    mode = stat.S_IFDIR  # of what the walk reached: the root, a folder left by `..`, or a folder a link led to
    try:
        while pending:
            comp = pending.pop()
            if comp == "..":
                if not names:
                    raise UnsafePath(f"{what} {image_path!r} climbs above the image's root with '..'; refused")
                names.pop()
                os.close(fds.pop())
                mode = stat.S_IFDIR
                continue
            fd = _open(fds[-1] if fds else root_fd, comp, make, what, image_path, links)
            mode = os.fstat(fd).st_mode
            if stat.S_ISLNK(mode):
                links += 1
                try:
                    target = os.readlink("", dir_fd=fd)
                finally:
                    os.close(fd)
                if links > MAX_LINKS:
                    raise UnsafePath(f"{what} {image_path!r} goes through more than {MAX_LINKS} symlinks; refused")
                _check_length(target, f"{what} {_short(image_path)!r}: the target of symlink {_short(comp)!r}")
                if target.startswith("/"):
                    _close(fds)
                    names.clear()
                pending.extend(_components(target))
                mode = stat.S_IFDIR
                continue
            names.append(comp)
            fds.append(fd)
            if pending and not stat.S_ISDIR(mode):
                raise ImageError(f"{what} {image_path!r}: '{comp}' is not a folder")
        if make and not stat.S_ISDIR(mode):
            raise ImageError(f"{what} {image_path!r} is not a folder in the image")
        out = fds.pop() if fds else os.dup(root_fd)
    except OSError as exc:  # the message names the image's path only, never the host's
        done = "made" if make else "read"
        raise ImageError(f"{what} {image_path!r} cannot be {done} in the image: {exc.strerror}") from None
    finally:
        _close(fds)
    return Walked(out, tuple(names), mode, links)


def _open(folder: int, comp: str, make: bool, what: str, image_path: str, links: int) -> int:
    try:
        return os.open(comp, _PATH, dir_fd=folder)
    except FileNotFoundError:
        if not make:
            via = f", following {links} symlink(s) inside the image" if links else ""
            raise MissingInImage(f"{what} {image_path!r} does not exist in the image ('{comp}' is missing{via}; "
                                 "links are followed inside the image, never on the host)") from None
    with contextlib.suppress(FileExistsError):  # made meanwhile: walked below like any other entry
        os.mkdir(comp, 0o755, dir_fd=folder)
    return os.open(comp, _PATH, dir_fd=folder)


def _components(path: str) -> list[str]:
    """The path's components, last first (a stack), without empty ones and `.`."""
    return [c for c in reversed(path.split("/")) if c not in ("", ".")]


def _close(fds: list[int]) -> None:
    while fds:
        os.close(fds.pop())


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
    """The host path of the regular file `image_path` names in `root`. For a root nobody else writes (a
    read-only view): the path is free of links, so opening it by name later opens what was checked here."""
    root_fd = open_root(root)
    try:
        found = walk(root_fd, image_path, what)
        os.close(found.fd)
    finally:
        os.close(root_fd)
    if not stat.S_ISREG(found.mode):
        raise ImageError(f"{what} {image_path!r} is not a regular file in the image")
    return Resolved(root.joinpath(*found.parts), found.links)


def open_file(root_fd: int, image_path: str, what: str) -> int:
    """A regular file of the root, open for reading: the very file the walk checked."""
    found = walk(root_fd, image_path, what)
    try:
        if not stat.S_ISREG(found.mode):
            raise ImageError(f"{what} {image_path!r} is not a regular file in the image")
        return reopen(found.fd)
    finally:
        os.close(found.fd)


def reopen(fd: int) -> int:
    """An O_PATH descriptor's file, open for reading (through the descriptor itself, not by its name)."""
    return os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC)


def read_file(root: Path, image_path: str, limit: int, what: str) -> bytes:
    """A regular file of the root, refused when over `limit` bytes."""
    root_fd = open_root(root)
    try:
        fd = open_file(root_fd, image_path, what)
    finally:
        os.close(root_fd)
    return read_limited(fd, limit, what)


def read_limited(fd: int, limit: int, what: str) -> bytes:
    """What an open file holds (the descriptor is closed after), refused when over `limit` bytes."""
    with os.fdopen(fd, "rb") as f:
        size = os.fstat(fd).st_size
        if size > limit:
            raise ImageError(f"{what} is {size} bytes, over the {limit}-byte limit")
        return f.read(limit + 1)[:limit]


def entries(root_fd: int, limit: int) -> list[str] | None:
    """The paths (`/a/b`) of every entry below the folder `root_fd`, sorted; folders are entered through
    their descriptors, links are listed, never entered. None past `limit` entries."""
    found: list[str] = []
    pending = [("", os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=root_fd))]
    try:
        while pending:
            rel, fd = pending.pop()
            try:
                with os.scandir(fd) as listing:
                    names = [(e.name, e.is_dir(follow_symlinks=False)) for e in listing]
                for name, is_dir in names:
                    found.append(f"{rel}/{name}")
                    if len(found) > limit:
                        return None
                    if is_dir:
                        try:
                            sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
                        except OSError:
                            continue  # no longer a folder: listed, not entered
                        pending.append((f"{rel}/{name}", sub))
            finally:
                os.close(fd)
    finally:
        for _, fd in pending:
            os.close(fd)
    return sorted(found)


def replace(folder_fd: int, name: str, data: bytes, image_path: str) -> None:
    """Writes `data` as `name` in a walked folder: a new file, renamed over whatever held the name."""
    try:
        try:
            fd = _create(folder_fd)
        except FileExistsError:  # a leftover, or the image's own entry: removed, never opened
            os.unlink(_TEMPORARY, dir_fd=folder_fd)
            fd = _create(folder_fd)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        try:
            os.rename(_TEMPORARY, name, src_dir_fd=folder_fd, dst_dir_fd=folder_fd)
        except IsADirectoryError:
            os.unlink(_TEMPORARY, dir_fd=folder_fd)
            raise ImageError(f"{image_path} is a folder in the image: a file cannot be written over it; "
                             "mount the file elsewhere") from None
    except OSError as exc:
        raise UkrunError(f"{image_path} cannot be written into the container's rootfs: {exc.strerror}") from None


def _create(folder_fd: int) -> int:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    return os.open(_TEMPORARY, flags, 0o644, dir_fd=folder_fd)
