"""docs/performance.md's section beside urunc (benchmarks.peer): the side-by-side table, containerd's lifecycle
intervals, and the plot, each naming urunc's version and the command.

What must stay true: it reads only the peer step's JSON (benchmarks.results.PeerResult); a skipped step (no urunc
binary named) is said as such, with how to enable it; a ratio is always the median of pairwise ratios
(benchmarks.peerstats), and a failed or unclean container is listed, never dropped silently.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks import plots
from benchmarks.peerstats import HELPED, Row, rows
from benchmarks.results import Machine, PeerResult

GOAL = 1.15  # issue 17: ukrun <= 1.0 x urunc on three images, <= 1.15 x on the rest; <= 1.10 x runc's busybox


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f} ms"


def _x(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def headline(result: PeerResult) -> list[str]:
    if result.skipped or not result.samples:
        return []
    by_version: dict[str, list[str]] = {}
    for r in rows(result.samples):
        if r.mode == "rm" and r.ratio_urunc is not None:
            helped = f" ({_x(r.helped[0])} with its helper)" if r.helped and r.helped[0] is not None else ""
            by_version.setdefault(r.containerd, []).append(
                f"{result.titles.get(r.image, r.image)} {_x(r.ratio_urunc)}{helped}")
    parts = [f"containerd {v}: {', '.join(p)}" for v, p in sorted(by_version.items())]
    return [f"- beside urunc {result.urunc} (`ctr run --rm`, later containers, ukrun ÷ urunc): {'; '.join(parts)}."]


def section(result: PeerResult, m: Machine, command: str, pdir: Path, when: str) -> list[str]:
    out = ["## Beside urunc: a container's whole life", ""]
    if result.skipped:
        return [*out, f"_{result.skipped}_", ""]
    all_rows = rows(result.samples)
    versions = sorted({r.containerd for r in all_rows})
    out += [f"`{command}` (urunc {result.urunc}; containerd {', '.join(versions)}{when}; blockfile; the stock runc "
            "v2 shim with `--runc-binary` for ukrun, urunc and runc alike; urunc's qemu through a wrapper that "
            "turns `-enable-kvm -cpu host` into TCG's `-cpu max`, as ukrun runs qemu here)", "",
            "One container at a time, nothing left running between runs; each round runs ukrun, urunc (when it "
            "has the guest type) and runc's busybox in turn; a ratio is the median of the rounds' pairwise "
            f"ratios over the later containers (the first of an image is reported apart); {result.runs} rounds. "
            f"Goal: ukrun ÷ urunc at most 1.0 on three images and at most {GOAL} on the rest, and at most 1.10 "
            "÷ runc's busybox until RUNNING.", ""]
    for mode, title in (("rm", "`ctr run --rm`, end to end"), ("detach", "`ctr run -d` until the task runs")):
        mine = [r for r in all_rows if r.mode == mode]
        if not mine:
            continue
        helped = any(r.helped for r in mine)
        out += [f"### {title}", "", "| containerd | image | ukrun, first | urunc, first | ukrun, later | "
                "urunc, later | **ukrun ÷ urunc** | runc busybox, later | ukrun ÷ runc | "
                + ("ukrun + helper, later | **÷ urunc** | ÷ runc | " if helped else "") + "spread |",
                "|---|---|---|---|---|---|---|---|---|" + ("---|---|---|" if helped else "") + "---|"]
        for r in mine:
            extra = (f"{_ms(r.later.get(HELPED))} | **{_x(r.helped[0])}** | {_x(r.helped[1])} | "
                     if r.helped else "- | - | - | " if helped else "")
            out.append(f"| {r.containerd} | {result.titles.get(r.image, r.image)} | {_ms(r.first.get('ukrun'))} | "
                       f"{_ms(r.first.get('urunc'))} | {_ms(r.later.get('ukrun'))} | {_ms(r.later.get('urunc'))} | "
                       f"**{_x(r.ratio_urunc)}** | {_ms(r.later.get('runc'))} | {_x(r.ratio_runc)} | {extra}"
                       f"{r.spread:.2f} |")
        out.append("")
    out += ["Spread: (largest - smallest) ÷ median of ukrun's pairwise ratios; a wide one says the machine was "
            "noisy.", "", *_intervals(all_rows, result.titles), *_failures(result)]
    out += [f"![ukrun beside urunc {result.urunc}](plots/"
            f"{plots.peer_ratios(all_rows, pdir / 'peer-ratios.png', m, command, result.urunc, result.titles).name})",
            ""]
    return out


def _intervals(all_rows: list[Row], titles: dict[str, str]) -> list[str]:
    out = ["### Where the time goes: containerd's events", "",
           "Median ms over the later containers of `ctr run --rm`, by containerd's own clock: create = "
           "`/containers/create` → `/tasks/create` (the shim's start and the runtime's create), start = "
           "`/tasks/create` → `/tasks/start`, delete = `/tasks/exit` → `/containers/delete` (the runtime's "
           "delete, the shim's teardown, the snapshot's removal); ukrun's own verbs from its timing log.", "",
           "| containerd | image | interval | ukrun | urunc | runc busybox |", "|---|---|---|---|---|---|"]
    for r in all_rows:
        if r.mode != "rm":
            continue
        for name in ("create", "start", "delete"):
            helper = r.intervals.get(HELPED, {}).get(name)
            out.append(f"| {r.containerd} | {titles.get(r.image, r.image)} | {name} | "
                       f"{_ms(r.intervals.get('ukrun', {}).get(name))}"
                       + (f" ({_ms(helper)} with its helper)" if helper is not None else "")
                       + f" | {_ms(r.intervals.get('urunc', {}).get(name))}"
                       f" | {_ms(r.intervals.get('runc', {}).get(name))} |")
        if r.phases:
            out.append(f"| {r.containerd} | {titles.get(r.image, r.image)} | ukrun's verbs (timing log) | "
                       + ", ".join(f"{k} {v:.0f} ms" for k, v in r.phases.items()) + " | | |")
    return [*out, ""]


def _failures(result: PeerResult) -> list[str]:
    bad = [s for s in result.samples if not (s.ok and s.clean)]
    if not bad:
        return ["Every container printed what it should, exited as it should and was deleted with nothing left.", ""]
    out = ["Containers that failed (counted in no time and no ratio) or left something (counted):", ""]
    for s in bad:
        what = "left something after its delete" if s.ok else f"failed: {s.note or 'no output'}"
        out.append(f"- {s.runtime}, {result.titles.get(s.image, s.image)}, {s.mode} #{s.index} (containerd "
                   f"{s.containerd}): {what.replace('|', '/')}")
    return [*out, ""]
