"""Removing one of ukrun's own folders (a container's state, a view's, a copy's) with the standard library's
basics: a bare `delete` (runtime.hot) runs in the shim's ukrun, where shutil (bz2, lzma) or pathlib would
cost more than the walk, and posix rather than os (see runtime.state). Links are removed, never followed."""

import posix

TYPE_CHECKING = False  # not typing's (see runtime.hot)
if TYPE_CHECKING:
    from collections.abc import Callable
    from os import PathLike

    Path = str | PathLike[str]


def remove_tree(path: "Path") -> None:
    """shutil.rmtree(path, ignore_errors=True), without shutil: ukrun's own folders hold a few files."""
    _empty(posix.fspath(path))
    _quietly(posix.rmdir, path)


def _empty(folder: str) -> None:
    try:
        with posix.scandir(folder) as entries:
            inside = list(entries)
    except OSError:
        return
    for entry in inside:
        if entry.is_dir(follow_symlinks=False):  # a link to a folder is removed, not walked into
            _empty(entry.path)
            _quietly(posix.rmdir, entry.path)
        else:
            _quietly(posix.unlink, entry.path)


def _quietly(remove: "Callable[[Path], None]", path: "Path") -> None:
    try:  # noqa: SIM105 -- contextlib imports collections and functools: 1 ms of a bare delete
        remove(path)
    except OSError:
        pass
