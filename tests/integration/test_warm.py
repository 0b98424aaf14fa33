"""Warm views through ctr and the stock shim, on containerd 1.7 and 2.x: an image's shared view outlives its last
user for `[artifacts] idle` seconds, bounded by a lease's `containerd.io/gc.expire`; the next container takes it
over with no View and no mount; `ukrun view warm` makes one before the first container; it ends by `ukrun gc`,
or by containerd's GC when ukrun is gone."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from testbed import containerd as ctd
from testbed import images
from testbed.events import EventLog
from tests.integration.conftest import SNAPSHOTTER, WARM_IDLE, set_idle
from tests.integration.runner import IMAGE, Runner
from ukrun import host
from ukrun.containerd.client import Client

SLEEP = ("/bin/sh", "/app/run.sh", "sleep")
SHORT = 10.0  # seconds of idle time: room for a few commands on a loaded machine, and a short wait


def run_and_remove(r: Runner, cid: str) -> None:
    """A container's whole life, short: started, killed once running, deleted."""
    assert r.run(cid, *SLEEP, flags=("--detach",)).returncode == 0
    r.wait_status(cid, "RUNNING")
    r.ctr("task", "kill", "-s", "SIGKILL", cid)
    r.wait_status(cid, "STOPPED")
    assert r.ctr("task", "delete", cid).returncode == 0
    assert r.ctr("containers", "delete", cid).returncode == 0


def the_view(r: Runner) -> dict[str, object]:
    views = r.views()
    assert len(views) == 1, views
    return views[0]


def created(r: Runner, key: str) -> str:
    """When containerd made the snapshot (`ctr snapshots info`): a View made again would change it."""
    out = r.ctr("snapshots", "--snapshotter", SNAPSHOTTER, "info", key)
    assert out.returncode == 0, out.stderr
    return str(json.loads(out.stdout)["Created"])


def mount_id(point: str) -> int:
    found = [m for m in host.mountinfo() if m.mount_point == point]
    assert len(found) == 1, found
    return found[0].mount_id


def assert_nothing_left(r: Runner) -> None:
    assert r.views() == [] and r.idle_leases() == []
    r.assert_clean("none")


def test_a_second_run_of_an_image_takes_the_idle_view_over_with_no_view_and_no_mount(warm: Runner) -> None:
    events = EventLog(warm.daemon.bin_dir / "ctr", warm.daemon.address, warm.daemon.env())
    try:
        run_and_remove(warm, "w1")
        idle = the_view(warm)
        assert idle["users"] == [] and idle["mounted"], idle
        warm.assert_idle_bounded(WARM_IDLE)
        key, point = str(idle["key"]), str(idle["mount_point"])
        made, mounted = created(warm, key), mount_id(point)
        since = time.time()
        assert warm.run("w2", *SLEEP, flags=("--detach",)).returncode == 0
        warm.wait_status("w2", "RUNNING")
        taken = the_view(warm)
        assert taken["users"] == ["w2"] and (created(warm, key), mount_id(point)) == (made, mounted)
        warm.ctr("task", "kill", "-s", "SIGKILL", "w2")
        warm.wait_status("w2", "STOPPED")
        assert warm.ctr("task", "delete", "w2").returncode == 0
        assert warm.ctr("containers", "delete", "w2").returncode == 0
        events.settle("w2", "/containers/delete")
        # containerd removed the containers' own snapshots, never the view: it was never made again.
        removed = events.snapshot_removals(since, time.time() + 1)
        assert key not in removed and "w2" in removed, removed
        again = the_view(warm)
        assert (created(warm, key), mount_id(point)) == (made, mounted)
        # Back to back, the first idle time's lease still held the view for most of the idle time: kept.
        assert (again["idle_lease"], again["idle_until"]) == (idle["idle_lease"], idle["idle_until"])
        warm.assert_idle_bounded(WARM_IDLE)
    finally:
        events.close()


def test_a_later_idle_time_gets_a_lease_of_its_own_once_the_last_one_has_run_down(warm: Runner) -> None:
    set_idle(warm.daemon, SHORT)
    run_and_remove(warm, "r1")
    first = warm.assert_idle_bounded(SHORT)
    time.sleep(max(0.0, float(first["idle_until"]) - time.time() - 0.8 * SHORT))  # type: ignore[arg-type]
    run_and_remove(warm, "r2")  # taken over with under nine tenths of the idle time left
    second = warm.assert_idle_bounded(SHORT)  # one lease only: the first was deleted
    assert second["idle_lease"] != first["idle_lease"] and second["idle_until"] > first["idle_until"]  # type: ignore[operator]


