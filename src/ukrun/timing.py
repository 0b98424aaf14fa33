"""Per-phase timestamps, as urunc's TS00..TS18: JSON lines of verb, phase, monotonic ns, container."""

from __future__ import annotations

import json
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
        lines = "".join(
            json.dumps({"container": self.container, "verb": self.verb, "phase": p, "ns": ns, "pid": os.getpid()})
            + "\n"
            for p, ns in self.marks
        )
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
