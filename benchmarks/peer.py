"""`make bench`'s peer step: a unikernel container's whole life through ukrun beside urunc, on the same images,
containerd and shim.

Runs only when the operator names a urunc binary (`--urunc PATH` or `UKRUN_BENCH_URUNC=PATH`): the project
never builds or ships urunc. Without one it prints how to enable it and records the section as skipped.

Method, so that the figures mean what a user sees:
- one private containerd per version asked for (`--containerd 1.7,2`), blockfile, the stock runc v2 shim
  with `--runc-binary` for all three runtimes; urunc's monitors and syslog as testbed.peer sets them up;
- the same images for both (testbed.peer: urunc-style packing), and runc with busybox as the floor;
- `ctr run --rm` end to end (the output and the exit code checked), and `ctr run -d` until `ctr task ls`
  shows the task started (RUNNING, or STOPPED for a guest that has already finished), then killed and
  deleted before the next: ONE container at a time, nothing left running between runs;
- rounds alternate the runtimes (ukrun, urunc, runc), so that the machine's drift hits them alike; ratios
  are taken pair by pair within a round, and their median is quoted;
- each mode uses its own variant of every image (a distinct artifact layer), and the first container of
  a variant (index 0: ukrun has no view of it yet) is reported apart from the later ones;
- containerd's events give the lifecycle intervals (testbed.events); ukrun's timing log its own verbs.
`--json PATH` writes every sample (benchmarks.results.PeerResult) for the report.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

from benchmarks import compile_ukrun
from benchmarks.peerstats import HELPED
from benchmarks.results import PeerResult, PeerSample, command_line, dump
from testbed import containerd as ctd
from testbed import host as tbhost
from testbed import peer
from testbed.events import EventLog, intervals

UKRUN = str(Path(sys.executable).parent / "ukrun")
# What the compiled front (src/front) execs when no helper serves a call; with no compiled front, ukrun itself.
PYTHON_LAUNCHER = UKRUN + "-python" if Path(UKRUN + "-python").exists() else UKRUN
NS = "peer"
ENV = "UKRUN_BENCH_URUNC"
SKIP = (f"Not run: no urunc binary named. Name one with `{ENV}=/path/to/urunc make bench` (or "
        "`python -m benchmarks.peer --urunc /path/to/urunc`); the project never builds or ships urunc.")
MODES = ("rm", "detach")
TIMEOUT = 180  # seconds for one ctr run: a linux guest boots in 5-40 s under TCG here


class Lane(NamedTuple):
    runtime: str  # ukrun, urunc, runc, or the name of another ukrun build (--build)
    binary: str
    namespace: str = NS
    timing: Path | None = None  # ukrun's timing log


class Bench:
    """One daemon's runs."""

    def __init__(self, daemon: ctd.Daemon, work: Path) -> None:
        self.daemon, self.work = daemon, work
        self.events = EventLog(daemon.bin_dir / "ctr", daemon.address, daemon.env())
        self.samples: list[PeerSample] = []

    def ctr(self, ns: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.daemon.bin_dir / "ctr"), "--address", self.daemon.address, "--namespace",
                               ns, *args], capture_output=True, text=True, env=self.daemon.env(), timeout=timeout)

    def status(self, ns: str, cid: str) -> str:
        for line in self.ctr(ns, "task", "ls").stdout.splitlines()[1:]:
            fields = line.split()
            if fields and fields[0] == cid:
                return fields[-1]
        return ""

    def run(self, lane: Lane, image: peer.PeerImage, mode: str, index: int, key: str) -> PeerSample:
        """One container of `image` through `lane`, in the round of image `key`."""
        ns, cid = lane.namespace, f"{lane.runtime}-{key}-{mode}-{index}"
        flags = ("--rm",) if mode == "rm" else ("--detach",)
        args = image.args
        if mode == "detach":  # until RUNNING: a guest that keeps running where it can
            args = ("/bin/busybox", "sleep", "600") if args else ("sleep",) if image.key.startswith("linux") else ()
        cmd = ["run", "--snapshotter", "blockfile", "--runc-binary", lane.binary, "--runc-root",
               str(self.work / "runc" / lane.runtime), "--fifo-dir", str(self.work / "fifo"), *flags, image.name,
               cid, *args]
        t0 = time.perf_counter()
        try:
            proc = self.ctr(ns, *cmd, timeout=TIMEOUT)
        except subprocess.TimeoutExpired:  # a hung runtime: a failed container, not a failed benchmark
            proc = subprocess.CompletedProcess(cmd, -1, "", f"ctr run did not return within {TIMEOUT} s")
        if mode == "rm":
            wall = (time.perf_counter() - t0) * 1000
            ok = proc.returncode == 0 and image.expect in proc.stdout
        else:
            ok = proc.returncode == 0
            while ok and self.status(ns, cid) not in ("RUNNING", "STOPPED"):
                time.sleep(0.002)
            wall = (time.perf_counter() - t0) * 1000
            self.ctr(ns, "task", "kill", "-s", "SIGKILL", cid)
            deadline = time.monotonic() + 30
            while self.status(ns, cid) not in ("STOPPED", "") and time.monotonic() < deadline:
                time.sleep(0.01)
            self.ctr(ns, "task", "delete", cid)
            self.ctr(ns, "containers", "delete", cid)
        note = "" if ok else (proc.stderr.strip() or proc.stdout.strip())[-300:]
        self.events.settle(cid, "/containers/delete")
        clean = self.clean_up(ns, cid)
        sample = PeerSample(self.daemon.version, mode, key, lane.runtime, index, wall, ok, clean,
                            intervals(self.events.of(cid)), ukrun_phases(lane.timing, cid), note)
        self.samples.append(sample)
        return sample

    def clean_up(self, ns: str, cid: str) -> bool:
        """Whether the usual commands left nothing of the container; removes what they left, by force."""
        left = cid in self.ctr(ns, "containers", "ls", "-q").stdout.split() or self.status(ns, cid) != ""
        if left:
            self.ctr(ns, "task", "kill", "-s", "SIGKILL", cid)
            self.ctr(ns, "task", "delete", "--force", cid)
            self.ctr(ns, "containers", "delete", cid)
        return not left and not monitors_below(self.work)

    def close(self) -> None:
        self.events.close()


