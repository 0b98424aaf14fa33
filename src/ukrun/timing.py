"""Per-phase timestamps, as urunc's TS00..TS18: JSON lines of verb, phase, monotonic ns, container."""

import posix
import time


class Timer:
    def __init__(self, path: str, container: str, verb: str) -> None:
        self.path = path
        self.container = container
        self.verb = verb
        self.marks: list[tuple[str, int]] = []

    def mark(self, phase: str) -> None:
        if self.path:
            self.marks.append((phase, time.monotonic_ns()))

    def flush(self) -> None:
        if not self.path or not self.marks:
            return
        head = f'{{"container": {_quoted(self.container)}, "verb": {_quoted(self.verb)}, "phase": '
        lines = "".join(f'{head}{_quoted(p)}, "ns": {ns}, "pid": {posix.getpid()}}}\n' for p, ns in self.marks)
        self.marks.clear()
        try:
            fd = _open_appending(self.path)
            try:
                posix.write(fd, lines.encode())
            finally:
                posix.close(fd)
        except OSError as exc:  # timings are an aid: they never make a verb fail
            from ukrun.logs import log

            log.warning("cannot write phase timings to %s: %s", self.path, exc)


def _open_appending(path: str) -> int:
    """The log, opened to append; its folder made first when missing (os, only then: see runtime.state)."""
    flags = posix.O_WRONLY | posix.O_CREAT | posix.O_APPEND | posix.O_CLOEXEC
    try:
        return posix.open(path, flags, 0o644)
    except FileNotFoundError:
        import os

        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        return posix.open(path, flags, 0o644)


def _quoted(text: str) -> str:
    """A JSON string; the json module only for what needs escaping: `start` writes its marks, and json's
    import (re and enum with it) would cost it more than all its work."""
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return f'"{text}"'
    import json

    return json.dumps(text)
