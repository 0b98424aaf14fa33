"""ps, pause, resume, update and events: what runc does to a container through its cgroups, done to the
cgroups that hold a unikernel's init, its monitor, its virtiofsd and its execs' host processes.

- `ps` lists those processes (runc's `ps`: the cgroup's PIDs; a table filtered from `ps`'s output).
- `pause` freezes the cgroup (v1 freezer, else v2 `cgroup.freeze`), which stops the VM's vCPUs with the
  monitor; `resume` thaws it. The record remembers it, so `state` says "paused".
- `update` applies CPU (quota and period, shares or weight, cpuset) and pids limits to the cgroup: the
  monitor's host CPU time is what they limit, whatever vCPUs the guest has. A guest's memory is fixed
  when its VM starts (`-m`; no monitor here resizes a running guest), so a memory limit other than
  the one it started with is refused, naming the fix; everything else in the resources is ignored.
- `events` prints runc's stats event (CPU, memory, pids), once with --stats, else every interval
  until the container stops.
"""

from __future__ import annotations

import json
import os
import time

from ukrun.errors import UkrunError
from ukrun.runtime import state as st

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

MIB = 1 << 20


def pids(record: st.ContainerState) -> list[int]:
    """The container's processes: its cgroups' members, else the init and its descendants."""
    found: set[int] = set()
    for folder in record.cgroups:
        try:
            with open(os.path.join(folder, "cgroup.procs")) as f:
                found.update(int(p) for p in f.read().split())
        except OSError:
            continue
    if not found and st.alive(record):
        pending = [record.pid]
        while pending:
            pid = pending.pop()
            found.add(pid)
            try:
                tasks = os.listdir(f"/proc/{pid}/task")
            except OSError:
                continue
            for tid in tasks:
                try:
                    with open(f"/proc/{pid}/task/{tid}/children") as f:
                        pending += [int(c) for c in f.read().split()]
                except OSError:
                    continue
    return sorted(found)


def ps(root: str, container_id: str, fmt: str, ps_args: list[str]) -> str:
    record = st.load(root, container_id)
    found = pids(record)
    if fmt == "json":
        return json.dumps(found) + "\n"
    import subprocess

    out = subprocess.run(["ps", *(ps_args or ["-ef"])], capture_output=True, text=True)
    if out.returncode != 0:
        raise UkrunError(f"ps {' '.join(ps_args)} failed: {out.stderr.strip() or out.returncode}")
    lines = out.stdout.splitlines()
    titles = lines[0].split() if lines else []
    if "PID" not in titles:
        raise UkrunError(f"ps {' '.join(ps_args)} prints no PID column")
    col = titles.index("PID")
    kept = [line for line in lines[1:] if len(line.split()) > col and line.split()[col].isdigit()
            and int(line.split()[col]) in found]
    return "\n".join([lines[0], *kept]) + "\n"


def _write(folder: str, name: str, value: str, what: str, container_id: str) -> None:
    try:
        with open(os.path.join(folder, name), "w") as f:
            f.write(value)
    except OSError as exc:
        raise UkrunError(f"cannot set {what} of container {container_id} ({folder}/{name} = {value}): "
                         f"{exc.strerror}") from None


def _read(folder: str, name: str) -> str:
    try:
        with open(os.path.join(folder, name)) as f:
            return f.read().strip()
    except OSError:
        return ""


def freezer(record: st.ContainerState) -> tuple[list[str], str, tuple[str, str]]:
    """The folders that freeze the container, the file, and its (frozen, thawed) values: cgroup v1's
    freezer where there is one, else v2's cgroup.freeze."""
    v1 = [f for f in record.cgroups if os.path.exists(os.path.join(f, "freezer.state"))]
    if v1:
        return v1, "freezer.state", ("FROZEN", "THAWED")
    v2 = [f for f in record.cgroups if os.path.exists(os.path.join(f, "cgroup.freeze"))]
    return v2, "cgroup.freeze", ("1", "0")


def freeze(root: str, container_id: str, frozen: bool) -> None:
    record = st.load(root, container_id)
    verb = "pause" if frozen else "resume"
    if not st.alive(record):
        raise UkrunError(f"container {container_id} is not running: there is nothing to {verb}")
    if record.paused == frozen:
        raise UkrunError(f"container {container_id} is {'already paused' if frozen else 'not paused'}")
    set_frozen(record, frozen)
    record.paused = frozen
    st.save(root, record)


def set_frozen(record: st.ContainerState, frozen: bool) -> None:
    folders, name, values = freezer(record)
    if not folders:
        raise UkrunError(f"container {record.id} has no freezer cgroup (its spec names no cgroupsPath): ukrun "
                         "pauses a container by freezing its cgroup")
    want = values[0] if frozen else values[1]
    for folder in folders:
        _write(folder, name, want, "the freezer state", record.id)
    deadline = time.monotonic() + 5
    while any(_state(f, name) != want for f in folders):
        if time.monotonic() > deadline:
            for folder in folders:
                _write(folder, name, values[1], "the freezer state", record.id)
            raise UkrunError(f"container {record.id} did not freeze within 5 s; it was thawed again")
        time.sleep(0.005)


