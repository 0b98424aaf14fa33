"""A unikernel with the network of its container's namespace, through ctr, the stock shim and ukrun:
the linux guest answers a TCP request sent to the container's address, from another namespace."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed import containerd as ctd
from testbed import guest, images, netns
from tests.integration.conftest import SNAPSHOTTER, remove_containers, write_ukrun_config
from tests.integration.runner import Runner
from ukrun.image.build import Entry
from ukrun.network.base import tap_name
from ukrun.network.netlink import PRIO

IMAGE = "ukrun/net-guest:1"
APP = """#!/bin/sh
echo "guest up"
while true; do echo "guest kernel $(/bin/busybox uname -r)" | /bin/busybox nc -l -p 8080; done
"""


@pytest.fixture(scope="session")
def net_image(image_dir: Path) -> Path:
    return guest.linux_image(image_dir / "net", IMAGE, APP)


@pytest.fixture
def runner(daemon: ctd.Daemon, ns: str, tmp_path: Path, net_image: Path) -> Iterator[Runner]:
    r = Runner(daemon, ns, tmp_path / "runc", daemon.dir.parent / "ukrun-state")
    daemon.import_image(ns, net_image, SNAPSHOTTER)
    yield r
    remove_containers(r)


def _ask(pod: netns.Pod, deadline: float) -> str:
    """The guest's answer on port 8080, polling (bounded) while it boots."""
    while time.monotonic() < deadline:
        proc = pod.run("busybox", "nc", "-w", "2", netns.CONTAINER_IP, "8080")
        if "guest kernel" in proc.stdout:
            return proc.stdout
        time.sleep(0.5)
    return ""


def _ukrun_links(pod: netns.Pod) -> str:
    return pod.inside("ip", "-o", "link", "show").stdout


def test_a_linux_guest_answers_on_its_containers_address(runner: Runner, pod: netns.Pod) -> None:
    proc = runner.run("n1", flags=("--detach", "--with-ns", f"network:{pod.path}"), image=IMAGE)
    assert proc.returncode == 0, proc.stderr
    runner.wait_status("n1", "RUNNING")
    tap = tap_name("n1")
    assert tap in _ukrun_links(pod)
    # ukrun's filters, as tc reads them back: at its own priority, a match-all u32 redirecting each way.
    for source, target in (("eth0", tap), (tap, "eth0")):
        shown = pod.inside("tc", "filter", "show", "dev", source, "ingress").stdout
        assert f"pref {PRIO} u32" in shown and "match 00000000/00000000 at 0" in shown, shown
        assert f"mirred (Egress Redirect to device {target}) stolen" in shown, shown
    answer = _ask(pod, time.monotonic() + 90)
    assert answer.strip() == f"guest kernel {guest.kernel_release()}", answer
    # A second unikernel in the same network namespace is refused, naming the one already there.
    second = runner.run("n2", flags=("--rm", "--with-ns", f"network:{pod.path}"), image=IMAGE)
    assert second.returncode != 0 and "already carries unikernel n1" in second.stderr, second.stderr
    runner.ctr("containers", "delete", "n2")
    assert runner.ctr("task", "kill", "-s", "SIGKILL", "n1").returncode == 0
    runner.wait_status("n1", "STOPPED")
    assert runner.ctr("task", "delete", "n1").returncode == 0
    assert runner.ctr("containers", "delete", "n1").returncode == 0
    assert "tapuk" not in _ukrun_links(pod)
    assert "ingress" not in pod.inside("tc", "qdisc", "show", "dev", "eth0").stdout
    assert "eth0" in _ukrun_links(pod)  # the container's own interface stays: only what ukrun made goes
    runner.assert_clean("n1")


@pytest.mark.parametrize("step", ["create-before-tap", "create-after-tap"])
def test_a_create_killed_during_network_set_up_leaves_nothing(daemon: ctd.Daemon, ns: str, tmp_path: Path,
                                                             net_image: Path, pod: netns.Pod, step: str) -> None:
    config = write_ukrun_config(tmp_path / "ukrun.toml", tmp_path / "state")
    private = ctd.start(daemon.version, tmp_path / "d", env={"UKRUN_CONFIG": str(config), "UKRUN_CRASH_AT": step})
    try:
        r = Runner(private, ns, tmp_path / "runc", tmp_path / "state")
        private.import_image(ns, net_image, SNAPSHOTTER)
        proc = r.run("k1", flags=("--rm", "--with-ns", f"network:{pod.path}"), image=IMAGE)
        assert proc.returncode != 0
        assert "tapuk" not in _ukrun_links(pod), _ukrun_links(pod)
        assert "ingress" not in pod.inside("tc", "qdisc", "show", "dev", "eth0").stdout
        r.ctr("containers", "delete", "k1")
        r.assert_clean("k1")
    finally:
        ctd.stop(private.dir)


