"""docs/reliability.md, written by the test run that proves it: the fault tests and the hostile-image tests
each record a row only once everything they assert has held, and the document is written only when every
such test of the session recorded its row (a partial or failed run leaves the committed one alone)."""

from __future__ import annotations

import os
import platform
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "reliability.md"


@dataclass(frozen=True)
class Fault:
    point: str
    containerd: str
    done: str  # what the test did to reach the point
    left: tuple[str, ...]  # what of the container was there after the crash, before any cleanup
    cleanup: str  # what was run to clean up
    bystander: str  # what happened to another container of the same image meanwhile


@dataclass(frozen=True)
class Hostile:
    case: str
    path: str  # "ctr" (the stock shim) or "acquire" (ArtifactStore in all three modes)
    containerd: str
    error: str


@dataclass
class Report:
    expected: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    faults: list[Fault] = field(default_factory=list)
    hostile: list[Hostile] = field(default_factory=list)

    def complete(self) -> bool:
        return (self.expected["faults"] > 0 and len(self.faults) == self.expected["faults"]
                and self.expected["hostile"] > 0 and len(self.hostile) == self.expected["hostile"])

    def render(self, versions: list[str]) -> str:
        out = [
            "# Reliability: faults and hostile images",
            "",
            "Written by `make test` (tests/integration/test_faults.py, test_hostile.py and test_hostile_mounts.py)",
            "when every one of their cases passed; do not edit by hand. Each row is a case that passed: after its",
            "cleanup nothing of the container was left (state folder, view use, label, lease, mount, loop device,",
            "cgroup, process, tap, tc filter).",
            "",
            f"Machine: {platform.system()} {_kernel()}, {os.cpu_count()} CPUs; containerd "
            + " and ".join(versions) + "; the stock runc v2 shim running ukrun.",
            "",
            "## Faults: a process of ukrun killed (SIGKILL) at each named crash point",
            "",
            "| point | containerd | how it was reached | left after the crash | cleanup | the other container |",
            "|---|---|---|---|---|---|",
        ]
        for f in sorted(self.faults, key=lambda f: (f.point, f.containerd)):
            left = ", ".join(f.left) or "nothing"
            out.append(f"| `{f.point}` | {f.containerd} | {f.done} | {left} | {f.cleanup} | {f.bystander} |")
        out += [
            "",
            "## Hostile images and pods: one clear error or a guest kept in its rootfs, no host file touched",
            "",
            "| case | path | containerd | ukrun's error, or what it accepted |",
            "|---|---|---|---|",
        ]
        for h in sorted(self.hostile, key=lambda h: (h.path, h.case, h.containerd)):
            error = h.error.replace("|", "\\|")
            out.append(f"| {h.case} | {h.path} | {h.containerd} | {error} |")
        return "\n".join(out) + "\n"

    def write(self, versions: list[str]) -> Path:
        DOC.parent.mkdir(exist_ok=True)
        DOC.write_text(self.render(versions))
        return DOC


def _kernel() -> str:
    """The kernel's version, without the build's local name."""
    return ".".join(platform.release().split("-")[0].split(".")[:2])
