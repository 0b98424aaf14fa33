"""containerd's own events (`ctr events`), read while a benchmark or a test runs: where a container's life spends
its time, by containerd's clock, the same for every runtime, and what containerd did (a snapshot removed).

Why: a runtime's own timings cannot be compared with another runtime's; containerd's events can. The
intervals are the ones a user waits through: `/containers/create` to `/tasks/create` (the shim's start and
the runtime's create), `/tasks/create` to `/tasks/start` (start), and `/tasks/exit` to `/containers/delete`
(the runtime's delete, the shim's teardown and the snapshot's removal). What must stay true: an interval is
taken only from events of the one container it names, and a missing event leaves the interval out.
"""

from __future__ import annotations

import datetime
import json
import subprocess
import threading
import time
from pathlib import Path
from typing import NamedTuple

INTERVALS = (("create", "/containers/create", "/tasks/create"),
             ("start", "/tasks/create", "/tasks/start"),
             ("delete", "/tasks/exit", "/containers/delete"))


class Event(NamedTuple):
    at: float  # seconds since the epoch, containerd's clock
    namespace: str
    topic: str
    payload: dict[str, object]

    def names(self, container: str) -> bool:
        p = self.payload
        return p.get("id") == container or p.get("container_id") == container


def parse(line: str) -> Event | None:
    """One line of `ctr events`: `2026-12-03 07:15:33.710121747 +0000 UTC ns /topic {json}`."""
    parts = line.split(" ", 6)
    if len(parts) < 6 or parts[3] != "UTC":
        return None
    day, clock = parts[0], parts[1]
    whole, _, frac = clock.partition(".")
    try:
        base = datetime.datetime.strptime(f"{day} {whole}", "%Y-%m-%d %H:%M:%S").replace(tzinfo=datetime.UTC)
        payload = json.loads(parts[6]) if len(parts) > 6 else {}
    except ValueError:
        return None
    return Event(base.timestamp() + float(f"0.{frac or '0'}"), parts[4], parts[5],
                 payload if isinstance(payload, dict) else {})


class EventLog:
    """`ctr events` of one daemon, collected in the background until `close`."""

    def __init__(self, ctr: Path, address: str, env: dict[str, str]) -> None:
        self.events: list[Event] = []
        self._lock = threading.Lock()
        self._proc = subprocess.Popen([str(ctr), "--address", address, "events"], stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL, text=True, env=env)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        time.sleep(0.3)  # subscribed before the first container

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            event = parse(line.rstrip("\n"))
            if event is not None:
                with self._lock:
                    self.events.append(event)

    def settle(self, container: str, topic: str, timeout: float = 5.0) -> bool:
        """Waits until the container's `topic` event has arrived."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if any(e.topic == topic and e.names(container) for e in self.events):
                    return True
            time.sleep(0.01)
        return False

    def of(self, container: str) -> list[Event]:
        with self._lock:
            return [e for e in self.events if e.names(container)]

    def snapshot_removals(self, since: float, until: float) -> list[str]:
        """Keys of the snapshots containerd removed in [since, until]."""
        with self._lock:
            return [str(e.payload.get("key", "")) for e in self.events
                    if e.topic == "/snapshot/remove" and since <= e.at <= until]

    def close(self) -> None:
        self._proc.terminate()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


def intervals(events: list[Event]) -> dict[str, float]:
    """name -> ms between the first event of each pair, for the pairs present."""
    first: dict[str, float] = {}
    for e in sorted(events, key=lambda e: e.at):
        first.setdefault(e.topic, e.at)
    return {name: (first[b] - first[a]) * 1000 for name, a, b in INTERVALS if a in first and b in first}
