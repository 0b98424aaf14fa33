"""The core's and the runtime's promises on containerd's real devmapper snapshotter (thin pool in a guest).

Nested TCG is too slow to boot a Linux guest inside this guest, so the monitor here is
testbed/checker.py: it opens the device ukrun hands over exclusively, checks it is the container's
filesystem, writes a marker and exits. The marker is then read from the container's snapshot.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from testbed import containerd as ctd
from testbed import devmapper, images
from testbed.unikernels import SOLO5, need
from tests.integration.runner import Runner
from ukrun import host
from ukrun.artifacts.store import ArtifactStore
from ukrun.containerd.client import Client
from ukrun.image.build import Entry, build_unikernel_image
from ukrun.unikernel import UnikernelConfig

SNAP = "devmapper"


def ns_for(name: str) -> str:
    return "dm" + hashlib.sha256(name.encode()).hexdigest()[:10]


def views(client: Client) -> list[str]:
    return [s.name for s in client.list_snapshots(SNAP, ["kind==view"])]


def test_one_thin_device_serves_two_containers_and_survives_gc(dm_daemon: ctd.Daemon, pool: str,
                                                               tmp_path: Path) -> None:
    ns = ns_for(f"shared{dm_daemon.version}")
    tar = images.unikernel_image(tmp_path / "img", "ukrun/dm-basic:1", above=[[Entry("/app/data", data=b"x")]])
    dm_daemon.import_image(ns, tar, SNAP)
    for cid in ("c1", "c2", "scratch"):
        dm_daemon.create_container(ns, "ukrun/dm-basic:1", cid, SNAP)
    client = Client(dm_daemon.address, ns, timeout=60)
    store = ArtifactStore(tmp_path / "state", ns, lambda: client)
    before = devmapper.thin_devices(pool)
    a1 = store.acquire("c1")
    with_view = devmapper.thin_devices(pool)
    assert len(with_view) == len(before) + 1, (before, with_view)  # the view is one thin device
    (view_device,) = set(with_view) - set(before)
    a2 = store.acquire("c2")
    assert devmapper.thin_devices(pool) == with_view and a1.view_key == a2.view_key
    assert views(client) == [a1.view_key]
    kernel = (tmp_path / "img" / "kernel-k").read_bytes()
    assert a1.kernel.read_bytes() == kernel
    mount = host.mounts_at(a1.mount_point)  # type: ignore[arg-type]
    assert mount[0].source.startswith("/dev/") and "ro" in mount[0].options.split(",")
    # Forced GC: a control view with no lease nor label goes; ours stays, device and all.
    dm_daemon.ctr(ns, "snapshots", "--snapshotter", SNAP, "view", "control", a1.chain_id)
    dm_daemon.delete_container(ns, "scratch")
    assert ctd.wait_for(lambda: "control" not in views(client), timeout=60), "GC never ran"
    assert view_device in devmapper.thin_devices(pool) and a1.kernel.read_bytes() == kernel
    store.release("c1")
    assert view_device in devmapper.thin_devices(pool)
    store.release("c2")
    # devmapper removes the device at GC, after the view's record: poll for it.
    assert ctd.wait_for(lambda: view_device not in devmapper.thin_devices(pool), timeout=60, interval=0.5)
    assert views(client) == [] and not host.mounts_at(a1.mount_point)  # type: ignore[arg-type]
    client.close()


def test_the_monitor_gets_the_containers_own_thin_device(dm_daemon: ctd.Daemon, pool: str, tmp_path: Path) -> None:
    ns = ns_for(f"handoff{dm_daemon.version}")
    tar = images.unikernel_image(tmp_path / "img", "ukrun/dm-boot:1", mount_rootfs=True)
    dm_daemon.import_image(ns, tar, SNAP)
    runner = Runner(dm_daemon, ns, tmp_path / "runc", dm_daemon.dir.parent / "ukrun-state", snapshotter=SNAP)
    proc = runner.run("boot1", "/bin/sh", image="ukrun/dm-boot:1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    device = runner.snapshot_file("boot1")
    rdev = os.stat(device).st_rdev
    assert Path(f"/sys/dev/block/{os.major(rdev)}:{os.minor(rdev)}/dm").is_dir()  # a thin device, as is
    assert f"checker: {device} is the container's filesystem" in proc.stdout, proc.stdout
    assert runner.read_snapshot("boot1", "/ukrun-marker", tmp_path) == device
    assert runner.ctr("containers", "delete", "boot1").returncode == 0
    assert ctd.wait_for(lambda: not runner.views(), timeout=30)
    with Client(dm_daemon.address, ns) as client:
        assert ctd.wait_for(lambda: views(client) == [], timeout=60, interval=0.5)
    assert not (runner.runc_root / ns / "boot1").exists()


def test_a_solo5_unikernel_on_spt_gets_its_containers_thin_device(dm_daemon: ctd.Daemon, tmp_path: Path) -> None:
    # The seed's scenario with a real unikernel: its artifacts from the shared view of the image's layer,
    # its block device the container's own thin device, and what it writes in the container's snapshot.
    kernel = need(SOLO5 / "test_blk.spt")
    ns = ns_for(f"solo5{dm_daemon.version}")
    config = UnikernelConfig("mirage", "spt", "/unikernel/kernel", mount_rootfs=True)
    tar = tmp_path / "blk.tar"
    build_unikernel_image(tar, "ukrun/dm-solo5:1", config, kernel)
    dm_daemon.import_image(ns, tar, SNAP)
    runner = Runner(dm_daemon, ns, tmp_path / "runc", dm_daemon.dir.parent / "ukrun-state", snapshotter=SNAP)
    dm_daemon.create_container(ns, "ukrun/dm-solo5:1", "ref", SNAP)  # never runs: the snapshot as it was
    before = Path(runner.snapshot_file("ref")).read_bytes()[:1 << 20]
    assert runner.run("s1", image="ukrun/dm-solo5:1", flags=("--detach",)).returncode == 0
    runner.wait_status("s1", "STOPPED", timeout=300)
    (view,) = runner.views()
    assert view["users"] == ["s1"] and str(view["key"]).startswith("ukrun/view/sha256:")
    assert not any((runner.state_root / "copies").rglob("s1"))
    device = runner.snapshot_file("s1")
    rdev = os.stat(device).st_rdev
    assert Path(f"/sys/dev/block/{os.major(rdev)}:{os.minor(rdev)}/dm").is_dir()
    with open(device, "rb") as f:
        assert f.read(1 << 20) != before, "what the unikernel wrote is not on the container's thin device"
    assert runner.ctr("task", "delete", "s1").returncode == 0
    for cid in ("s1", "ref"):
        assert runner.ctr("containers", "delete", cid).returncode == 0
    assert ctd.wait_for(lambda: not runner.views(), timeout=30)


def test_doctor_sees_the_devmapper_snapshotter(dm_daemon: ctd.Daemon, tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "ukrun", "--state-root", str(tmp_path), "doctor", "--json"],
                          env=dm_daemon.env(), capture_output=True, text=True)
    checks = {c["name"]: c for c in json.loads(proc.stdout)}
    assert checks["snapshotter devmapper"]["status"] == "ok", checks
