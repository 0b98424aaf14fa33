"""Many containers of the linux guest at once, through `ctr` and the stock shim with ukrun as its runtime.

Why: the load benchmark starts, lists and removes dozens of containers concurrently, exactly as a node
would, and must then prove that nothing stayed. What must stay true: every command goes through `ctr`
(never ukrun's internals), the only processes ever signalled are the ones this daemon's tasks own (by
`ctr task kill`), and `leftovers` looks only below the daemon's folder and the state root given.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from testbed import containerd as ctd
from testbed import host as tbhost
from ukrun import host
from ukrun.containerd.client import Client

UKRUN = str(Path(sys.executable).parent / "ukrun")
T = TypeVar("T")


def ukrun_config(path: Path, state_root: Path, memory_mb: int = 256) -> Path:
    """A ukrun configuration whose state and timing log live under `state_root`; views are released with
    their last user (`idle = 0`), so that "nothing left" after the fleet means nothing."""
    path.write_text(f'[artifacts]\nstate_root = "{state_root}"\nidle = 0\n[timing]\nlog = "{state_root}/timing.jsonl"\n'
                    f"[monitors.qemu]\ndefault_memory_mb = {memory_mb}\n")
    return path


def each(items: Sequence[str], fn: Callable[[str], T]) -> list[T]:
    """`fn` on every item at once, one thread each: as many concurrent clients as items."""
    with ThreadPoolExecutor(max_workers=max(1, len(items))) as pool:
        return list(pool.map(fn, items))


class Fleet:
    def __init__(self, daemon: ctd.Daemon, ns: str, work: Path, state_root: Path,
                 snapshotter: str = "blockfile") -> None:
        self.daemon, self.ns, self.state_root, self.snapshotter = daemon, ns, state_root, snapshotter
        self.runc_root, self.fifo_dir, self.console_dir = work / "runc", work / "fifo", work / "console"

    def ctr(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.daemon.bin_dir / "ctr"), "--address", self.daemon.address, "--namespace", self.ns, *args]
        return subprocess.run(cmd, capture_output=True, text=True, env=self.daemon.env(), timeout=timeout)

    def run_detached(self, cid: str, image: str, *args: str) -> subprocess.CompletedProcess[str]:
        """`ctr run --detach`; the guest's console goes to `console(cid)`."""
        self.console_dir.mkdir(parents=True, exist_ok=True)
        return self.ctr("run", "--detach", "--snapshotter", self.snapshotter, "--runc-binary", UKRUN,
                        "--runc-root", str(self.runc_root), "--fifo-dir", str(self.fifo_dir),
                        "--log-uri", f"file://{self.console(cid)}", image, cid, *args)

    def console(self, cid: str) -> Path:
        return self.console_dir / f"{cid}.log"

    def console_tail(self, cid: str, lines: int = 3) -> str:
        path = self.console(cid)
        text = path.read_text(errors="replace").strip().splitlines() if path.exists() else []
        return " | ".join(text[-lines:]) or "(no console output)"

    def statuses(self) -> dict[str, str]:
        out = {}
        for line in self.ctr("task", "ls").stdout.splitlines()[1:]:
            fields = line.split()
            if fields:
                out[fields[0]] = fields[-1]
        return out

    def wait_all(self, ids: Sequence[str], status: str, timeout: float, *, absent_ok: bool = False) -> list[str]:
        """Waits until every task in `ids` has `status` (or, with `absent_ok`, has no task at all);
        returns those that never got there."""
        deadline = time.monotonic() + timeout
        while True:
            now = self.statuses()
            missing = [cid for cid in ids if now.get(cid) != status and not (absent_ok and cid not in now)]
            if not missing or time.monotonic() > deadline:
                return missing
            time.sleep(0.2)

    def views(self) -> list[dict[str, object]]:
        out = subprocess.run([UKRUN, "--state-root", str(self.state_root), "view", "ls", "--json"],
                             capture_output=True, text=True, check=True,
                             env={**self.daemon.env(), "CONTAINERD_NAMESPACE": self.ns})
        return list(json.loads(out.stdout))

    def remove(self, ids: Sequence[str], timeout: float = 300) -> list[str]:
        """Kills every task at once, waits for them to stop, deletes tasks and containers at once;
        returns what failed."""
        live = [cid for cid in ids if cid in self.statuses()]  # a failed `ctr run` left no task
        problems = [f"kill {cid}: {p.stderr.strip()}" for cid, p in
                    zip(live, each(live, lambda c: self.ctr("task", "kill", "-s", "SIGKILL", c)), strict=True)
                    if p.returncode]
        # A container whose `ctr run` failed has no task: nothing to wait for.
        problems += [f"{cid} never stopped" for cid in self.wait_all(ids, "STOPPED", timeout, absent_ok=True)]

        tasks = self.statuses()

        def delete(cid: str) -> str:
            steps = [self.ctr("task", "delete", cid)] if cid in tasks else []
            steps.append(self.ctr("containers", "delete", cid))
            return "; ".join(f"{cid}: {p.stderr.strip()}" for p in steps if p.returncode)

        return problems + [p for p in each(ids, delete) if p]

    def leftovers(self) -> list[str]:
        """What stayed after every container went: views, mounts, loop devices, leases, monitors."""
        out = [f"view {v.get('key', v)}" for v in self.views()]
        out += [f"mount {m.mount_point}" for m in host.mountinfo() if m.mount_point.startswith(str(self.state_root))]
        out += [f"loop {d}" for d, b in host.loop_devices().items() if b.startswith(str(self.daemon.dir) + "/")]
        with Client(self.daemon.address, self.ns) as c:
            out += [f"lease {lease}" for lease in c.list_leases(['labels."ukrun.io/acquire"'])]
            out += [f"view snapshot {s}" for s in c.list_snapshots(self.snapshotter, ["kind==view"])]
        out += [f"monitor {pid}" for pid in self.monitors()]
        out += [f"state dir {p.name}" for p in (self.runc_root / self.ns).glob("*") if p.is_dir()]
        out += [f"container {c}" for c in self.ctr("containers", "ls", "-q").stdout.split()]
        return out

    def monitors(self) -> list[int]:
        """qemu processes using this daemon's snapshots."""
        return tbhost.qemu_processes(self.daemon.dir)

    def create_ms(self, ids: Sequence[str]) -> list[float]:
        return create_ms(self.state_root / "timing.jsonl", ids)


def create_ms(timing_log: Path, ids: Sequence[str]) -> list[float]:
    """Each container's `create`, from its start to its end, in ukrun's timing log (the finished ones)."""
    marks = [json.loads(line) for line in timing_log.read_text().splitlines()]
    out = []
    for cid in ids:
        mine = {m["phase"]: m["ns"] for m in marks if m["container"] == cid and m["verb"] == "create"}
        if "start" in mine and "done" in mine:
            out.append((mine["done"] - mine["start"]) / 1e6)
    return out