def monitors_below(folder: Path) -> list[int]:
    """Monitor processes (qemu, Solo5 tenders) whose command line or working folder lies below `folder`:
    ukrun's name the state root's views, urunc's run in the container's rootfs with relative paths."""
    out = []
    for entry in Path("/proc").iterdir():
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0") if entry.name.isdigit() else []
            cwd = os.readlink(entry / "cwd") if args else ""
        except OSError:
            continue
        if any(os.path.basename(a).startswith((b"qemu-system", b"solo5-")) for a in args[:1]) and (
                cwd.startswith(str(folder)) or any(str(folder).encode() in a for a in args)):
            out.append(int(entry.name))
    return out


def ukrun_phases(timing: Path | None, cid: str) -> dict[str, float]:
    """ms from each ukrun verb's first mark to its last, for one container (its timing log)."""
    if timing is None or not timing.exists():
        return {}
    spans: dict[str, list[int]] = {}
    for line in timing.read_text().splitlines():
        mark = json.loads(line)
        if mark["container"] == cid:
            spans.setdefault(mark["verb"], []).append(mark["ns"])
    return {verb: (max(ns) - min(ns)) / 1e6 for verb, ns in spans.items() if verb != "init"}


def ukrun_lane(work: Path, name: str, binary: str, qemu: str, ns: str, wrap: bool) -> tuple[Lane, Path]:
    """A ukrun lane and its configuration: the real qemu (not the wrapper on containerd's PATH) and the
    tenders, with urunc's default memory (256 MiB) on every monitor; its own state root. With `wrap`, the
    shim runs a launcher that names its configuration (two ukrun lanes cannot share containerd's) and no
    helper: the verbs run in the shim's ukrun. Without, the lane's settings must be containerd's."""
    from testbed.unikernels import SOLO5

    state = work / name
    state.mkdir(parents=True, exist_ok=True)
    text = (f'[artifacts]\nstate_root = "{state}"\n[timing]\nlog = "{state}/timing.jsonl"\n'
            f'[monitors.qemu]\npath = "{qemu}"\ndefault_memory_mb = 256\n')
    for monitor in ("spt", "hvt"):
        text += f'[monitors.{monitor}]\npath = "{SOLO5 / f"solo5-{monitor}"}"\ndefault_memory_mb = 256\n'
    config = state / "ukrun.toml"
    config.write_text(text)
    if wrap:
        wrapper = state / "ukrun"
        wrapper.write_text(lane_launcher(binary, {"UKRUN_CONFIG": str(config), "UKRUN_HELPER": "/nonexistent"}))
        wrapper.chmod(0o755)
        binary = str(wrapper)
    return Lane(name, binary, ns, state / "timing.jsonl"), config


