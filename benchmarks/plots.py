"""The figures of docs/performance.md, drawn with matplotlib's Agg backend (no display) from the results.

Why: a plot is easier to read than a table for how a cost grows with size and with container count.
What must stay true: every figure carries, in its own pixels, the machine it was measured on and the
command that produced it (a PNG gets copied around without its page), and it is drawn only from
benchmarks.results records, never from printed text.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from benchmarks.peerstats import Row
from benchmarks.results import ArtifactsResult, LoadResult, Machine, RuntimeResult, percentile

MODES = (("copy", "copy"), ("per-container", "per-container view"), ("shared-first", "shared view, first"),
         ("shared-later", "shared view, later"))


def machine_line(m: Machine) -> str:
    return (f"this machine: Linux {m.kernel}, {m.cpus} CPUs ({m.cpu_model}), {m.memory_gib} GiB; "
            f"containerd {m.containerd.get('2', '?')}; {m.date}")


def _save(fig: Figure, out: Path, m: Machine, command: str) -> Path:
    fig.text(0.01, 0.01, f"{machine_line(m)}\n$ {command}", fontsize=7, family="monospace", va="bottom",
             color="#444444")
    fig.subplots_adjust(bottom=0.24)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def mode_median(run_modes: dict[str, list[float]], mode: str) -> float | None:
    if mode == "shared-first":
        return run_modes["shared"][0]
    if mode == "shared-later":
        later = run_modes["shared"][1:]
        return statistics.median(later) if later else None
    return statistics.median(run_modes[mode])


def _modes(result: ArtifactsResult, size: int | None = None, count: int | None = None) -> list[tuple[int, dict[
        str, list[float]]]]:
    """(x, mode -> times) for the runs at `size` (x = count) or at `count` (x = size)."""
    out = []
    for r in result.runs:
        if size is not None and r.size_mib == size:
            out.append((r.containers, {m.mode: m.times_ms for m in r.modes}))
        elif count is not None and r.containers == count:
            out.append((r.size_mib, {m.mode: m.times_ms for m in r.modes}))
    return sorted(out, key=lambda t: t[0])


def latency_vs(result: ArtifactsResult, out: Path, m: Machine, command: str, *, by: str, fixed: int) -> Path:
    rows = _modes(result, count=fixed) if by == "size" else _modes(result, size=fixed)
    fig, ax = plt.subplots(figsize=(8, 5))
    for mode, label in MODES:
        pts = [(x, y) for x, modes in rows if (y := mode_median(modes, mode)) is not None]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    if by == "size":
        ax.set_xlabel("artifact size (MiB)")
        ax.set_title(f"Artifact access per container start vs artifact size ({fixed} containers, "
                     f"{result.snapshotter})")
    else:
        ax.set_xlabel("containers of one image")
        ax.set_title(f"Artifact access per container start vs container count ({fixed} MiB, {result.snapshotter})")
    ax.set_xticks([x for x, _ in rows], [str(x) for x, _ in rows])
    ax.set_ylabel("median ms per start (log)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    return _save(fig, out, m, command)


def bytes_written(result: ArtifactsResult, out: Path, m: Machine, command: str, count: int) -> Path:
    runs = sorted((r for r in result.runs if r.containers == count), key=lambda r: r.size_mib)
    fig, ax = plt.subplots(figsize=(8, 5))
    width = 0.2
    for i, (mode, label) in enumerate(MODES):
        values = []
        for r in runs:
            b = r.mode("shared" if mode.startswith("shared") else mode).bytes_per_start
            pick = b[:1] if mode == "shared-first" else b[1:] if mode == "shared-later" else b
            values.append(statistics.median(pick) / 1024 if pick else 0.0)
        xs = [j + (i - 1.5) * width for j in range(len(runs))]
        ax.bar(xs, values, width, label=label)
        for x, v in zip(xs, values, strict=True):
            ax.text(x, max(v, 0.5), f"{v / 1024:.0f} MiB" if v >= 1024 else f"{v:.0f} KiB", ha="center",
                    va="bottom", fontsize=7, rotation=90)
    ax.set_yscale("symlog", linthresh=1)
    top = max((r.mode("copy").bytes_per_start[0] for r in runs), default=1024) / 1024
    ax.set_ylim(0, top * 5000)  # room above the bars for their labels and the legend
    ax.set_xticks(range(len(runs)), [f"{r.size_mib} MiB" for r in runs])
    ax.set_ylabel("median KiB written to the state root per start (symlog)")
    ax.set_title(f"Bytes written per container start ({count} containers, {result.snapshotter})")
    ax.legend(loc="upper left", ncol=2)
    return _save(fig, out, m, command)


def devmapper_ratios(result: ArtifactsResult, out: Path, m: Machine, command: str) -> Path:
    runs = sorted(result.runs, key=lambda r: r.size_mib)
    fig, ax = plt.subplots(figsize=(8, 5))
    width = 0.2
    for i, (mode, label) in enumerate(MODES):
        values = []
        for r in runs:
            modes = {x.mode: x.times_ms for x in r.modes}
            y = mode_median(modes, mode)
            values.append(statistics.median(modes["copy"]) / y if y else 0.0)
        xs = [j + (i - 1.5) * width for j in range(len(runs))]
        ax.bar(xs, values, width, label=label)
        for x, v in zip(xs, values, strict=True):
            ax.text(x, v, f"{v:.2f}x", ha="center", va="bottom", fontsize=7)
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_xticks(range(len(runs)), [f"{r.size_mib} MiB" for r in runs])
    ax.set_ylabel("speed-up against copy (copy median / mode median)")
    ax.set_title(f"devmapper in a qemu TCG guest: ratios to copy ({runs[0].containers if runs else 0} containers)")
    ax.legend(loc="upper left")
    return _save(fig, out, m, command)


def verbs(result: RuntimeResult, out: Path, m: Machine, command: str) -> Path:
    names = [v.verb for v in result.verbs] + ["state"]
    uk = [v.ukrun_ms for v in result.verbs] + [result.state_ms["ukrun"]]
    rc = [v.runc_ms for v in result.verbs] + [result.state_ms["runc"]]
    fig, (ax, mem) = plt.subplots(1, 2, figsize=(10, 5), gridspec_kw={"width_ratios": [3, 2]})
    xs = range(len(names))
    ax.bar([x - 0.2 for x in xs], uk, 0.4, label="ukrun")
    ax.bar([x + 0.2 for x in xs], rc, 0.4, label="runc")
    for x, u, r in zip(xs, uk, rc, strict=True):
        ax.text(x - 0.2, u, f"{u:.0f}", ha="center", va="bottom", fontsize=7)
        ax.text(x + 0.2, r, f"{r:.0f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(list(xs), names)
    ax.set_ylabel("median ms, whole process")
    ax.set_title("Each verb as the shim runs it")
    ax.legend()
    vx = range(len(result.verbs))
    mem.bar([x - 0.2 for x in vx], [v.ukrun_peak_kib / 1024 for v in result.verbs], 0.4, label="ukrun")
    mem.bar([x + 0.2 for x in vx], [v.runc_peak_kib / 1024 for v in result.verbs], 0.4, label="runc")
    mem.set_xticks(list(vx), [v.verb for v in result.verbs])
    mem.set_ylabel("peak resident MiB")
    mem.set_title("Peak memory per verb")
    return _save(fig, out, m, command)


def start_latency(result: RuntimeResult, out: Path, m: Machine, command: str) -> Path:
    fig, ax = plt.subplots(figsize=(8, 5))
    kinds = ["ukrun", "runc"]
    data = [result.start_ms[k] for k in kinds]
    ax.boxplot(data, tick_labels=[f"ukrun (linux guest, TCG)\nn={len(data[0])}", f"runc (busybox)\nn={len(data[1])}"],
               showfliers=False)
    for i, values in enumerate(data, start=1):
        ax.scatter([i + (j % 5 - 2) * 0.03 for j in range(1, len(values))], values[1:], s=12, alpha=0.7, zorder=3)
        ax.scatter([i], values[:1], s=40, marker="x", color="black", zorder=4,
                   label="first container of the image" if i == 1 else None)
    ax.legend(fontsize=7)
    ax.set_ylabel("ms from `ctr run -d` until the task is RUNNING")
    ax.set_title("Container start latency, ukrun vs runc, one at a time, alternating")
    ax.set_ylim(bottom=0)
    return _save(fig, out, m, command)


def load_create(result: LoadResult, out: Path, m: Machine, command: str) -> Path:
    fig, ax = plt.subplots(figsize=(8, 5))
    values = result.create_ms
    if values:
        ax.hist(values, bins=min(20, max(5, len(values) // 3)), color="#4c72b0", alpha=0.8)
        for q, style in ((50, "--"), (95, ":")):
            v = percentile(values, q)
            ax.axvline(v, color="black", ls=style, label=f"p{q} {v:.0f} ms")
        ax.legend()
    ax.set_xlabel("create's own phases (ms, ukrun's timing log)")
    ax.set_ylabel("containers")
    ax.set_title(f"{result.containers} containers of one image created at once through ctr")
    return _save(fig, out, m, command)


def peer_ratios(rows: list[Row], out: Path, m: Machine, command: str, urunc: str, titles: dict[str, str]) -> Path:
    """ukrun ÷ urunc, with and without its helper (and ÷ runc's busybox until RUNNING), per image, pairwise
    medians of the later containers, by mode. An image urunc cannot run has no bar against it."""
    modes = [mode for mode in ("rm", "detach") if any(r.mode == mode for r in rows)]
    fig, axes = plt.subplots(1, max(1, len(modes)), figsize=(13, 7.5), squeeze=False)
    for ax, mode in zip(axes[0], modes, strict=False):
        mine = [r for r in rows if r.mode == mode and (mode == "detach" or r.ratio_urunc is not None)]
        series = [(f"ukrun ÷ urunc {urunc}", [r.ratio_urunc for r in mine]),
                  ("ukrun with its helper ÷ urunc", [r.helped[0] if r.helped else None for r in mine])]
        if mode == "detach":
            series += [("ukrun ÷ runc (busybox)", [r.ratio_runc for r in mine]),
                       ("ukrun with its helper ÷ runc", [r.helped[1] if r.helped else None for r in mine])]
        height = 0.8 / len(series)
        ys = range(len(mine))
        for i, (label, values) in enumerate(series):
            at = [y - 0.4 + height * (i + 0.5) for y in ys]
            ax.barh(at, [v or 0.0 for v in values], height, label=label)
            for y, v in zip(at, values, strict=True):
                ax.text(v or 0.0, y, " -" if v is None else f" {v:.2f}", va="center", fontsize=6)
        ax.axvline(1.0, color="black", lw=0.8)
        ax.axvline(1.15, color="grey", lw=0.8, ls=":")
        ax.set_yticks(list(ys), [f"{titles.get(r.image, r.image)}\n(containerd {r.containerd})" for r in mine],
                      fontsize=7)
        ax.invert_yaxis()
        ax.set_title("ctr run --rm, end to end" if mode == "rm" else "ctr run -d until RUNNING")
        ax.set_xlim(0, max([v or 0.0 for _, values in series for v in values] + [1.2]) * 1.15)
        ax.set_xlabel("median of pairwise ratios, later containers (1.0: as fast)", fontsize=8)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.09), ncol=2)
    fig.suptitle(f"ukrun beside urunc {urunc}: a container's whole life, one at a time, alternating")
    fig.subplots_adjust(left=0.16, right=0.98, wspace=0.55, top=0.9)
    return _save(fig, out, m, command)
