"""Several unikernels and an ordinary container in one pod (a network namespace of testbed.netns), through
ctr, the stock shim and ukrun: each unikernel declares its ports (an annotation, or its image's
ExposedPorts), gets a private link of its own and only those ports, from the pod's address and from
127.0.0.1; the ordinary container keeps its own; a port claimed twice is refused, also when two creates
race; and deleting the unikernels leaves the pod as CNI made it."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from testbed import containerd as ctd
from testbed import guest, images, netns
from tests.integration.conftest import SNAPSHOTTER, remove_containers, write_ukrun_config
from tests.integration.runner import UKRUN, Runner
from ukrun.image.build import Entry
from ukrun.network.base import tap_name
from ukrun.runtime import state as st

IMAGE, EXPOSING, PLAIN = "ukrun/pod-guest:1", "ukrun/pod-guest-exposing:1", "ukrun/pod-plain:1"
# The guest serves on $PORT what it is and what the pod's sidecar said when it called the pod's address.
APP = """#!/bin/sh
p=${PORT:-8080}
(until s=$(/bin/busybox nc -w 2 "$POD_IP" 9090 </dev/null) && [ -n "$s" ]; do sleep 1; done; echo "$s" > /tmp/side) &
while true; do
  echo "guest kernel $(/bin/busybox uname -r) on $p; the sidecar said: $(cat /tmp/side 2>/dev/null)" \\
    | /bin/busybox nc -l -p "$p"
done
"""
# The ordinary container: its own listener on 9090, and on 9091 what it got from the guests on localhost.
SIDECAR = """b=/bin/busybox
(while true; do echo sidecar | $b nc -l -p 9090; done) &
while true; do
  a=$($b nc -w 3 127.0.0.1 8081 </dev/null); c=$($b nc -w 3 127.0.0.1 8082 </dev/null)
  echo "localhost:8081 [$a] localhost:8082 [$c]" | $b nc -l -p 9091
done
"""


@pytest.fixture(scope="session")
def pod_images(image_dir: Path) -> tuple[Path, ...]:
    plain = images.raw_image(image_dir / "pod", PLAIN, [[
        Entry("/bin/busybox", source=Path("/bin/busybox"), mode=0o755), Entry("/bin/sh", symlink="busybox")]])
    return (guest.linux_image(image_dir / "pod", IMAGE, APP),
            guest.linux_image(image_dir / "pod-exposing", EXPOSING, APP, ports=("8082/tcp",)), plain)


@pytest.fixture
def runner(daemon: ctd.Daemon, ns: str, tmp_path: Path, pod_images: tuple[Path, ...]) -> Iterator[Runner]:
    r = Runner(daemon, ns, tmp_path / "runc", daemon.dir.parent / "ukrun-state")
    for tar in pod_images:
        daemon.import_image(ns, tar, SNAPSHOTTER)
    yield r
    remove_containers(r)


def answer(pod: netns.Pod, port: int, done: Callable[[str], bool], seconds: float = 120) -> str:
    """What the pod's address answers on `port`, from the client's namespace, polled until `done` holds."""
    deadline, out = time.monotonic() + seconds, ""
    while time.monotonic() < deadline:
        out = pod.run("busybox", "nc", "-w", "3", netns.CONTAINER_IP, str(port)).stdout.strip()
        if done(out):
            break
        time.sleep(0.5)
    return out


def run_guest(r: Runner, cid: str, port: int, *flags: str, image: str = IMAGE,
              pod: netns.Pod) -> subprocess.CompletedProcess[str]:
    return r.run(cid, image=image, flags=("--detach", "--with-ns", f"network:{pod.path}", "--env", f"PORT={port}",
                                          "--env", f"POD_IP={netns.CONTAINER_IP}", *flags))


def pod_state(pod: netns.Pod) -> dict[str, str]:
    """What ukrun may have added to the pod's namespace, as the tools show it: links by name and alias."""
    links = [(line.split(":")[1].strip().split("@")[0], line.partition("alias ")[2].split("\\")[0].strip())
             for line in pod.inside("ip", "-d", "-o", "link", "show").stdout.splitlines()]
    return {"links": "\n".join(f"{name}: alias {alias}" for name, alias in links),
            "addresses": pod.inside("ip", "-o", "-4", "addr", "show").stdout,
            "routes": pod.inside("ip", "-4", "route", "show").stdout,
            "tables": pod.inside("nft", "list", "tables").stdout}