def lane_launcher(binary: str, env: dict[str, str]) -> str:
    """An entry point that runs `binary` with `env` added. A Python launcher (scripts/setup writes one) is
    copied with the settings put first, so the shim starts one interpreter per call, as ukrun deployed does;
    anything else goes through `sh`, which would cost each of the shim's calls about 0.7 ms more here."""
    with open(binary, "rb") as f:
        head, _, body = f.read(64 << 10).partition(b"\n")
    if not (head.startswith(b"#!") and b"python" in head):
        settings = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        return f'#!/bin/sh\n{settings} exec {shlex.quote(binary)} "$@"\n'
    settings = "".join(f"posix.putenv({k.encode()!r}, {v.encode()!r})\nposix.environ[{k.encode()!r}] = {v.encode()!r}\n"
                       for k, v in env.items())
    return f"{head.decode()}\nimport posix\n{settings}{body.decode()}"


def start_helper(sock: Path, log: Path) -> subprocess.Popen[bytes]:
    """`ukrun helper` on `sock`, stopped by its PID after the runs."""
    with open(log, "ab") as out:
        proc = subprocess.Popen([UKRUN, "helper", "--socket", str(sock)], stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while not sock.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"ukrun helper did not start: {log.read_text()[-500:]}")
        time.sleep(0.05)
    return proc


def bench_daemon(version: str, work: Path, opts: argparse.Namespace) -> list[PeerSample]:
    qemu = peer.real_qemu()
    bins = peer.monitor_dir(work / "bin", qemu)
    builds = [b.partition("=")[::2] for b in opts.build]
    wrap = bool(builds) or opts.helper
    main_lane, config = ukrun_lane(work, "ukrun", PYTHON_LAUNCHER if wrap else UKRUN, qemu, NS, wrap)
    lanes = [main_lane, *(ukrun_lane(work, name, str(Path(path).resolve()), qemu, f"{NS}-{name}", True)[0]
                          for name, path in builds)]
    helper, env = None, {}
    if opts.helper:  # the same ukrun, its verbs served by its resident helper, as deployed: the settings are
        sock = work / "helper" / "helper.sock"  # containerd's, so the shim runs ukrun itself, not a wrapper
        helped, config = ukrun_lane(work, HELPED, UKRUN, qemu, f"{NS}-helper", False)
        lanes.append(helped)
        helper, env = start_helper(sock, work / "helper.log"), {"UKRUN_HELPER": str(sock)}
    lanes += [Lane("urunc", opts.urunc), Lane("runc", "runc")]
    path = f"{bins}:{Path(opts.urunc).parent}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"
    daemon = ctd.start(version, work / "d", env={"PATH": path, "UKRUN_CONFIG": str(config), **env})
    bench = Bench(daemon, work)
    namespaces = sorted({lane.namespace for lane in lanes})
    try:
        floor = peer.busybox_image(work / "img")
        for mode in opts.modes.split(","):
            chosen = [i for i in [*peer.images(work / "img", mode), peer.linux_image(work / "img", mode)]
                      if not opts.images or i.key in opts.images.split(",")]
            for image in [floor, *chosen]:
                for ns in namespaces:
                    daemon.import_image(ns, image.tar)
            for image in chosen:
                for i in range(opts.runs):
                    for lane in lanes:
                        if lane.runtime == "urunc" and not image.urunc:
                            continue
                        s = bench.run(lane, floor if lane.runtime == "runc" else image, mode, i, image.key)
                        print(f"  {version} {mode:<6} {image.key:<14} {lane.runtime:<12} #{i} {s.wall_ms:7.0f} ms"
                              f"{'' if s.ok else ' FAILED'}{'' if s.clean else ' (left something)'} "
                              + " ".join(f"{k}={v:.0f}" for k, v in s.intervals_ms.items()), flush=True)
        return bench.samples
    finally:
        bench.close()
        for ns in namespaces:
            for line in bench.ctr(ns, "task", "ls").stdout.splitlines()[1:]:
                bench.ctr(ns, "task", "delete", "--force", line.split()[0])
            for cid in bench.ctr(ns, "containers", "ls", "-q").stdout.split():
                bench.ctr(ns, "containers", "delete", cid)
        for lane in lanes:
            if lane.timing is not None:  # its idle views too: nothing stays mounted
                subprocess.run([UKRUN, "--state-root", str(lane.timing.parent), "gc", "--idle"], capture_output=True,
                               env={**daemon.env(), "CONTAINERD_NAMESPACE": lane.namespace,
                                    "UKRUN_CONFIG": str(lane.timing.parent / "ukrun.toml")})
        tbhost.unmount_below(work)
        ctd.stop(daemon.dir)
        if helper is not None:
            helper.terminate()
            helper.wait(timeout=30)


