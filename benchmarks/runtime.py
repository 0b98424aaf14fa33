"""`make bench-runtime`: ukrun's own overhead per verb, beside runc's, on this machine.

- container start: wall time of `ctr run -d` until the task runs, for a ukrun guest and a runc
  container on the same snapshotter, alternating, 7 runs each, ONE container at a time (each is killed
  and deleted before the next starts: guests left running would slow both sides alike and hide the
  ratio), the first container of the image (ukrun makes its view) reported apart from the later ones
  (which take the view over while it is idle); and ukrun's phases from its timing log, from the start
  of `create` to the exec of the monitor.
- each verb as the shim runs it (create, start, kill, delete), as a whole process, with its peak
  memory: the shim runs a small recorder as the runtime binary, which times the real runtime as its
  child (the recorder's own start, the same for both, is not counted).
- `state`: wall time of the whole process, ukrun vs runc, on a running container of each, 30 calls.
- `exec`: wall time of a whole `ctr task exec` of `true`, ukrun (inside the booted guest's VM) vs runc,
  alternating, EXECS calls each.
- import costs of the hot verbs, from `python -X importtime`.

`--runs` sets the number of alternating starts; `--json PATH` writes every figure printed
(benchmarks.results.RuntimeResult) for `make bench`'s report, which never reads the text.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks import compile_ukrun
from benchmarks.results import EXECS, RuntimeResult, VerbCost, command_line, dump
from testbed import containerd as ctd
from testbed import guest, images
from testbed import host as tbhost
from ukrun.image.build import Entry

UKRUN = str(Path(sys.executable).parent / "ukrun")
NS = "bench"
APP = "#!/bin/sh\nexec /bin/busybox sleep 600\n"
RECORDER = """#!{python}
import os, resource, subprocess, sys, time
verbs = ("create", "start", "kill", "delete", "state")
verb = next((a for a in sys.argv[1:] if a in verbs), "other")
t0 = time.perf_counter()
rc = subprocess.call([{target!r}, *sys.argv[1:]])
ms = (time.perf_counter() - t0) * 1000
kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
with open({log!r}, "a") as f:
    f.write(f"{{verb}} {{ms:.1f}} {{kib}}\\n")
sys.exit(rc)
"""


def recorder(work: Path, name: str, target: str) -> tuple[Path, Path]:
    log = work / f"{name}.verbs"
    path = work / f"record-{name}"
    path.write_text(RECORDER.format(python=sys.executable, target=target, log=str(log)))
    path.chmod(0o755)
    return path, log


def verb_costs(log: Path) -> dict[str, tuple[float, int]]:
    """verb -> (median ms, peak KiB) from a recorder's log."""
    rows: dict[str, list[tuple[float, int]]] = {}
    for line in log.read_text().splitlines() if log.exists() else []:
        verb, ms, kib = line.split()
        rows.setdefault(verb, []).append((float(ms), int(kib)))
    return {v: (statistics.median(r[0] for r in rs), max(r[1] for r in rs)) for v, rs in rows.items()}


def walls(cmds: list[list[str]], n: int) -> list[float]:
    """Median wall ms of each whole process, the commands alternating so that noise hits them alike."""
    times: list[list[float]] = [[] for _ in cmds]
    for _ in range(n):
        for cmd, mine in zip(cmds, times, strict=True):
            t0 = time.perf_counter()
            subprocess.run(cmd, capture_output=True, check=True)
            mine.append((time.perf_counter() - t0) * 1000)
    return [statistics.median(t) for t in times]