def _state(folder: str, name: str) -> str:
    if name == "freezer.state":
        return _read(folder, name)
    events = dict(line.split(" ", 1) for line in _read(folder, "cgroup.events").splitlines() if " " in line)
    return events.get("frozen", "")


def update(root: str, container_id: str, resources: Mapping[str, object]) -> list[str]:
    """Applies what can be applied; returns what was, as `file = value` (logged)."""
    from ukrun.logs import log

    record = st.load(root, container_id)
    if not st.alive(record):
        raise UkrunError(f"container {container_id} is not running: there is nothing to update")
    memory = resources.get("memory")
    limit = memory.get("limit") if isinstance(memory, dict) else None
    if isinstance(limit, int) and limit > 0 and limit not in (record.memory_limit, record.memory_mib * MIB):
        raise UkrunError(
            f"container {container_id}'s guest has {record.memory_mib} MiB of memory, fixed when its VM started: "
            f"a running guest cannot be resized to {limit // MIB} MiB here; create the container again with the "
            "new limit")
    writes = cgroup_writes(resources, record.cgroups)
    if writes and not record.cgroups:
        raise UkrunError(f"container {container_id} has no cgroup (its spec names no cgroupsPath) to apply CPU or "
                         "pids limits to")
    done = []
    for folder, name, value in writes:
        _write(folder, name, value, name, container_id)
        done.append(f"{folder}/{name} = {value}")
    for line in done:
        log.info("%s: update applied %s", container_id, line)
    return done


def cgroup_writes(resources: Mapping[str, object], folders: list[str]) -> list[tuple[str, str, str]]:
    """The (folder, file, value) writes that apply the resources' CPU and pids limits, in order, to the
    folders that have those files (cgroup v1 controllers or v2)."""
    cpu = resources.get("cpu") if isinstance(resources.get("cpu"), dict) else {}
    pid_limits = resources.get("pids") if isinstance(resources.get("pids"), dict) else {}
    assert isinstance(cpu, dict) and isinstance(pid_limits, dict)
    shares, quota, period = (cpu.get(k) for k in ("shares", "quota", "period"))
    period = period if isinstance(period, int) and period > 0 else 0
    quota = quota if isinstance(quota, int) else 0  # negative: no limit
    out = []
    for f in folders:
        has = set(os.listdir(f)) if os.path.isdir(f) else set()
        if "cpu.cfs_quota_us" in has:
            if period:
                out.append((f, "cpu.cfs_period_us", str(period)))
            if quota:
                out.append((f, "cpu.cfs_quota_us", str(quota if quota > 0 else -1)))
        if "cpu.shares" in has and isinstance(shares, int) and shares > 0:
            out.append((f, "cpu.shares", str(shares)))
        if "cpu.max" in has and (quota or period):
            out.append((f, "cpu.max", f"{quota if quota > 0 else 'max'} {period or 100000}"))
        if "cpu.weight" in has and isinstance(shares, int) and shares > 0:
            out.append((f, "cpu.weight", str(1 + (max(2, min(shares, 262144)) - 2) * 9999 // 262142)))
        for key in ("cpus", "mems"):
            value = cpu.get(key)
            if f"cpuset.{key}" in has and isinstance(value, str) and value:
                out.append((f, f"cpuset.{key}", value))
        limit = pid_limits.get("limit")
        if "pids.max" in has and isinstance(limit, int) and limit != 0:
            out.append((f, "pids.max", str(limit) if limit > 0 else "max"))
    return out


def stats(record: st.ContainerState) -> dict[str, object]:
    """runc's stats event data, from whichever cgroup files exist (v1 or v2)."""
    cpu = memory = limit = current = pids_max = 0
    for f in record.cgroups:
        if (v := _read(f, "cpuacct.usage")).isdigit():
            cpu = int(v)
        elif (v := _read(f, "cpu.stat")) and "usage_usec" in v:
            cpu = int(dict(line.split() for line in v.splitlines()).get("usage_usec", "0")) * 1000
        for name in ("memory.usage_in_bytes", "memory.current"):
            if (v := _read(f, name)).isdigit():
                memory = int(v)
        for name in ("memory.limit_in_bytes", "memory.max"):
            if (v := _read(f, name)).isdigit():
                limit = int(v)
        if (v := _read(f, "pids.current")).isdigit():
            current = int(v)
            pids_max = int(m) if (m := _read(f, "pids.max")).isdigit() else 0
    return {"cpu": {"usage": {"total": cpu}}, "memory": {"usage": {"usage": memory, "limit": limit}},
            "pids": {"current": current, "limit": pids_max}}


def events(root: str, container_id: str, once: bool, interval: float) -> None:
    import sys

    while True:
        record = st.load(root, container_id)
        if not st.alive(record):
            if once:
                raise UkrunError(f"container {container_id} is not running")
            return
        sys.stdout.write(json.dumps({"type": "stats", "id": container_id, "data": stats(record)}) + "\n")
        sys.stdout.flush()
        if once:
            return
        time.sleep(max(interval, 0.1))