def stop(r: Runner, *cids: str) -> None:
    for cid in cids:
        assert r.ctr("task", "kill", "-s", "SIGKILL", cid).returncode == 0
        r.wait_status(cid, "STOPPED")
        assert r.ctr("task", "delete", cid).returncode == 0
        assert r.ctr("containers", "delete", cid).returncode == 0


def test_two_unikernels_and_an_ordinary_container_share_a_pod_each_on_its_own_ports(
        runner: Runner, pod: netns.Pod) -> None:
    before = pod_state(pod)
    side = runner.ctr("run", "--detach", "--with-ns", f"network:{pod.path}", PLAIN, "side", "/bin/sh", "-c", SIDECAR)
    assert side.returncode == 0, side.stderr
    # u1 declares its port by annotation, u2 by its image's ExposedPorts.
    for cid, port, flags, image in (("u1", 8081, ("--annotation", "io.ukrun.ports=8081/tcp"), IMAGE),
                                    ("u2", 8082, (), EXPOSING)):
        proc = run_guest(runner, cid, port, *flags, image=image, pod=pod)
        assert proc.returncode == 0, proc.stderr
    said = "the sidecar said: sidecar"
    release = guest.kernel_release()
    for cid, port in (("u1", 8081), ("u2", 8082)):  # from outside, at the pod's address; each calls the sidecar
        assert answer(pod, port, lambda out: said in out) == f"guest kernel {release} on {port}; {said}", cid
    assert answer(pod, 9090, lambda out: out == "sidecar") == "sidecar"  # the ordinary container keeps its own
    both = answer(pod, 9091, lambda out: out.count(said) == 2, seconds=60)  # the sidecar, over 127.0.0.1
    assert both == f"localhost:8081 [guest kernel {release} on 8081; {said}] localhost:8082 [guest kernel {release} " \
                   f"on 8082; {said}]", both
    now = pod_state(pod)
    for cid, port in (("u1", 8081), ("u2", 8082)):
        assert f"{tap_name(cid)}: alias ukrun:{cid} tcp:{port}" in now["links"], now["links"]
    assert now["tables"].count("table ip ukrun_") == 2 and now["addresses"].count(" 100.127.") == 2
    # A third unikernel: a port already claimed is refused naming its owner; without ports, refused too.
    taken = run_guest(runner, "u3", 8081, "--annotation", "io.ukrun.ports=8083,8081", pod=pod)
    assert taken.returncode != 0 and "port 8081/tcp is already forwarded to unikernel u1" in taken.stderr, taken.stderr
    runner.ctr("containers", "delete", "u3")
    whole = run_guest(runner, "u4", 8084, pod=pod)
    assert whole.returncode != 0 and "and this one declares no ports, so it would take the whole interface" \
        in whole.stderr, whole.stderr
    runner.ctr("containers", "delete", "u4")
    stop(runner, "u1", "u2")
    assert pod_state(pod) == before, pod_state(pod)  # no tap, address, route or table of ukrun's is left
    assert answer(pod, 9090, lambda out: out == "sidecar", seconds=30) == "sidecar"  # the pod lives on
    for cid in ("u1", "u2"):
        assert runner.leftovers(cid, pod) == []
        runner.assert_clean(cid)


