"""Logging to the file the shim names with --log, in the format it reads back (--log-format json).

containerd's shim reports the last `"level":"error"` line's `msg` as the reason a verb failed, so an
error message written here is what `ctr` shows.

Not the standard `logging` package: its import alone costs about 5 ms, paid by every `create` and
`delete` the shim runs, for the handful of lines ukrun ever writes. What must stay true: the file gets
every line at INFO and above (DEBUG with --debug), stderr WARNING and above, and a line is written
whole with one `write`, so concurrent verbs appending to one log never interleave within a line.
"""

from __future__ import annotations

import os
import sys
import time

DEBUG, INFO, WARNING, ERROR = 10, 20, 30, 40
_NAMES = {DEBUG: "DEBUG", INFO: "INFO", WARNING: "WARNING", ERROR: "ERROR"}


class _Sink:
    def __init__(self) -> None:
        self.path = ""
        self.json = False
        self.file_level = INFO
        self.stderr_level = WARNING


_sink = _Sink()


def setup(path: str | None, fmt: str, debug: bool) -> None:
    _sink.path, _sink.json = path or "", fmt == "json"
    _sink.file_level = DEBUG if debug else INFO
    _sink.stderr_level = DEBUG if debug else WARNING


def line(level: int, message: str, now: float) -> str:
    """One log line as the shim reads it (json) or as a person reads it (text)."""
    name = _NAMES[level]
    millis = int(now % 1 * 1000)
    if _sink.json:
        import json

        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
        return json.dumps({"level": name.lower(), "msg": message, "time": f"{stamp}.{millis:03d}Z"})
    return f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(now))},{millis:03d} {name} {message}"


def emit(level: int, message: str) -> None:
    if level >= _sink.stderr_level:
        sys.stderr.write(f"ukrun: {message}\n")
        sys.stderr.flush()
    if _sink.path and level >= _sink.file_level:
        data = (line(level, message, time.time()) + "\n").encode()
        fd = os.open(_sink.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)


class Logger:
    """`log.warning("%s: ...", x)`, as with the standard package."""

    def debug(self, fmt: str, *args: object) -> None:
        emit(DEBUG, fmt % args if args else fmt)

    def info(self, fmt: str, *args: object) -> None:
        emit(INFO, fmt % args if args else fmt)

    def warning(self, fmt: str, *args: object) -> None:
        emit(WARNING, fmt % args if args else fmt)

    def error(self, fmt: str, *args: object) -> None:
        emit(ERROR, fmt % args if args else fmt)

    def exception(self, fmt: str, *args: object) -> None:
        """An error with the traceback of the exception being handled."""
        import traceback

        emit(ERROR, (fmt % args if args else fmt) + "\n" + traceback.format_exc().rstrip())


log = Logger()
