"""Every named crash point in ukrun's code, hit for real through ctr and the stock shim: a ukrun process
(create, start, kill, delete, the container's init, a view's release, gc) is SIGKILLed there, while another
container of the same image runs beside it. Then the usual cleanup (`ctr task rm -f`, `ctr c rm`,
`ukrun gc`) must leave nothing of the victim (no state folder, view use, label, lease, mount, loop device,
cgroup, process, tap, tc filter, nftables table or private-link address) and the other container must
have kept running, and be deleted cleanly.

The points are read from the source, so a new one cannot be forgotten; each is armed once through the
daemon's UKRUN_CRASH_ARM file, and its disappearance proves the point was reached. Each passing case
writes its row of docs/reliability.md.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from testbed import netns
from testbed.reliability import Fault, Report
from tests.integration.conftest import SNAPSHOTTER, WARM_IDLE, arm_file
from tests.integration.runner import IMAGE, Runner

SRC = Path(__file__).resolve().parents[2] / "src" / "ukrun"
SLEEP = ("/bin/sh", "/app/run.sh", "sleep")
# Reached only by the view's first user (as it makes the view) or its last (as it removes it): the other
# container starts right after the crash, on what the crash left, instead of before it.
FOLDER = ("init-after-virtiofsd",)  # reached only with a folder rootfs (overlayfs) over virtio-fs
# Reached only by a guest on a private link of its own: the victim declares a port (network.ports).
PORTS = ("create-after-address", "create-after-rules", "teardown-after-rules")
ALONE = ("acquire-after-view", "acquire-after-label", "acquire-after-mount", "release-after-unmount",
         "release-after-remove")
# Reached only where views stay idle (`[artifacts] idle`): on the warm daemon, see test_a_crash_at_each_warm_...
WARM = ("idle-after-lease", "idle-after-hold", "acquire-after-takeover", "warm-after-view")


def crash_points() -> list[str]:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        found += re.findall(r'crashpoints\.point\("([a-z-]+)"\)', path.read_text())
    return found


POINTS = crash_points()
PHASES = ("acquire", "create", "start", "kill", "init", "teardown", "release", "gc", "exec", "idle", "warm")


def test_the_crash_points_are_found_unique_and_cover_every_phase() -> None:
    assert len(set(POINTS)) == len(POINTS), POINTS
    assert {p.split("-")[0] for p in POINTS} == set(PHASES), POINTS
    assert set(WARM) <= set(POINTS), WARM


def killed(proc: subprocess.CompletedProcess[str]) -> bool:
    return proc.returncode != 0


def reach(r: Runner, point: str, pod: netns.Pod) -> str:
    """Drives the victim `f1` to the point, armed once; returns how, for the report."""
    arm = arm_file(r.daemon.dir)
    phase = point.split("-")[0]
    net: tuple[str, ...] = ("--with-ns", f"network:{pod.path}")
    if point in PORTS:
        net = (*net, "--annotation", "io.ukrun.ports=8080/tcp")
    if phase in ("acquire", "create", "start") or point == "init-before-commit":
        arm.write_text(point)
        proc = r.run("f1", *SLEEP, flags=("--detach", *net))
        assert killed(proc), f"ctr run went through {point}: {proc.stdout}"
        how = "ctr run -d"
    elif phase == "gc":
        arm.write_text("create-before-save")  # a crashed create: something for gc to reclaim
        assert killed(r.run("f1", *SLEEP, flags=("--detach", *net)))
        proc = r.gc(UKRUN_CRASH_AT=point)
        assert proc.returncode == -9, proc.stderr
        return "ukrun gc, after a create killed at create-before-save"
    elif point == "init-before-monitor" or point in FOLDER:
        arm.write_text(point)
        if point in FOLDER:
            net = (*net, "--annotation", "io.ukrun.rootfs.share=virtiofs")
        proc = r.run("f1", *SLEEP, flags=("--detach", *net))
        assert proc.returncode == 0, proc.stderr
        r.wait_status("f1", "STOPPED")
        how = "ctr run -d; the init dies once started" + (" (overlayfs, virtio-fs)" if point in FOLDER else "")
    else:
        proc = r.run("f1", *SLEEP, flags=("--detach", *net))
        assert proc.returncode == 0, proc.stderr
        r.wait_status("f1", "RUNNING")
        if phase == "kill":
            arm.write_text(point)
            assert killed(r.ctr("task", "kill", "-s", "SIGKILL", "f1"))
            how = "ctr task kill"
        elif phase == "exec":
            arm.write_text(point)
            assert killed(r.ctr("task", "exec", "--exec-id", "x1", "--fifo-dir", str(r.fifo_dir), "f1",
                                "/bin/busybox", "sleep", "304"))
            how = "ctr task exec, once the guest started the process"
        else:
            r.ctr("task", "kill", "-s", "SIGKILL", "f1")
            r.wait_status("f1", "STOPPED")
            arm.write_text(point)
            assert killed(r.ctr("task", "delete", "f1"))
            how = "ctr task rm, after the task stopped"
    assert not arm.exists(), f"{point} was never reached"
    return how + (" (a declared port: its own private link)" if point in PORTS else "")


@pytest.mark.reliability("faults")
@pytest.mark.parametrize("point", [p for p in POINTS if p not in WARM])
def test_a_crash_at_each_point_leaves_nothing_and_spares_the_other_container(
    runner: Runner, pod: netns.Pod, report: Report, point: str, guest_image: Path,
) -> None:
    r = runner
    victim = folder_runner(r, guest_image) if point in FOLDER else r
    if point not in ALONE:
        start_bystander(r)
    how = reach(victim, point, pod)
    left = tuple(victim.leftovers("f1", pod))
    if point in ALONE:
        start_bystander(r)
    r.ctr("task", "delete", "--force", "f1")
    r.ctr("containers", "delete", "f1")
    cleaned = r.gc()
    assert cleaned.returncode == 0, cleaned.stderr
    assert "f1" not in r.ctr("containers", "ls", "-q").stdout.split()
    assert victim.leftovers("f1", pod) == []
    assert r.task_status("by") == "RUNNING", "the other container did not survive"
    assert [v["users"] for v in r.views()] == [["by"]]
    r.ctr("task", "kill", "-s", "SIGKILL", "by")
    r.wait_status("by", "STOPPED")
    assert r.ctr("task", "delete", "by").returncode == 0
    assert r.ctr("containers", "delete", "by").returncode == 0
    r.assert_clean("by")
    r.assert_clean("f1")
    assert r.views() == []
    when = "started after the crash" if point in ALONE else "running before the crash"
    report.faults.append(Fault(point, r.daemon.version, how, left, "ctr task rm -f; ctr c rm; ukrun gc",
                               f"{when}: kept running, then deleted cleanly"))


def folder_runner(r: Runner, image: Path) -> Runner:
    """The same daemon and roots, on overlayfs: a folder rootfs."""
    r.daemon.import_image(r.ns, image, "overlayfs")
    return Runner(r.daemon, r.ns, r.runc_root, r.state_root, snapshotter="overlayfs")


def start_bystander(r: Runner) -> None:
    assert r.run("by", *SLEEP, flags=("--detach",)).returncode == 0
    r.wait_status("by", "RUNNING")


def reach_warm(r: Runner, point: str, pod: netns.Pod) -> str:
    """Drives the victim `f1` (or `ukrun view warm`) to a warm view's step, armed once; returns how."""
    arm = arm_file(r.daemon.dir)
    net = ("--with-ns", f"network:{pod.path}")
    if point == "warm-after-view":
        proc = r.ukrun("view", "warm", IMAGE, "--snapshotter", SNAPSHOTTER, UKRUN_CRASH_AT=point)
        assert proc.returncode == -9, proc.stderr
        return "ukrun view warm, before any container"
    if point == "acquire-after-takeover":
        assert r.run("w0", *SLEEP, flags=("--detach",)).returncode == 0  # its delete leaves the view idle
        r.wait_status("w0", "RUNNING")
        r.ctr("task", "kill", "-s", "SIGKILL", "w0")
        r.wait_status("w0", "STOPPED")
        assert r.ctr("task", "delete", "w0").returncode == 0 and r.ctr("containers", "delete", "w0").returncode == 0
        r.assert_idle_bounded(WARM_IDLE)
        arm.write_text(point)
        assert killed(r.run("f1", *SLEEP, flags=("--detach", *net)))
        how = "ctr run -d, the image's view idle"
    else:  # the view's last user leaves: its delete keeps the view idle
        assert r.run("f1", *SLEEP, flags=("--detach", *net)).returncode == 0
        r.wait_status("f1", "RUNNING")
        r.ctr("task", "kill", "-s", "SIGKILL", "f1")
        r.wait_status("f1", "STOPPED")
        arm.write_text(point)
        assert killed(r.ctr("task", "delete", "f1"))
        how = "ctr task rm of the view's last user, after the task stopped"
    assert not arm.exists(), f"{point} was never reached"
    return how


