"""A container's record under the runtime root. Imported by every verb: standard library only."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ukrun.errors import UkrunError

STATE_FILE = "ukrun.json"
FIFO = "exec.fifo"


@dataclass
class ContainerState:
    id: str
    bundle: str
    pid: int = 0
    pid_start: str = ""
    created: str = ""
    started: bool = False
    namespace: str = ""
    annotations: dict[str, str] = field(default_factory=dict)
    cgroups: list[str] = field(default_factory=list)
    monitor: list[str] = field(default_factory=list)
    handed_off: str = ""
    artifacts: bool = False


def container_dir(root: Path, container_id: str) -> Path:
    if not container_id or "/" in container_id or container_id in (".", ".."):
        raise UkrunError(f"invalid container ID {container_id!r}")
    return root / container_id


def is_ours(root: Path, container_id: str) -> bool:
    return (container_dir(root, container_id) / STATE_FILE).exists()


def load(root: Path, container_id: str) -> ContainerState:
    path = container_dir(root, container_id) / STATE_FILE
    try:
        return ContainerState(**json.loads(path.read_text()))
    except FileNotFoundError:
        raise UkrunError(f"container {container_id} does not exist") from None


def save(root: Path, st: ContainerState) -> None:
    d = container_dir(root, st.id)
    tmp = d / f".{STATE_FILE}.tmp"
    tmp.write_text(json.dumps(asdict(st)))
    os.replace(tmp, d / STATE_FILE)


def process_start(pid: int) -> str:
    """The process's start time in clock ticks, to tell it from a later process with the same PID."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    fields = stat.rsplit(")", 1)[1].split()
    return "" if fields[0] == "Z" else fields[19]


def alive(st: ContainerState) -> bool:
    return st.pid > 0 and process_start(st.pid) == st.pid_start


def status(root: Path, st: ContainerState) -> str:
    if not alive(st):
        return "stopped"
    if not st.started and (container_dir(root, st.id) / FIFO).exists():
        return "created"
    return "running"
