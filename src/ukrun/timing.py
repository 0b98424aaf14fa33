"""Per-phase timestamps, as urunc's TS00..TS18: JSON lines of verb, phase, monotonic ns, container."""

from __future__ import annotations

import os
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
        lines = "".join(f'{head}{_quoted(p)}, "ns": {ns}, "pid": {os.getpid()}}}\n' for p, ns in self.marks)
        self.marks.clear()
        try:
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
            try:
                os.write(fd, lines.encode())
            finally:
                os.close(fd)
        except OSError as exc:  # timings are an aid: they never make a verb fail
            from ukrun.logs import log

            log.warning("cannot write phase timings to %s: %s", self.path, exc)


def _quoted(text: str) -> str:
    """A JSON string; the json module only for what needs escaping: `start` writes its marks, and json's
    import (re and enum with it) would cost it more than all its work."""
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return f'"{text}"'
    import json

    return json.dumps(text)