def exec_walls(ctr: Callable[..., subprocess.CompletedProcess[str]], fifo: Path) -> dict[str, float]:
    """Median wall ms of `ctr task exec` of `true` in ukrun-state (its guest booted first: the first exec waits
    for it) and in runc-state, alternating."""
    first = ctr("task", "exec", "--exec-id", "boot", "--fifo-dir", str(fifo), "ukrun-state", "/bin/busybox", "true")
    assert first.returncode == 0, first.stderr
    times: dict[str, list[float]] = {"ukrun": [], "runc": []}
    for i in range(EXECS):
        for kind in times:
            t0 = time.perf_counter()
            proc = ctr("task", "exec", "--exec-id", f"b{i}", "--fifo-dir", str(fifo), f"{kind}-state", "/bin/busybox",
                       "true")
            times[kind].append((time.perf_counter() - t0) * 1000)
            assert proc.returncode == 0, proc.stderr
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7, help="alternating ukrun/runc starts")
    parser.add_argument("--json", type=Path, help="write the figures here (benchmarks.results)")
    opts = parser.parse_args()
    runs: int = opts.runs
    if os.geteuid() != 0:
        print("the benchmark needs root", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="ukrun-bench-rt-"))
    state_root, timing = work / "state", work / "state" / "timing.jsonl"
    config = work / "ukrun.toml"
    config.write_text(f'[artifacts]\nstate_root = "{state_root}"\n[timing]\nlog = "{timing}"\n')
    compile_ukrun()
    daemon = ctd.start("2", work / "d", env={"UKRUN_CONFIG": str(config)})
    runc_root = work / "runc"

    def ctr(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(daemon.bin_dir / "ctr"), "-a", daemon.address, "-n", NS, *args],
                              capture_output=True, text=True, env=daemon.env())

    def running(cid: str) -> bool:
        return any(line.split()[:1] == [cid] and line.split()[-1] == "RUNNING"
                   for line in ctr("task", "ls").stdout.splitlines()[1:])

    def remove(cid: str) -> None:
        """Kills and deletes a container, and waits until it is gone: the next one starts alone."""
        ctr("task", "kill", "-s", "SIGKILL", cid)
        while running(cid):
            time.sleep(0.01)
        ctr("task", "delete", cid)
        ctr("containers", "delete", cid)

    try:
        daemon.import_image(NS, guest.linux_image(work / "img", "bench/guest:1", APP))
        plain = images.raw_image(work / "img", "bench/plain:1", [[
            Entry("/bin/busybox", source=Path("/bin/busybox"), mode=0o755), Entry("/bin/sh", symlink="busybox")]])
        daemon.import_image(NS, plain)
        starts: dict[str, list[float]] = {"ukrun": [], "runc": []}
        lanes = (("ukrun", "bench/guest:1", ["/bin/sh", "/app/run.sh"]),
                 ("runc", "bench/plain:1", ["/bin/busybox", "sleep", "600"]))

        def start(kind: str, image: str, args: list[str], cid: str) -> float:
            t0 = time.perf_counter()
            binary = UKRUN if kind == "ukrun" else "runc"
            proc = ctr("run", "-d", "--snapshotter", "blockfile", "--runc-binary", binary, "--runc-root",
                       str(runc_root / kind), "--fifo-dir", str(work / "fifo"), image, cid, *args)
            assert proc.returncode == 0, proc.stderr
            while not running(cid):
                time.sleep(0.002)
            return (time.perf_counter() - t0) * 1000

        for i in range(runs):
            for kind, image, args in lanes:
                starts[kind].append(start(kind, image, args, f"{kind}{i}"))
                remove(f"{kind}{i}")
        costs: dict[str, dict[str, tuple[float, int]]] = {}
        for kind, image, args, target in (("ukrun", "bench/guest:1", ["/bin/sh", "/app/run.sh"], UKRUN),
                                          ("runc", "bench/plain:1", ["/bin/busybox", "sleep", "600"], "runc")):
            rec, log = recorder(work, kind, target)
            for i in range(3):
                cid = f"rec-{kind}{i}"
                proc = ctr("run", "-d", "--snapshotter", "blockfile", "--runc-binary", str(rec), "--runc-root",
                           str(runc_root / f"rec-{kind}"), "--fifo-dir", str(work / "fifo"), image, cid, *args)
                assert proc.returncode == 0, proc.stderr
                while not running(cid):
                    time.sleep(0.005)
                ctr("task", "kill", "-s", "SIGKILL", cid)
                while running(cid):
                    time.sleep(0.01)
                ctr("task", "delete", cid)
                ctr("containers", "delete", cid)
            costs[kind] = verb_costs(log)
        for kind, image, args in lanes:  # one running container of each, for `state` and `exec`
            start(kind, image, args, f"{kind}-state")
        execs = exec_walls(ctr, work / "fifo")
        state_ukrun, state_runc, interpreter = walls([
            [UKRUN, "--root", str(runc_root / "ukrun" / NS), "state", "ukrun-state"],
            ["runc", "--root", str(runc_root / "runc" / NS), "state", "runc-state"],
            [sys.executable, "-c", "pass"]], 30)
        marks = [json.loads(line) for line in timing.read_text().splitlines()]
        phases: dict[str, list[float]] = {}
        for i in range(runs):
            mine = [m for m in marks if m["container"] == f"ukrun{i}"]
            base = next(m["ns"] for m in mine if m["verb"] == "create" and m["phase"] == "start")
            for m in mine:
                if m["verb"] in ("create", "init"):
                    phases.setdefault(f"{m['verb']}:{m['phase']}", []).append((m["ns"] - base) / 1e6)
        print(f"containerd {ctd.installed_version('2')}, blockfile; ukrun guest = linux under qemu TCG")
        print(f"state, whole process, median of 30:   ukrun {state_ukrun:6.1f} ms   runc {state_runc:6.1f} ms   "
              f"interpreter start (python -c pass) {interpreter:6.1f} ms")
        ratios = [u / r for u, r in zip(starts["ukrun"][1:], starts["runc"][1:], strict=True)] or [0.0]
        print(f"ctr run -d until RUNNING, one container at a time, alternating: first ukrun "
              f"{starts['ukrun'][0]:6.1f} ms  runc {starts['runc'][0]:6.1f} ms; later, median of {runs - 1}: "
              f"ukrun {statistics.median(starts['ukrun'][1:] or [0.0]):6.1f} ms   "
              f"runc {statistics.median(starts['runc'][1:] or [0.0]):6.1f} ms   ratio {statistics.median(ratios):.2f} "
              f"(pairwise median; min {min(ratios):.2f}, max {max(ratios):.2f})")
        print(f"ctr task exec of true, whole process, median of {EXECS} alternating: ukrun {execs['ukrun']:6.1f} ms   "
              f"runc {execs['runc']:6.1f} ms")
        print("each verb as the shim runs it, whole process, median of 3 (peak memory of the largest run):")
        for verb in ("create", "start", "kill", "delete"):
            u, r = costs["ukrun"].get(verb, (0.0, 0)), costs["runc"].get(verb, (0.0, 0))
            print(f"  {verb:<7} ukrun {u[0]:7.1f} ms {u[1] / 1024:6.1f} MiB   "
                  f"runc {r[0]:7.1f} ms {r[1] / 1024:6.1f} MiB   difference {u[0] - r[0]:+7.1f} ms   "
                  f"{u[0] / interpreter:4.1f}x the interpreter's start")
        print("ukrun phases after the start of create (median ms; init:monitor-exec waits for start):")
        for name, values in sorted(phases.items(), key=lambda kv: statistics.median(kv[1])):
            print(f"  {name:<24} {statistics.median(values):8.1f}")
        imports: dict[str, float] = {}
        for verb in ("state", "start", "kill"):
            extra = ["0"] if verb == "kill" else []
            imp = subprocess.run([sys.executable, "-X", "importtime", "-m", "ukrun", "--root",
                                  str(runc_root / "ukrun" / NS), verb, "ukrun-state", *extra],
                                 capture_output=True, text=True)
            rows = [line.split("|") for line in imp.stderr.splitlines() if line.startswith("import time:")]
            total = sum(int(r[0].split(":")[1]) for r in rows if r[0].split(":")[1].strip().isdigit())
            heavy = [r[2].strip() for r in rows if r[2].strip() in ("grpc", "google.protobuf", "logging", "tomllib")]
            imports[verb] = total / 1000
            print(f"imports for {verb:<5} (interpreter start included): {total / 1000:5.1f} ms; "
                  f"grpc/protobuf/logging/tomllib: {heavy or 'none'}")
        if opts.json:
            verbs = [VerbCost(v, *costs["ukrun"].get(v, (0.0, 0)), *costs["runc"].get(v, (0.0, 0)))
                     for v in ("create", "start", "kill", "delete")]
            dump(RuntimeResult(ctd.installed_version("2"), command_line(), starts, verbs,
                               {"ukrun": state_ukrun, "runc": state_runc},
                               {k: statistics.median(v) for k, v in phases.items()}, imports, interpreter,
                               execs), opts.json)
        return 0
    finally:
        for line in ctr("task", "ls").stdout.splitlines()[1:]:
            cid = line.split()[0]
            ctr("task", "kill", "-s", "SIGKILL", cid)
        time.sleep(1)
        for line in ctr("task", "ls").stdout.splitlines()[1:]:
            ctr("task", "delete", "--force", line.split()[0])
        for line in ctr("containers", "ls", "-q").stdout.split():
            ctr("containers", "delete", line)
        subprocess.run([UKRUN, "--state-root", str(state_root), "gc", "--idle"], capture_output=True,
                       env={**daemon.env(), "CONTAINERD_NAMESPACE": NS, "UKRUN_CONFIG": str(config)})
        tbhost.unmount_below(work)
        ctd.stop(daemon.dir)
        subprocess.run(["rm", "-rf", "--one-file-system", str(work)], check=False)


if __name__ == "__main__":
    sys.exit(main())
