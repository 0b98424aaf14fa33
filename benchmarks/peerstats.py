"""The peer benchmark's figures from its samples (benchmarks.results.PeerSample), for its printout and the page.

What must stay true: a ratio is the median of ratios taken pair by pair within a round (the same index of the
same image, mode and daemon), never a ratio of medians; the first container of an image (index 0) is kept
apart from the later ones; a container that failed (a runtime that hung, or a snapshot the machine could not
write) is counted in no time and no ratio, and is reported, never dropped silently; an unclean one counts.
"""

from __future__ import annotations

import statistics
from typing import NamedTuple

from benchmarks.results import PeerSample

RUNTIMES = ("ukrun", "urunc", "runc")
HELPED = "ukrun-helper"  # ukrun with its resident helper (benchmarks.peer --helper); a container ID part


class Row(NamedTuple):
    containerd: str
    mode: str
    image: str
    first: dict[str, float]  # runtime -> ms of the first container
    later: dict[str, float]  # runtime -> median ms of the later ones
    ratio_urunc: float | None  # median pairwise ukrun / urunc over the later rounds
    ratio_runc: float | None  # likewise against runc's busybox
    ratio_urunc_first: float | None
    failures: dict[str, int]  # runtime -> samples not ok or not clean
    intervals: dict[str, dict[str, float]]  # runtime -> interval -> median ms (later rounds)
    phases: dict[str, float]  # ukrun's verb -> median ms (later rounds)
    spread: float  # (max - min) / median of ukrun's later pairwise ratios against urunc, or runc
    builds: dict[str, tuple[float | None, float | None]] | None = None  # other ukrun builds (benchmarks.peer
    # --build NAME=PATH) -> median pairwise ukrun / it: first container, later ones
    helped: tuple[float | None, float | None] | None = None  # ukrun+helper / urunc, / runc (later ones)


def _pairs(samples: list[PeerSample], other: str, first: bool = False, lane: str = "ukrun") -> list[float]:
    mine = {s.index: s.wall_ms for s in samples if s.runtime == lane and s.ok}
    theirs = {s.index: s.wall_ms for s in samples if s.runtime == other and s.ok}
    return [mine[i] / theirs[i] for i in sorted(mine) if i in theirs and (i == 0) == first and theirs[i] > 0]


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def rows(samples: list[PeerSample]) -> list[Row]:
    keys = sorted({(s.containerd, s.mode, s.image) for s in samples}, key=lambda k: (k[0], k[1] != "rm", k[2]))
    out = []
    for key in keys:
        group = [s for s in samples if (s.containerd, s.mode, s.image) == key]
        first = {s.runtime: s.wall_ms for s in group if s.index == 0 and s.ok}
        runtimes = [*RUNTIMES, *sorted({s.runtime for s in group} - set(RUNTIMES))]
        later = {r: statistics.median(v) for r in runtimes
                 if (v := [s.wall_ms for s in group if s.runtime == r and s.index > 0 and s.ok])}
        first_ratio = first["ukrun"] / first["urunc"] if "ukrun" in first and first.get("urunc") else None
        vs_urunc, vs_runc = _pairs(group, "urunc"), _pairs(group, "runc")
        spread_of = vs_urunc or vs_runc
        spread = (max(spread_of) - min(spread_of)) / statistics.median(spread_of) if spread_of else 0.0
        intervals: dict[str, dict[str, float]] = {}
        for r in runtimes:
            names = {n for s in group if s.runtime == r for n in s.intervals_ms}
            values = {n: _median([s.intervals_ms[n] for s in group if s.runtime == r and s.index > 0
                                  and n in s.intervals_ms]) for n in sorted(names)}
            intervals[r] = {n: v for n, v in values.items() if v is not None}
        verbs = {n for s in group if s.runtime == "ukrun" for n in s.phases_ms}
        phases = {n: m for n in sorted(verbs) if (m := _median([s.phases_ms[n] for s in group if s.runtime == "ukrun"
                                                                 and s.index > 0 and n in s.phases_ms])) is not None}
        failures = {r: n for r in runtimes if (n := sum(1 for s in group if s.runtime == r and not (s.ok and s.clean)))}
        builds = {b: (_median(_pairs(group, b, first=True)), _median(_pairs(group, b)))
                  for b in runtimes if b not in RUNTIMES}
        helped = (_median(_pairs(group, "urunc", lane=HELPED)), _median(_pairs(group, "runc", lane=HELPED))) \
            if HELPED in runtimes else None
        out.append(Row(*key, first, later, _median(vs_urunc), _median(vs_runc), first_ratio, failures, intervals,
                       phases, spread, builds, helped))
    return out