@pytest.mark.reliability("faults")
@pytest.mark.parametrize("point", WARM)
def test_a_crash_at_each_warm_view_step_leaves_nothing_but_a_bounded_idle_view(
    warm: Runner, pod: netns.Pod, report: Report, point: str,
) -> None:
    r = warm
    how = reach_warm(r, point, pod)
    left = tuple(r.leftovers("f1", pod))
    start_bystander(r)  # on what the crash left
    r.ctr("task", "delete", "--force", "f1")
    r.ctr("containers", "delete", "f1")
    cleaned = r.gc()
    assert cleaned.returncode == 0, cleaned.stderr
    assert "f1" not in r.ctr("containers", "ls", "-q").stdout.split()
    assert r.leftovers("f1", pod) == []
    assert [v["users"] for v in r.views()] == [["by"]] and r.task_status("by") == "RUNNING"
    named = {v["idle_lease"] for v in r.views()}
    assert all(lease in named for lease, _ in r.idle_leases()), "an idle lease that no view names stayed"
    r.ctr("task", "kill", "-s", "SIGKILL", "by")
    r.wait_status("by", "STOPPED")
    assert r.ctr("task", "delete", "by").returncode == 0
    assert r.ctr("containers", "delete", "by").returncode == 0
    r.assert_idle_bounded(WARM_IDLE)  # the bystander's view waits, bounded, for the image's next container
    assert r.gc("--idle").returncode == 0
    r.assert_clean("by")
    r.assert_clean("f1")
    assert r.views() == [] and r.idle_leases() == []
    report.faults.append(Fault(point, r.daemon.version, how, left,
                               "ctr task rm -f; ctr c rm; ukrun gc",
                               "started after the crash: kept running, then deleted; its view stayed idle, "
                               "bounded by its lease, until ukrun gc --idle"))
