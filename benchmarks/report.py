"""`make bench`: every benchmark in one go, then docs/performance.md and the plots under docs/plots/.

Why: the figures the README quotes must come from one run of one command on a named machine, each
beside the command that produced it. The steps are the artifact benchmark on blockfile (across
artifact sizes, then across container counts), the same benchmark on devmapper inside the qemu guest
(its ratios), the runtime benchmark (start latency and verb costs beside runc), the peer benchmark (a
container's whole life beside urunc, run only when the operator names a urunc binary with
UKRUN_BENCH_URUNC; otherwise the page says how to enable it) and the load benchmark.
Each writes a JSON result (benchmarks.results) into the results folder; the page and the plots are
drawn from those files only, so `--from-results` redraws them without running anything.

What must stay true: a step that fails still lets the others run, the page says which failed, and
`make bench` then exits non-zero; `BENCH_QUICK=1` (small sizes and counts, no devmapper guest) is for
iterating and its page says so at the top: the committed page comes from a full run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from benchmarks import page
from benchmarks.page import STEPS
from benchmarks.results import dump, machine

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Step:
    name: str
    module: str
    args: list[str]

    def shown(self) -> str:
        """The command as a reader types it in the repository (the JSON option left out)."""
        return " ".join(["python -m", self.module, *self.args])


def plan(quick: bool) -> list[Step]:
    if quick:
        return [Step("artifacts-sizes", "benchmarks.artifacts", ["--sizes", "8,64", "--containers", "5"]),
                Step("artifacts-counts", "benchmarks.artifacts", ["--sizes", "8", "--containers", "1,5,10"]),
                Step("devmapper", "testbed.dmguest", ["bench", "--sizes", "8", "--containers", "3"]),
                Step("runtime", "benchmarks.runtime", ["--runs", "3"]),
                Step("peer", "benchmarks.peer", ["--runs", "3", "--helper"]),
                Step("load", "benchmarks.load", ["--containers", "5", "--images", "2"])]
    return [Step("artifacts-sizes", "benchmarks.artifacts", ["--sizes", "8,64,512", "--containers", "20"]),
            Step("artifacts-counts", "benchmarks.artifacts", ["--sizes", "64", "--containers", "1,5,20,50"]),
            Step("devmapper", "testbed.dmguest", ["bench", "--sizes", "8,64", "--containers", "5"]),
            Step("runtime", "benchmarks.runtime", ["--runs", "15"]),
            Step("peer", "benchmarks.peer", ["--runs", "8", "--containerd", "1.7,2", "--helper"]),
            Step("load", "benchmarks.load", ["--containers", "50", "--images", "5"])]


def run_step(step: Step, results: Path) -> int:
    """Runs one benchmark as its own process, its output shown and kept beside its JSON."""
    out = results / f"{step.name}.json"
    out.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", step.module, *step.args, "--json", str(out)]
    print(f"\n=== {step.name}: {step.shown()}", flush=True)
    with open(results / f"{step.name}.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            log.write(line)
        status = proc.wait()
    print(f"=== {step.name}: exit status {status}", flush=True)
    return status


def containerd_versions() -> dict[str, str]:
    from testbed import containerd as ctd

    out = {}
    for v in ctd.VERSIONS:
        try:
            out[v] = ctd.installed_version(v)
        except RuntimeError:
            out[v] = "not installed"
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", default=os.environ.get("BENCH_QUICK", "") not in ("", "0"),
                        help="small sizes and counts, no devmapper guest (also BENCH_QUICK=1)")
    parser.add_argument("--only", default=os.environ.get("BENCH_ONLY", ""),
                        help=f"comma list of steps to run, of {', '.join(STEPS)} (also BENCH_ONLY)")
    parser.add_argument("--results", type=Path, default=REPO / "build" / "bench", help="where the JSON goes")
    parser.add_argument("--docs", type=Path, default=REPO / "docs", help="where the page and plots go")
    parser.add_argument("--from-results", action="store_true", help="draw from the results folder, run nothing")
    args = parser.parse_args()
    steps = plan(args.quick)
    only = [s for s in args.only.split(",") if s]
    unknown = sorted(set(only) - set(STEPS))
    if unknown:
        parser.error(f"unknown steps {unknown}; known: {', '.join(STEPS)}")
    if args.quick and not only:
        only = [s for s in STEPS if s != "devmapper"]
    args.results.mkdir(parents=True, exist_ok=True)
    status: dict[str, int] = {}
    if not args.from_results:
        if os.geteuid() != 0:
            print("the benchmarks need root (mounts, loop devices, containerd)", file=sys.stderr)
            return 1
        date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        record = args.results / "run.json"
        if not only or not (args.results / "machine.json").exists():  # a partial run keeps the full run's date
            dump(machine(containerd_versions(), date), args.results / "machine.json")
        # A partial run keeps what earlier runs recorded for the other steps.
        run = json.loads(record.read_text()) if only and record.exists() else {"steps": {}}
        run["quick"] = args.quick or bool(run.get("quick"))
        for step in steps:
            if not only or step.name in only:
                status[step.name] = run_step(step, args.results)
                run["steps"][step.name] = {"command": step.shown(), "status": status[step.name], "date": date}
        record.write_text(json.dumps(run, indent=1) + "\n")
    written = page.write(args.results, args.docs)
    print(f"\nwrote {written} and its plots under {args.docs / 'plots'}")
    failed = {k: v for k, v in status.items() if v}
    if failed:
        print(f"failed steps: {failed}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