def table(samples: list[PeerSample], titles: dict[str, str]) -> list[str]:
    """The printed table, one line per (containerd, mode, image)."""
    from benchmarks.peerstats import rows

    out = []
    for r in rows(samples):
        out.append(f"{r.containerd:<6} {r.mode:<6} {titles.get(r.image, r.image):<44} first: ukrun "
                   f"{_f(r.first.get('ukrun'))} urunc {_f(r.first.get('urunc'))}  later: ukrun "
                   f"{_f(r.later.get('ukrun'))} urunc "
                   f"{_f(r.later.get('urunc'))} runc {_f(r.later.get('runc'))}  ukrun/urunc {_r(r.ratio_urunc)}"
                   f" ukrun/runc {_r(r.ratio_runc)}"
                   + "".join(f"  ukrun/{b} {_r(later)} (first {_r(first)})" for b, (first, later) in
                             (r.builds or {}).items())
                   + (f"  {HELPED}/urunc {_r(r.helped[0])} /runc {_r(r.helped[1])}" if r.helped else ""))
        out.append("       intervals (later, median ms): " + "; ".join(
            f"{rt} " + " ".join(f"{k}={v:.0f}" for k, v in iv.items()) for rt, iv in r.intervals.items() if iv)
                   + ("; ukrun verbs " + " ".join(f"{k}={v:.0f}" for k, v in r.phases.items()) if r.phases else ""))
    return out


def _f(v: float | None) -> str:
    return "     -" if v is None else f"{v:6.0f}"


def _r(v: float | None) -> str:
    return "   -" if v is None else f"{v:4.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--urunc", default=os.environ.get(ENV, ""), help=f"urunc's binary (also {ENV})")
    parser.add_argument("--runs", type=int, default=8, help="containers per image and runtime, the first included")
    parser.add_argument("--containerd", default="1.7", help=f"comma list of {', '.join(ctd.VERSIONS)}")
    parser.add_argument("--modes", default=",".join(MODES), help="comma list of rm (ctr run --rm), detach (-d)")
    parser.add_argument("--images", default="", help=f"comma list of {', '.join(peer.TITLES)} (default: all)")
    parser.add_argument("--build", action="append", default=[], metavar="NAME=PATH",
                        help="another ukrun binary (an earlier build), timed as a lane of its own beside this "
                             "checkout's: before/after figures of a change (repeatable)")
    parser.add_argument("--helper", action="store_true",
                        help=f"also time ukrun with its resident helper (`ukrun helper`), as the lane {HELPED}")
    parser.add_argument("--json", type=Path, help="write every sample here (benchmarks.results)")
    opts = parser.parse_args()
    for name, _, path in (b.partition("=") for b in opts.build):
        if name in ("ukrun", HELPED, "urunc", "runc") or not name.isalnum() or not path:
            parser.error(f"--build {name}={path}: name another ukrun build (letters and digits: a part of container "
                         "IDs) and its binary")
    if not opts.urunc:
        print(SKIP)
        if opts.json:
            dump(PeerResult(command_line(), "", opts.runs, {}, [], SKIP), opts.json)
        return 0
    if os.geteuid() != 0:
        print("the benchmark needs root (mounts, loop devices, containerd)", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, lambda _s, _f: sys.exit(143))  # a stopped run still cleans up after itself
    opts.urunc = str(Path(opts.urunc).resolve())
    version = peer.version(opts.urunc)
    compile_ukrun()
    print(f"urunc {version} beside ukrun, blockfile, the stock runc v2 shim; {opts.runs} rounds per image")
    samples: list[PeerSample] = []
    titles = dict(peer.TITLES)
    with peer.Syslog():
        for v in opts.containerd.split(","):
            work = Path(tempfile.mkdtemp(prefix="ukrun-bench-peer-"))
            try:
                samples += bench_daemon(v, work, opts)
            finally:
                subprocess.run(["rm", "-rf", "--one-file-system", str(work)], check=False)
    for line in table(samples, titles):
        print(line)
    if opts.json:
        dump(PeerResult(command_line(), version, opts.runs, titles, samples), opts.json)
    failed = [s for s in samples if s.runtime == "ukrun" and not (s.ok and s.clean)]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
