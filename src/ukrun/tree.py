"""Removing one of ukrun's own folders (a container's state, a view's, a copy's) with the standard library's
basics: a bare `delete` (runtime.hot) runs in the shim's ukrun, where shutil (bz2, lzma) or pathlib would
cost more than the walk. Links are removed, never followed."""

from __future__ import annotations

import os

TYPE_CHECKING = False  # not typing's (see runtime.hot)
if TYPE_CHECKING:
    from collections.abc import Callable

    Path = str | os.PathLike[str]


def remove_tree(path: Path) -> None:
    """shutil.rmtree(path, ignore_errors=True), without shutil: ukrun's own folders hold a few files."""
    for top, dirs, files in os.walk(path, topdown=False):
        for name in files:
            _quietly(os.unlink, os.path.join(top, name))
        for name in dirs:  # a link to a folder is listed here, and not walked into
            inner = os.path.join(top, name)
            _quietly(os.unlink if os.path.islink(inner) else os.rmdir, inner)
    _quietly(os.rmdir, path)


def _quietly(remove: Callable[[Path], None], path: Path) -> None:
    try:  # noqa: SIM105 -- contextlib imports collections and functools: 1 ms of a bare delete
        remove(path)
    except OSError:
        pass
