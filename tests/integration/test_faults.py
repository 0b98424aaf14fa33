"""Every named crash point in ukrun's code, hit for real: a create killed (SIGKILL) there, through ctr and
the stock shim on a container with a network, and then the shim's delete, `ctr c rm` and `ukrun gc`.
The points are read from the source, so a new one cannot be forgotten: each must leave nothing (no
view, lease, label, mount, loop device, state folder, cgroup, tap or qdisc, no monitor)."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed import containerd as ctd
from testbed import netns
from tests.integration.conftest import SNAPSHOTTER, write_ukrun_config
from tests.integration.runner import UKRUN, Runner

SRC = Path(__file__).resolve().parents[2] / "src" / "ukrun"


def crash_points() -> list[str]:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        found += re.findall(r'crashpoints\.point\("([a-z-]+)"\)', path.read_text())
    return found


POINTS = crash_points()


def test_the_crash_points_are_found_and_unique() -> None:
    assert len(POINTS) >= 8 and len(set(POINTS)) == len(POINTS), POINTS


@pytest.fixture
def pod(ns: str, request: pytest.FixtureRequest) -> Iterator[netns.Pod]:
    p = netns.make(request.node.nodeid)
    yield p
    netns.remove(p)


@pytest.mark.parametrize("point", POINTS)
def test_a_create_killed_at_each_crash_point_leaves_nothing(daemon: ctd.Daemon, ns: str, tmp_path: Path,
                                                           guest_image: Path, pod: netns.Pod, point: str) -> None:
    config = write_ukrun_config(tmp_path / "ukrun.toml", tmp_path / "state")
    env = {"UKRUN_CONFIG": str(config), "UKRUN_CRASH_AT": point}
    private = ctd.start(daemon.version, tmp_path / "d", env=env)
    try:
        r = Runner(private, ns, tmp_path / "runc", tmp_path / "state")
        private.import_image(ns, guest_image, SNAPSHOTTER)
        proc = r.run("f1", "/bin/sh", "/app/run.sh", "sleep", flags=("--rm", "--with-ns", f"network:{pod.path}"))
        killed = "exit status 137" in proc.stderr or "signal: killed" in proc.stderr  # SIGKILL, as the point does
        assert proc.returncode != 0 and killed, f"create never reached {point}: {proc.stderr}"
        r.ctr("containers", "delete", "f1")
        gc = subprocess.run([UKRUN, "--root", str(r.runc_root / ns), "--state-root", str(r.state_root), "gc"],
                            capture_output=True, text=True, env={**private.env(), "CONTAINERD_NAMESPACE": ns},
                            timeout=60)
        assert gc.returncode == 0, gc.stderr
        r.assert_clean("f1")
        assert "tapuk" not in pod.inside("ip", "-o", "link").stdout
        assert "ingress" not in pod.inside("tc", "qdisc", "show", "dev", "eth0").stdout
        assert not Path(f"/sys/fs/cgroup/memory/{ns}/f1").exists()
    finally:
        ctd.stop(private.dir)
