"""Runs containers through ctr with ukrun as the shim's runc binary, and checks what they leave."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from testbed import containerd as ctd
from testbed import host as tbhost
from testbed import netns
from ukrun import host
from ukrun.containerd.client import Client

UKRUN = str(Path(sys.executable).parent / "ukrun")
IMAGE = "ukrun/guest:1"


class Runner:
    """Runs containers through ctr with ukrun as the shim's runc binary, and checks what they leave."""

    def __init__(self, daemon: ctd.Daemon, ns: str, runc_root: Path, state_root: Path,
                 snapshotter: str = "blockfile", config: Path | None = None) -> None:
        self.daemon, self.ns, self.runc_root, self.state_root = daemon, ns, runc_root, state_root
        self.snapshotter = snapshotter
        # ukrun's configuration for the operator commands run here (the shim's comes from the daemon's env)
        self.cli_env = {"CONTAINERD_NAMESPACE": ns, **({"UKRUN_CONFIG": str(config)} if config else {})}
        self.fifo_dir = runc_root.parent / "fifo"  # ctr leaves a detached task's FIFOs behind: keep them ours

    def ctr(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.daemon.bin_dir / "ctr"), "--address", self.daemon.address, "--namespace", self.ns, *args]
        return subprocess.run(cmd, capture_output=True, text=True, env=self.daemon.env(), timeout=timeout)

    def run(self, cid: str, *args: str, image: str = IMAGE, flags: tuple[str, ...] = (),
            binary: str = UKRUN) -> subprocess.CompletedProcess[str]:
        return self.ctr("run", "--snapshotter", self.snapshotter, "--runc-binary", binary,
                        "--runc-root", str(self.runc_root), "--fifo-dir", str(self.fifo_dir), *flags, image, cid, *args)

    def task_status(self, cid: str) -> str:
        for line in self.ctr("task", "ls").stdout.splitlines()[1:]:
            fields = line.split()
            if fields and fields[0] == cid:
                return fields[-1]
        return ""

    def wait_status(self, cid: str, status: str, timeout: float = 60) -> None:
        assert ctd.wait_for(lambda: self.task_status(cid) == status, timeout=timeout, interval=0.2), (
            f"{cid} never became {status}: {self.task_status(cid)!r}"
        )

    def views(self) -> list[dict[str, object]]:
        out = subprocess.run([UKRUN, "--state-root", str(self.state_root), "view", "ls", "--json"],
                             capture_output=True, text=True, check=True, env={**self.daemon.env(), **self.cli_env})
        return list(json.loads(out.stdout))

    def snapshot_file(self, cid: str) -> str:
        with Client(self.daemon.address, self.ns) as c:
            return c.mounts(self.snapshotter, cid)[0].source

    def read_snapshot(self, cid: str, path: str, workdir: Path) -> str:
        return self.read_snapshot_bytes(cid, path, workdir).decode()

    def read_snapshot_bytes(self, cid: str, path: str, workdir: Path) -> bytes:
        """Reads a file of the container's snapshot, mounted read-only the way containerd describes it."""
        target = workdir / f"look-{cid}"
        target.mkdir(exist_ok=True)
        with Client(self.daemon.address, self.ns) as c:
            mounts = c.mounts(self.snapshotter, cid)
        for m in mounts:
            host.mount(m.source, target, m.type, [*m.options, "ro"])
        try:
            return (target / path.lstrip("/")).read_bytes()
        finally:
            host.unmount_all(target)

    def leftovers(self, cid: str, pod: netns.Pod | None = None) -> list[str]:
        """What of container `cid` is still on the host and in containerd, by kind (empty: nothing)."""
        from ukrun.artifacts.views import ACQUIRE_LABEL, user_label

        left = []
        if (self.runc_root / self.ns / cid).exists():
            left.append("state folder")
        if [v for v in self.views() if cid in v["users"]]:  # type: ignore[operator]
            left.append("view use")
        with Client(self.daemon.address, self.ns) as c:
            if c.list_leases([f'labels."{ACQUIRE_LABEL}"']):
                left.append("acquire lease")
            if any(r.id == cid and user_label(self.snapshotter) in r.labels for r in c.list_containers()):
                left.append("view label")
        groups = [g for g in Path("/sys/fs/cgroup").glob(f"*/{self.ns}/{cid}") if g.is_dir()]
        if groups:
            left.append("cgroup")
            if any((g / "cgroup.procs").read_text().split() for g in groups):
                left.append("process")
        if pod is not None:
            inside = ["ip", "netns", "exec", pod.name]
            links = subprocess.run([*inside, "ip", "-o", "link"], capture_output=True, text=True).stdout
            qdisc = subprocess.run([*inside, "tc", "qdisc", "show", "dev", "eth0"], capture_output=True,
                                   text=True).stdout
            tables = subprocess.run([*inside, "nft", "list", "tables"], capture_output=True, text=True).stdout
            addrs = subprocess.run([*inside, "ip", "-o", "-4", "addr"], capture_output=True, text=True).stdout
            left += ["tap"] * ("tapuk" in links) + ["tc ingress"] * ("ingress" in qdisc)
            left += ["nft table"] * ("ukrun_" in tables) + ["private link address"] * (" 100.127." in addrs)
        return left

    def gc(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        """`ukrun gc` over this runner's runtime root and state root, as an operator runs it after a crash."""
        return self.ukrun("gc", *args, **env)

    def ukrun(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        """An operator command over this runner's runtime root and state root."""
        return subprocess.run([UKRUN, "--root", str(self.runc_root / self.ns), "--state-root", str(self.state_root),
                               *args], capture_output=True, text=True, timeout=120,
                              env={**self.daemon.env(), **self.cli_env, **env})

    def assert_clean(self, cid: str) -> None:
        """Nothing of the container stays: state dir, views, mounts, loop devices, leases, monitor."""
        assert not (self.runc_root / self.ns / cid).exists(), "ukrun's state dir stayed"
        assert not [v for v in self.views() if cid in v["users"]]  # type: ignore[operator]
        mounts = [m.mount_point for m in host.mountinfo() if m.mount_point.startswith(str(self.state_root))]
        assert not mounts, f"mounts stayed: {mounts}"
        def loops() -> list[str]:
            return [d for d, b in host.loop_devices().items() if b.startswith(str(self.daemon.dir))]

        # The kernel releases an autoclear loop device shortly after its last unmount, not at once.
        assert ctd.wait_for(lambda: not loops(), timeout=3), f"loop devices stayed: {loops()}"
        with Client(self.daemon.address, self.ns) as c:
            assert not c.list_leases(['labels."ukrun.io/acquire"'])
            assert not [s for s in c.list_snapshots(self.snapshotter, ["kind==view"])]
        assert not self.monitors(), "a monitor process stayed"
        assert not tbhost.virtiofsd_processes(self.daemon.dir), "a virtiofsd process stayed"

    def idle_leases(self) -> list[tuple[str, dict[str, str]]]:
        """ukrun's idle leases in containerd: (id, labels)."""
        from ukrun.artifacts.views import IDLE_LABEL

        with Client(self.daemon.address, self.ns) as c:
            return [(le.id, dict(le.labels)) for le in c.list_leases([f'labels."{IDLE_LABEL}"'])]

    def assert_idle_bounded(self, idle: float) -> dict[str, object]:
        """The one view is idle, held by exactly one lease that names it and ends when its record says, within
        `idle` seconds: containerd's GC takes it then even if ukrun never runs again. Returns the view."""
        import calendar
        import time

        from ukrun.artifacts.views import IDLE_LABEL
        from ukrun.containerd.records import GC_EXPIRE_LABEL

        (view,) = self.views()
        (lease, labels), = self.idle_leases()
        assert view["users"] == [] and view["mounted"], view
        assert (lease, labels[IDLE_LABEL]) == (view["idle_lease"], view["id"])
        end = calendar.timegm(time.strptime(labels[GC_EXPIRE_LABEL], "%Y-%m-%dT%H:%M:%SZ"))
        assert end == view["idle_until"] and time.time() < end <= time.time() + idle, (end, view)
        return view

    def monitors(self) -> list[int]:
        """qemu processes using this daemon's snapshots."""
        return tbhost.qemu_processes(self.daemon.dir)