PLAIN = "ukrun/plain:1"
CALLER = "ukrun/net-caller:1"
# The guest also calls out to the client's namespace until it gets through: with the guest on a private
# link (172.16.1.2), only masquerading makes the answer find its way back.
CALLER_APP = APP.replace('echo "guest up"\n', 'echo "guest up"\n'
                         '(until echo "guest calls out" | /bin/busybox nc -w 2 192.0.2.1 7070; do sleep 1; done) &\n')
SIDECAR = ("/bin/busybox", "sh", "-c", "while true; do echo sidecar | /bin/busybox nc -l -p 9090; done")


@pytest.fixture(scope="session")
def caller_image(image_dir: Path) -> Path:
    return guest.linux_image(image_dir / "caller", CALLER, CALLER_APP)


@pytest.fixture(scope="session")
def plain_image(image_dir: Path) -> Path:
    return images.raw_image(image_dir / "plain", PLAIN, [[
        Entry("/bin/busybox", source=Path("/bin/busybox"), mode=0o755), Entry("/bin/sh", symlink="busybox")]])


def _answer(pod: netns.Pod, port: int, expect: str, deadline: float) -> str:
    while time.monotonic() < deadline:
        proc = pod.run("busybox", "nc", "-w", "2", netns.CONTAINER_IP, str(port))
        if expect in proc.stdout:
            return proc.stdout.strip()
        time.sleep(0.5)
    return ""


def _nat_tables(pod: netns.Pod) -> str:
    return pod.inside("nft", "list", "tables").stdout


def test_static_mode_publishes_the_guest_and_the_pods_other_container_keeps_its_traffic(
    runner: Runner, pod: netns.Pod, plain_image: Path, caller_image: Path,
) -> None:
    """A pod of a unikernel and an ordinary (runc) container: in static mode the guest sits on a private
    link, its published port is DNATed to it, its own calls out are masqueraded, and every other port
    stays the pod's own."""
    runner.daemon.import_image(runner.ns, plain_image, SNAPSHOTTER)
    runner.daemon.import_image(runner.ns, caller_image, SNAPSHOTTER)
    sidecar = runner.ctr("run", "--detach", "--with-ns", f"network:{pod.path}", PLAIN, "side", *SIDECAR)
    assert sidecar.returncode == 0, sidecar.stderr
    listener = subprocess.Popen(["ip", "netns", "exec", pod.client, "busybox", "nc", "-l", "-p", "7070"],
                                stdout=subprocess.PIPE, text=True)
    try:
        proc = runner.run("s1", flags=("--detach", "--with-ns", f"network:{pod.path}", "--annotation",
                                       "io.ukrun.network=static", "--annotation",
                                       "io.ukrun.network.publish=8080/tcp"), image=CALLER)
        assert proc.returncode == 0, proc.stderr
        called, _ = listener.communicate(timeout=120)
    finally:
        listener.kill()
        listener.wait()
    assert called.strip() == "guest calls out"
    runner.wait_status("s1", "RUNNING")
    assert "tapuk" in _ukrun_links(pod) and "ukrun_" in _nat_tables(pod)
    assert "ingress" not in pod.inside("tc", "qdisc", "show", "dev", "eth0").stdout  # eth0 stays the pod's
    deadline = time.monotonic() + 90
    assert _answer(pod, 8080, "guest kernel", deadline) == f"guest kernel {guest.kernel_release()}"
    assert _answer(pod, 9090, "sidecar", deadline) == "sidecar"
    assert runner.ctr("task", "kill", "-s", "SIGKILL", "s1").returncode == 0
    runner.wait_status("s1", "STOPPED")
    assert runner.ctr("task", "delete", "s1").returncode == 0
    assert runner.ctr("containers", "delete", "s1").returncode == 0
    assert "tapuk" not in _ukrun_links(pod) and "ukrun_" not in _nat_tables(pod)
    assert _answer(pod, 9090, "sidecar", time.monotonic() + 30) == "sidecar"  # the pod's container lives on
    runner.assert_clean("s1")
