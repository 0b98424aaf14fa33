"""The benchmarks' machine-readable results: typed records written as JSON with `--json PATH`.

Why: `make bench` builds docs/performance.md and its plots from these files, never from the text the
benchmarks print, so a change of wording cannot change a figure. What must stay true: every field is
plain JSON (numbers, strings, lists, string-keyed dicts), `load_*` reads back exactly what `dump`
wrote, and this module imports nothing heavy (the report reads results without containerd or ukrun).
"""

from __future__ import annotations

import json
import platform
import statistics
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


def dump(result: object, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(result), indent=1) + "\n")  # type: ignore[call-overload]


def command_line() -> str:
    """How this benchmark was started, as one would type it in the repository."""
    module = Path(sys.argv[0]).resolve()
    parts = module.with_suffix("").parts
    name = ".".join(parts[parts.index("benchmarks"):]) if "benchmarks" in parts else module.name
    return " ".join(["python -m", name, *sys.argv[1:]])


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))]


@dataclass
class ModeRun:
    mode: str
    times_ms: list[float]
    bytes_per_start: list[int]

    def median(self) -> float:
        return statistics.median(self.times_ms)

    def later_median(self) -> float | None:
        """The median of every start after the first (a shared view's steady state); None for one start."""
        return statistics.median(self.times_ms[1:]) if len(self.times_ms) > 1 else None


@dataclass
class ArtifactRun:
    size_mib: int
    containers: int
    modes: list[ModeRun]

    def mode(self, name: str) -> ModeRun:
        return next(m for m in self.modes if m.mode == name)


@dataclass
class ArtifactsResult:
    containerd: str
    snapshotter: str
    where: str
    command: str
    runs: list[ArtifactRun]
    failures: list[str]


def load_artifacts(path: Path) -> ArtifactsResult:
    d: dict[str, Any] = json.loads(path.read_text())
    runs = [ArtifactRun(r["size_mib"], r["containers"], [ModeRun(**m) for m in r["modes"]]) for r in d["runs"]]
    return ArtifactsResult(d["containerd"], d["snapshotter"], d["where"], d["command"], runs, d["failures"])


@dataclass
class VerbCost:
    verb: str
    ukrun_ms: float
    ukrun_peak_kib: int
    runc_ms: float
    runc_peak_kib: int


EXECS = 10  # `ctr task exec` calls of each kind in the runtime benchmark


@dataclass
class RuntimeResult:
    containerd: str
    command: str
    start_ms: dict[str, list[float]]  # "ukrun" / "runc": ctr run -d until RUNNING, one per run
    verbs: list[VerbCost]
    state_ms: dict[str, float]  # "ukrun" / "runc": median whole-process `state`
    phases_ms: dict[str, float]  # ukrun's phase -> median ms after the start of create
    imports_ms: dict[str, float]  # hot verb -> import time, interpreter start included
    interpreter_ms: float = 0.0  # median whole-process `python -c pass`, alternating with `state`
    exec_ms: dict[str, float] = field(default_factory=dict)  # "ukrun" / "runc": median `ctr task exec` of true


def load_runtime(path: Path) -> RuntimeResult:
    d: dict[str, Any] = json.loads(path.read_text())
    return RuntimeResult(d["containerd"], d["command"], d["start_ms"], [VerbCost(**v) for v in d["verbs"]],
                         d["state_ms"], d["phases_ms"], d["imports_ms"], d.get("interpreter_ms", 0.0),
                         d.get("exec_ms", {}))


@dataclass
class LoadResult:
    containerd: str
    command: str
    containers: int
    create_ms: list[float]  # create's own phases (ukrun's timing log), one per container
    all_running_s: float  # from the concurrent `ctr run -d` until the last returned (its task RUNNING)
    views_while_running: int
    view_users: int
    teardown_s: float
    clean: bool
    images: int
    image_views: int
    images_clean: bool
    problems: list[str] = field(default_factory=list)


def load_load(path: Path) -> LoadResult:
    return LoadResult(**json.loads(path.read_text()))


@dataclass
class Machine:
    kernel: str
    cpus: int
    cpu_model: str
    memory_gib: float
    python: str
    containerd: dict[str, str]
    runc: str
    qemu: str
    date: str


def _first_line(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout
    except OSError:
        return "not installed"
    return out.splitlines()[0].strip() if out else "unknown"


def machine(containerd: dict[str, str], date: str) -> Machine:
    import os

    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal:"))
    kernel = ".".join(platform.release().split("-")[0].split(".")[:2])  # the version, not the build's name
    return Machine(kernel, os.cpu_count() or 0, model, round(mem_kib / (1 << 20), 1),
                   platform.python_version(), containerd, _first_line(["runc", "--version"]),
                   _first_line(["qemu-system-x86_64", "--version"]), date)


def load_machine(path: Path) -> Machine:
    return Machine(**json.loads(path.read_text()))


@dataclass
class PeerSample:
    """One container's life through one runtime (benchmarks.peer)."""

    containerd: str
    mode: str  # "rm": `ctr run --rm` end to end; "detach": `ctr run -d` until the task runs
    image: str  # PeerImage.key
    runtime: str  # ukrun, urunc or runc
    index: int  # 0: the first container of the image (of this variant) through this runtime
    wall_ms: float
    ok: bool  # the expected output and exit code (rm), the task started (detach)
    clean: bool  # deleted with nothing left by the usual commands
    intervals_ms: dict[str, float]  # testbed.events.INTERVALS, by containerd's clock
    phases_ms: dict[str, float] = field(default_factory=dict)  # ukrun's own verbs, from its timing log
    note: str = ""


@dataclass
class PeerResult:
    command: str
    urunc: str  # urunc's version, or "" when skipped
    runs: int
    titles: dict[str, str]  # image key -> title
    samples: list[PeerSample]
    skipped: str = ""  # why the section did not run, and how to enable it


def load_peer(path: Path) -> PeerResult:
    d: dict[str, Any] = json.loads(path.read_text())
    return PeerResult(d["command"], d["urunc"], d["runs"], d["titles"], [PeerSample(**s) for s in d["samples"]],
                      d.get("skipped", ""))