def test_an_idle_view_ends_by_ukrun_gc_once_its_time_is_over(warm: Runner) -> None:
    set_idle(warm.daemon, SHORT)
    run_and_remove(warm, "g1")
    idle = the_view(warm)
    warm.assert_idle_bounded(SHORT)
    kept = warm.gc()
    assert kept.returncode == 0 and the_view(warm)["key"] == idle["key"], kept.stdout  # not over yet
    time.sleep(max(0.0, float(idle["idle_until"]) - time.time()) + 0.5)  # type: ignore[arg-type]
    done = warm.gc()
    assert done.returncode == 0 and f"remove view {idle['key']}" in done.stdout, done.stdout + done.stderr
    assert_nothing_left(warm)


def test_an_idle_view_ends_by_containerds_gc_when_ukrun_is_gone(warm: Runner) -> None:
    set_idle(warm.daemon, SHORT)
    run_and_remove(warm, "c1")
    idle = the_view(warm)
    key = str(idle["key"])
    made = created(warm, key)
    time.sleep(max(0.0, float(idle["idle_until"]) - time.time()) + 1.5)  # type: ignore[arg-type]
    # No ukrun call from here on: containerd alone collects the lease, then the view.
    with Client(warm.daemon.address, warm.ns) as c:
        c.create_lease("ukrun-test/gc-now")
        c.delete_lease("ukrun-test/gc-now", sync=True)  # a synchronous deletion runs containerd's GC now
        gone = ctd.wait_for(lambda: key not in [s.name for s in c.list_snapshots(SNAPSHOTTER, ["kind==view"])], 60)
    assert gone, "containerd's GC kept the view after its idle lease ended"
    assert warm.idle_leases() == []
    # The host mount is ukrun's to remove when it runs again: a container takes no ended view over, it makes
    # the view again ...
    set_idle(warm.daemon, WARM_IDLE)
    run_and_remove(warm, "c2")
    after = the_view(warm)
    assert created(warm, key) != made and after["idle_lease"] != idle["idle_lease"]
    # ... and `ukrun gc --idle` leaves nothing.
    assert warm.gc("--idle").returncode == 0
    assert_nothing_left(warm)


def test_ukrun_view_warm_prepares_the_view_the_first_container_takes_over(warm: Runner) -> None:
    warmed = warm.ukrun("view", "warm", IMAGE, "--snapshotter", SNAPSHOTTER)
    assert warmed.returncode == 0, warmed.stderr
    idle = the_view(warm)
    assert f"view {idle['key']} ({SNAPSHOTTER}) of {IMAGE}" in warmed.stdout and "idle until" in warmed.stdout
    warm.assert_idle_bounded(WARM_IDLE)
    made, mounted = created(warm, str(idle["key"])), mount_id(str(idle["mount_point"]))
    run_and_remove(warm, "f1")
    assert (created(warm, str(idle["key"])), mount_id(str(idle["mount_point"]))) == (made, mounted)
    warm.assert_idle_bounded(WARM_IDLE)
    # The chain choice was kept where create looks for it (same image, same artifacts): create added none.
    chains = list((warm.state_root / "chains" / warm.ns).glob("*.json"))
    assert len(chains) == 1 and json.loads(chains[0].read_text())["reason"].startswith("marked layer"), chains


@pytest.mark.parametrize(("args", "idle", "message"), [
    (("ukrun/none:1", "--snapshotter", SNAPSHOTTER), WARM_IDLE, "image ukrun/none:1 does not exist in namespace"),
    ((IMAGE, "--snapshotter", "native"), WARM_IDLE,
     f"image {IMAGE} is not unpacked for snapshotter native: unpack it there"),
    ((IMAGE, "--snapshotter", SNAPSHOTTER), 0, "[artifacts] idle is 0: a warmed view would be released at once"),
])
def test_ukrun_view_warm_refuses_what_it_cannot_warm_naming_the_fix(warm: Runner, args: tuple[str, ...],
                                                                    idle: float, message: str) -> None:
    set_idle(warm.daemon, idle)
    proc = warm.ukrun("view", "warm", *args)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr
    assert_nothing_left(warm)


def test_ukrun_view_warm_makes_no_view_for_an_image_read_in_place(warm: Runner, tmp_path: Path) -> None:
    """Without mountRootfs a container reads its artifacts in its own rootfs (artifacts.source): a warmed
    view would be mounted and held for nobody."""
    tar = images.unikernel_image(tmp_path / "img", "ukrun/in-place:1")
    warm.daemon.import_image(warm.ns, tar, SNAPSHOTTER)
    proc = warm.ukrun("view", "warm", "ukrun/in-place:1", "--snapshotter", SNAPSHOTTER)
    said = "nothing to warm: containers of ukrun/in-place:1 read their artifacts in place"
    assert proc.returncode == 0 and said in proc.stdout, proc.stdout + proc.stderr
    assert_nothing_left(warm)
