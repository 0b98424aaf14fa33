"""Load and containerd restarts, through ctr and the stock shim: many containers of one image at once
share one view and leave nothing; several images at once get one view each and leave nothing;
unikernels keep running through a restart of containerd; containerd killed during a create or a delete,
or its GC forced during concurrent creates, takes nothing in use and leaves nothing."""

from __future__ import annotations

import statistics
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from testbed import containerd as ctd
from testbed import guest
from testbed import host as tbhost
from testbed.fleet import create_ms
from tests.integration.conftest import APP, SNAPSHOTTER, remove_containers, write_ukrun_config
from tests.integration.runner import Runner
from tests.integration.test_views import force_gc
from ukrun.containerd.client import Client

N = 20


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
    create = sorted(create_ms(runner.state_root / "timing.jsonl", ids))
    assert len(create) == N
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
        # RUNNING once start has returned: the init execs the monitor just after
        assert ctd.wait_for(lambda: len(r.monitors()) == 2, 30), r.monitors()
        monitors = sorted(r.monitors())
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


def _ukrun_verb(cid: str, verb: str) -> list[int]:
    """ukrun processes running `verb` for container `cid`, as the shim started them."""
    found = []
    for pid in tbhost.processes_with_argument(cid):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        # [.../ukrun, ...] as the compiled front runs, [python, -IS, -c, code, src, .../ukrun, ...] once it has handed
        # the call to the interpreter, [python, -IS, .../ukrun, ...] as scripts/setup's Python launcher runs
        if any(a.endswith(b"/ukrun") for a in argv[:6]) and verb.encode() in argv:
            found.append(pid)
    return found


def _kill_containerd_during(r: Runner, env: dict[str, str], cid: str, verb: str,
                            action: Callable[[], object]) -> ctd.Daemon:
    """Runs `action` (which makes the shim call ukrun `verb` for `cid`), SIGKILLs containerd as soon as
    that ukrun process is seen (a few ms into a verb that takes hundreds), and starts containerd again."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(action)
        assert ctd.wait_for(lambda: bool(_ukrun_verb(cid, verb)), timeout=60, interval=0.002), f"no ukrun {verb}"
        daemon = ctd.restart(r.daemon, env, kill=True)
        pending.result(timeout=180)
    r.daemon = daemon
    return daemon


def test_containerd_killed_during_a_create_and_during_a_delete_then_all_recovers(
    daemon: ctd.Daemon, ns: str, tmp_path: Path, guest_image: Path,
) -> None:
    config = write_ukrun_config(tmp_path / "ukrun.toml", tmp_path / "state")
    env = {"UKRUN_CONFIG": str(config)}
    private = ctd.start(daemon.version, tmp_path / "d", env=env)
    r = Runner(private, ns, tmp_path / "runc", tmp_path / "state")
    try:
        private.import_image(ns, guest_image, SNAPSHOTTER)
        assert r.run("k0", "/bin/sh", "/app/run.sh", "sleep", flags=("--detach",)).returncode == 0
        r.wait_status("k0", "RUNNING")
        # During a create: whatever ctr and the shim make of it, the usual cleanup and gc leave nothing.
        _kill_containerd_during(r, env, "k1", "create",
                                lambda: r.run("k1", "/bin/sh", "/app/run.sh", "sleep", flags=("--detach",)))
        r.ctr("task", "delete", "--force", "k1")
        r.ctr("containers", "delete", "k1")
        cleaned = r.gc()
        assert cleaned.returncode == 0, cleaned.stderr
        assert r.leftovers("k1") == []
        # During a delete of a stopped container.
        r.ctr("task", "kill", "-s", "SIGKILL", "k0")
        r.wait_status("k0", "STOPPED")
        _kill_containerd_during(r, env, "k0", "delete", lambda: r.ctr("task", "delete", "k0"))
        r.ctr("task", "delete", "--force", "k0")
        r.ctr("containers", "delete", "k0")
        cleaned = r.gc()
        assert cleaned.returncode == 0, cleaned.stderr
        assert r.leftovers("k0") == []
        # The next create works, and its delete leaves nothing.
        assert r.run("k2", "/bin/sh", "/app/run.sh", "sleep", flags=("--detach",)).returncode == 0
        r.wait_status("k2", "RUNNING")
        r.ctr("task", "kill", "-s", "SIGKILL", "k2")
        r.wait_status("k2", "STOPPED")
        assert r.ctr("task", "delete", "k2").returncode == 0
        assert r.ctr("containers", "delete", "k2").returncode == 0
        for cid in ("k0", "k1", "k2"):
            r.assert_clean(cid)
        assert r.views() == []
    finally:
        ctd.stop(r.daemon.dir)


def test_containerds_gc_forced_during_twenty_concurrent_creates_never_takes_a_view_in_use(
    runner: Runner, client: Client,
) -> None:
    ids = [f"gc{i}" for i in range(N)]
    done = threading.Event()
    collections = 0

    def collect() -> None:
        nonlocal collections
        while not done.is_set():
            force_gc(client)
            collections += 1

    with ThreadPoolExecutor(max_workers=N + 1) as pool:
        collector = pool.submit(collect)
        procs = list(pool.map(lambda cid: runner.run(cid, "/bin/sh", "/app/run.sh", "sleep", flags=("--detach",)),
                              ids))
        done.set()
        collector.result()
    assert all(p.returncode == 0 for p in procs), [p.stderr for p in procs if p.returncode]
    assert collections >= N, collections
    force_gc(client)
    (view,) = runner.views()
    assert sorted(view["users"]) == sorted(ids)  # type: ignore[call-overload]
    assert client.stat_snapshot(SNAPSHOTTER, str(view["key"])).name == view["key"]
    for cid in ids:
        assert runner.task_status(cid) == "RUNNING", cid
    remove_containers(runner)
    for cid in ids:
        runner.assert_clean(cid)
    assert runner.views() == []


IMAGES = 5


@pytest.fixture(scope="session")
def many_images(image_dir: Path) -> list[tuple[str, Path]]:
    """Images whose artifact layers differ (their base layers do): one view each."""
    out = []
    for i in range(IMAGES):
        name = f"ukrun/many{i}:1"
        out.append((name, guest.linux_image(image_dir / f"many{i}", name, APP + f"# image {i}\n")))
    return out


def test_different_images_at_once_get_a_view_each_and_leave_none(
    runner: Runner, many_images: list[tuple[str, Path]],
) -> None:
    for _, tar in many_images:
        runner.daemon.import_image(runner.ns, tar, SNAPSHOTTER)
    jobs = [(f"img{i}", name) for i, (name, _) in enumerate(many_images)]
    with ThreadPoolExecutor(max_workers=IMAGES) as pool:
        procs = list(pool.map(lambda job: runner.run(job[0], "/bin/sh", "/app/run.sh", "sleep", image=job[1],
                                                     flags=("--detach",)), jobs))
    assert all(p.returncode == 0 for p in procs), [p.stderr for p in procs if p.returncode]
    for cid, _ in jobs:
        runner.wait_status(cid, "RUNNING", timeout=180)
    views = runner.views()
    assert sorted(u for v in views for u in v["users"]) == sorted(cid for cid, _ in jobs)  # type: ignore[attr-defined]
    assert len(views) == IMAGES and all(len(v["users"]) == 1 for v in views)  # type: ignore[arg-type]
    remove_containers(runner)
    for cid, _ in jobs:
        runner.assert_clean(cid)
    assert runner.views() == []