def test_of_two_creates_racing_for_one_port_of_a_pod_one_gets_it(runner: Runner, pod: netns.Pod) -> None:
    """Both plan while neither has its tap, so the plan-time check passes for both; the test holds the
    pod's lock (as a third create would) until both wait at their network step. They make nothing while
    they wait; then the check again under the lock, right before the tap, refuses the second."""
    before = pod_state(pod)
    results: dict[str, subprocess.CompletedProcess[str]] = {}

    def create(cid: str) -> None:
        results[cid] = run_guest(runner, cid, 8081, "--annotation", "io.ukrun.ports=8081", pod=pod)

    def waiting(cid: str) -> bool:
        folder = runner.runc_root / runner.ns  # the tap is recorded before it is made
        return st.is_ours(folder, cid) and st.load(folder, cid).tap != ""

    threads = [threading.Thread(target=create, args=(cid,)) for cid in ("r1", "r2")]
    fd = os.open(pod.path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        for t in threads:
            t.start()
        assert ctd.wait_for(lambda: waiting("r1") and waiting("r2"), timeout=120)
        time.sleep(1)
        assert "tapuk" not in pod_state(pod)["links"] and all(t.is_alive() for t in threads)
    finally:
        os.close(fd)
    for t in threads:
        t.join()
    won = [cid for cid, proc in results.items() if proc.returncode == 0]
    assert len(won) == 1, {cid: proc.stderr for cid, proc in results.items()}
    (lost,) = set(results) - set(won)
    assert f"port 8081/tcp is already forwarded to unikernel {won[0]}" in results[lost].stderr, results[lost].stderr
    runner.ctr("containers", "delete", lost)
    assert runner.leftovers(lost) == []
    stop(runner, won[0])
    assert pod_state(pod) == before


def test_ukrun_plan_shows_the_private_link_and_the_forwarded_ports(tmp_path: Path, pod: netns.Pod) -> None:
    """A bundle in the pod's namespace, where a tap labelled as another unikernel's claims 8081 and holds
    the subnet this container's ID hashes to: the plan forwards 8082 and moves to the next subnet; 8081
    is refused naming the other."""
    bundle = tmp_path / "bundle"
    (bundle / "rootfs" / "unikernel").mkdir(parents=True)
    (bundle / "rootfs" / "unikernel" / "kernel").write_bytes(b"kernel")
    keys = {"unikernelType": "unikraft", "hypervisor": "qemu", "binary": "/unikernel/kernel",
            "unikernelVersion": "0.17.0"}
    spec = {"ociVersion": "1.0.2", "root": {"path": "rootfs"}, "process": {"args": ["/app"], "env": [], "cwd": "/"},
            "annotations": {**{f"com.urunc.unikernel.{k}": v for k, v in keys.items()},
                            "io.ukrun.ports": "8082/tcp,53/udp"},
            "linux": {"namespaces": [{"type": "network", "path": pod.path}]}}
    (bundle / "config.json").write_text(json.dumps(spec))
    config = write_ukrun_config(tmp_path / "ukrun.toml", tmp_path / "state")
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "UKRUN_CONFIG": str(config),
           "CONTAINERD_ADDRESS": str(tmp_path / "no-containerd.sock")}

    def plan(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([UKRUN, "plan", "--bundle", str(bundle), "--id", "p1", *extra], capture_output=True,
                              text=True, env=env, timeout=60)

    before = pod_state(pod)
    first = json.loads(plan("--json").stdout)["network"]["private_link"]["host"]
    other = "tapukother"
    pod.inside("ip", "tuntap", "add", "dev", other, "mode", "tap")
    try:
        pod.inside("ip", "link", "set", other, "alias", "ukrun:other tcp:8081")
        pod.inside("ip", "addr", "add", first, "dev", other)
        proc = plan("--json")
        assert proc.returncode == 0, proc.stderr
        net = json.loads(proc.stdout)["network"]
        assert net["mode"] == "ports" and net["forward"]["ports"] == ["8082/tcp", "53/udp"]
        assert net["forward"]["from"] == [netns.CONTAINER_IP, "127.0.0.1"]
        host, guest_cidr = net["private_link"]["host"], net["private_link"]["guest"]
        assert host != first and host.startswith("100.127.") and net["address"] == guest_cidr
        shown = plan().stdout
        assert f"link       {tap_name('p1')}: {host} (ukrun's end), {guest_cidr} (the guest's)" in shown, shown
        assert f"forward    8082/tcp, 53/udp from {netns.CONTAINER_IP} and 127.0.0.1" in shown, shown
        spec["annotations"]["io.ukrun.ports"] = "8081"  # type: ignore[index]
        (bundle / "config.json").write_text(json.dumps(spec))
        refused = plan()
        assert refused.returncode == 1 and "port 8081/tcp is already forwarded to unikernel other" in refused.stderr
        # A pod spec's words never reach nft: a port is a number and tcp or udp, or the container is refused.
        spec["annotations"]["io.ukrun.ports"] = '8082/tcp dnat to 192.0.2.1;flush ruleset'  # type: ignore[index]
        (bundle / "config.json").write_text(json.dumps(spec))
        hostile = plan()
        assert hostile.returncode == 1 and "the protocol must be tcp or udp" in hostile.stderr, hostile.stderr
    finally:
        pod.inside("ip", "link", "del", other)
    assert pod_state(pod) == before  # planning changed nothing in the namespace
