"""The C library's calls that Python 3.11's os lacks (unshare, setns, mount, sethostname, prctl), through
`_ctypes`, the C half of ctypes.

Why: the container's init-to-be (ukrun.launcher) makes these calls, and create waits for it; when the compiled
front starts it as a fresh interpreter, its imports are on create's path. `import ctypes` builds every C type
in Python (and imports os, struct and types for it): about 3 ms here, where `_ctypes` alone takes 0.4.

What must stay true: arguments are Python ints, bytes or None, which `_ctypes` converts to C ints and pointers
by itself, and every function returns a C int; errno is saved around each call (`errno`), as ctypes'
`use_errno=True` does.
"""

import _ctypes

TYPE_CHECKING = False  # not typing's (see launchconfig)
if TYPE_CHECKING:
    from collections.abc import Callable


class _Int(_ctypes._SimpleCData):  # type: ignore[type-arg]  # ctypes.c_int: its results are Python ints
    _type_ = "i"


class _Function(_ctypes.CFuncPtr):
    _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
    _restype_ = _Int


class _Process:
    """The libraries already loaded in this process (dlopen(NULL)), the C library among them."""

    _handle = _ctypes.dlopen(None, 0)  # type: ignore[arg-type]  # dlopen(NULL): typeshed names only files


def function(name: str) -> "Callable[..., int]":
    """The C library's function `name`, returning a C int."""
    made: Callable[..., int] = _Function((name, _Process))  # type: ignore[arg-type]  # ctypes reads its _handle
    return made


def errno() -> int:
    """errno as the last call through `function` left it."""
    value: int = _ctypes.get_errno()
    return value
