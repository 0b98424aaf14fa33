"""Load and containerd restarts, through ctr and the stock shim: many containers of one image at once
share one view and leave nothing; several images at once get one view each and leave nothing;
unikernels keep running through a restart of containerd."""

from __future__ import annotations

import json
import statistics
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from testbed import containerd as ctd
from testbed import guest
from tests.integration.conftest import APP, SNAPSHOTTER, write_ukrun_config
from tests.integration.runner import Runner

N = 20
IMAGES = 5


def _create_ms(runner: Runner, ids: list[str]) -> list[float]:
    marks = [json.loads(line) for line in (runner.state_root / "timing.jsonl").read_text().splitlines()]
    out = []
    for cid in ids:
        mine = {m["phase"]: m["ns"] for m in marks if m["container"] == cid and m["verb"] == "create"}
        out.append((mine["done"] - mine["start"]) / 1e6)
    return out


def test_twenty_containers_of_one_image_at_once_share_one_view_and_leave_nothing(
    runner: Runner, capsys: pytest.CaptureFixture[str],
) -> None:
    ids = [f"load{i}" for i in range(N)]
    with ThreadPoolExecutor(max_workers=N) as pool:
        procs = list(pool.map(lambda cid: runner.run(cid, "/bin/sh", "/app/run.sh", "sleep", flags=("--detach",)),
                              ids))
    assert all(p.returncode == 0 for p in procs), [p.stderr for p in procs if p.returncode]
    for cid in ids:
        runner.wait_status(cid, "RUNNING", timeout=180)
    (view,) = runner.views()
    assert sorted(view["users"]) == sorted(ids)  # type: ignore[call-overload]
    create = sorted(_create_ms(runner, ids))
    with capsys.disabled():
        print(f"\n{N} concurrent creates through ctr (ms, create's own phases): p50 {statistics.median(create):.0f}, "
              f"p95 {create[int(0.95 * (len(create) - 1))]:.0f}, max {create[-1]:.0f}")
    with ThreadPoolExecutor(max_workers=N) as pool:
        list(pool.map(lambda cid: runner.ctr("task", "kill", "-s", "SIGKILL", cid), ids))
    for cid in ids:
        runner.wait_status(cid, "STOPPED", timeout=60)
    with ThreadPoolExecutor(max_workers=N) as pool:
        deleted = list(pool.map(lambda cid: runner.ctr("task", "delete", cid).returncode
                                + runner.ctr("containers", "delete", cid).returncode, ids))
    assert deleted == [0] * N
    for cid in ids:
        runner.assert_clean(cid)
    assert runner.views() == []


def test_different_images_at_once_get_one_view_each_and_leave_nothing(runner: Runner, image_dir: Path) -> None:
    # A different application script makes a different base layer, hence a different artifact chain.
    names = [f"ukrun/other{i}:1" for i in range(IMAGES)]
    for i, name in enumerate(names):
        tar = guest.linux_image(image_dir / "others", name, f"{APP}# image {i}\n")
        runner.daemon.import_image(runner.ns, tar, SNAPSHOTTER)
    ids = [f"img{i}" for i in range(IMAGES)]
    with ThreadPoolExecutor(max_workers=IMAGES) as pool:
        procs = list(pool.map(lambda pair: runner.run(pair[0], "/bin/sh", "/app/run.sh", "sleep", image=pair[1],
                                                      flags=("--detach",)), zip(ids, names, strict=True)))
    assert all(p.returncode == 0 for p in procs), [p.stderr for p in procs if p.returncode]
    for cid in ids:
        runner.wait_status(cid, "RUNNING", timeout=120)
    users = sorted(sorted(v["users"]) for v in runner.views())  # type: ignore[call-overload]
    assert users == [[cid] for cid in sorted(ids)]
    with ThreadPoolExecutor(max_workers=IMAGES) as pool:
        list(pool.map(lambda cid: runner.ctr("task", "kill", "-s", "SIGKILL", cid), ids))
    for cid in ids:
        runner.wait_status(cid, "STOPPED", timeout=60)
    with ThreadPoolExecutor(max_workers=IMAGES) as pool:
        deleted = list(pool.map(lambda cid: runner.ctr("task", "delete", cid).returncode
                                + runner.ctr("containers", "delete", cid).returncode, ids))
    assert deleted == [0] * IMAGES
    for cid in ids:
        runner.assert_clean(cid)
    assert runner.views() == []


def test_unikernels_keep_running_through_a_containerd_restart(daemon: ctd.Daemon, ns: str, tmp_path: Path,
                                                              guest_image: Path) -> None:
    config = write_ukrun_config(tmp_path / "ukrun.toml", tmp_path / "state")
    env = {"UKRUN_CONFIG": str(config)}
    private = ctd.start(daemon.version, tmp_path / "d", env=env)
    try:
        r = Runner(private, ns, tmp_path / "runc", tmp_path / "state")
        private.import_image(ns, guest_image, SNAPSHOTTER)
        for cid in ("r1", "r2"):
            assert r.run(cid, "/bin/sh", "/app/run.sh", "sleep", flags=("--detach",)).returncode == 0
            r.wait_status(cid, "RUNNING")
        monitors = sorted(r.monitors())
        assert len(monitors) == 2
        private = ctd.restart(private, env)
        r.daemon = private
        for cid in ("r1", "r2"):
            r.wait_status(cid, "RUNNING", timeout=30)  # the shims reconnect; the guests never stopped
        assert sorted(r.monitors()) == monitors
        (view,) = r.views()
        assert sorted(view["users"]) == ["r1", "r2"]  # type: ignore[call-overload]
        assert [v for v in r.ctr("snapshots", "--snapshotter", SNAPSHOTTER, "ls").stdout.splitlines()
                if "ukrun/view" in v], "the view's snapshot went with the restart"
        for cid in ("r1", "r2"):
            assert r.ctr("task", "kill", "-s", "SIGKILL", cid).returncode == 0
            r.wait_status(cid, "STOPPED")
            assert r.ctr("task", "delete", cid).returncode == 0
            assert r.ctr("containers", "delete", cid).returncode == 0
        for cid in ("r1", "r2"):
            r.assert_clean(cid)
    finally:
        ctd.stop(private.dir)
