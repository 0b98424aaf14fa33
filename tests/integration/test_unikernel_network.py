"""Real unikernels with their container's network, through ctr, the stock shim and ukrun.

Each runs in a network namespace pair the test makes (testbed.netns: 192.0.2.0/24, only inside them) and
is asked from the client namespace at the container's address:
- Unikraft's c-http (lwip) on qemu: an HTTP GET gets "Hello from Unikraft!" (`netdev.ip=` and virtio-net);
- a MirageOS-style Solo5 unikernel on spt and hvt (testbed.solo5net: device `service`, address from
  `--ipv4=`): ARP and ICMP echo at the container's address, with the container's MAC;
- Solo5's own test_net on spt and hvt, which declares its net device as `service0` in its manifest and
  answers only at its fixed 10.0.0.2 (so its pod has that address): ukrun attaches the network under the
  manifest's name and passes no MirageOS `--ipv4=` flags, which test_net would refuse; ARP and ICMP echo
  answer at the container's address with the container's MAC.
Afterwards nothing of ukrun's stays: no tap, no ingress qdisc on the container's eth0, no monitor.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from testbed import containerd as ctd
from testbed import host as tbhost
from testbed import netns, solo5net
from testbed.unikernels import SOLO5, UNIKRAFT, need
from tests.integration.conftest import SNAPSHOTTER, remove_containers
from tests.integration.runner import Runner
from ukrun.image.build import build_unikernel_image
from ukrun.unikernel import UnikernelConfig

MONITORS = ("spt", "hvt")
HELLO = "Hello from Unikraft!"


@pytest.fixture
def runner(daemon: ctd.Daemon, ns: str, tmp_path: Path) -> Iterator[Runner]:
    r = Runner(daemon, ns, tmp_path / "runc", daemon.dir.parent / "ukrun-state")
    yield r
    remove_containers(r)


def _image(r: Runner, workdir: Path, name: str, config: UnikernelConfig, kernel: Path,
           cmd: tuple[str, ...] = ()) -> str:
    tar = workdir / f"{name.replace('/', '_').replace(':', '_')}.tar"
    build_unikernel_image(tar, name, config, kernel, cmd=cmd)
    r.daemon.import_image(r.ns, tar, SNAPSHOTTER)
    return name


def _taps(pod: netns.Pod) -> list[str]:
    out = pod.inside("ip", "-o", "link", "show").stdout
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if "tapuk" in line]


def _mac(pod: netns.Pod) -> str:
    return pod.inside("cat", "/sys/class/net/eth0/address").stdout.strip()


def _poll(probe: Callable[[], str], done: Callable[[str], bool], *, attempts: int, seconds: float) -> str:
    """Calls `probe` until `done` holds of its answer: at most `attempts` times and `seconds` long."""
    deadline = time.monotonic() + seconds
    answer = ""
    for _ in range(attempts):
        answer = probe()
        if done(answer) or time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    return answer


def _run_detached(r: Runner, cid: str, image: str, pod: netns.Pod, log: Path) -> None:
    proc = r.run(cid, image=image,
                 flags=("--detach", "--with-ns", f"network:{pod.path}", "--log-uri", f"file://{log}"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    r.wait_status(cid, "RUNNING", timeout=60)


def _stop(r: Runner, cid: str) -> None:
    assert r.ctr("task", "kill", "-s", "SIGKILL", cid, timeout=30).returncode == 0
    r.wait_status(cid, "STOPPED", timeout=30)
    assert r.ctr("task", "delete", cid, timeout=60).returncode == 0
    assert r.ctr("containers", "delete", cid, timeout=30).returncode == 0


def _assert_nothing_left(r: Runner, pod: netns.Pod, cid: str, taps: list[str]) -> None:
    assert not _taps(pod), pod.inside("ip", "-o", "link", "show").stdout
    qdiscs = pod.inside("tc", "qdisc", "show", "dev", "eth0").stdout
    assert "ingress" not in qdiscs, qdiscs
    assert "eth0" in pod.inside("ip", "-o", "link", "show").stdout  # only what ukrun made goes
    r.assert_clean(cid)
    # Runner.monitors sees qemu only: a Solo5 tender names its tap in its argv.
    left = [pid for tap in taps for pid in tbhost.processes_with_argument(tap)]
    assert not left, f"processes still name the tap: {left}"


def test_unikraft_c_http_answers_an_http_get_on_its_containers_address(runner: Runner, pod: netns.Pod,
                                                                      tmp_path: Path) -> None:
    kernel = need(UNIKRAFT / "c-http_qemu-x86_64")
    config = UnikernelConfig("unikraft", "qemu", "/unikernel/kernel", version="0.16.3")
    image = _image(runner, tmp_path, "ukrun/uk-c-http:1", config, kernel)
    log = tmp_path / "c-http.log"
    _run_detached(runner, "w1", image, pod, log)
    taps = _taps(pod)
    assert len(taps) == 1, taps
    url = f"http://{netns.CONTAINER_IP}:8080/"
    body = _poll(lambda: pod.run("curl", "-s", "-m", "3", url, timeout=10).stdout, lambda out: HELLO in out,
                 attempts=80, seconds=120)
    console = log.read_text(errors="replace")
    assert HELLO in body, f"no answer from {url}: {body!r}; console: {console[-2000:]}"
    # lwip took the address, prefix and gateway that ukrun read from the container's eth0 (netdev.ip=).
    assert f"Set IPv4 address {netns.CONTAINER_IP} mask 255.255.255.0 gw {netns.CLIENT_IP}" in console, console
    _stop(runner, "w1")
    _assert_nothing_left(runner, pod, "w1", taps)


@pytest.mark.parametrize("monitor", MONITORS)
def test_a_mirage_style_solo5_unikernel_answers_arp_and_ping_on_its_containers_address(
    solo5: Runner, pod: netns.Pod, tmp_path: Path, monitor: str
) -> None:
    need(SOLO5 / f"solo5-{monitor}")
    kernel = solo5net.build(tmp_path / "build", monitor)
    config = UnikernelConfig("mirage", monitor, "/unikernel/kernel")
    image = _image(solo5, tmp_path, f"ukrun/solo5-ping-{monitor}:1", config, kernel)
    log = tmp_path / "ping.log"
    _run_detached(solo5, "p1", image, pod, log)
    taps = _taps(pod)
    assert len(taps) == 1, taps
    ping = _poll(lambda: pod.run("ping", "-c", "1", "-W", "1", netns.CONTAINER_IP, timeout=10).stdout,
                 lambda out: " 1 received" in out, attempts=60, seconds=60)
    assert " 1 received" in ping, f"{ping}\nconsole: {log.read_text(errors='replace')[-2000:]}"
    # The guest answered ARP with the MAC ukrun gave it (--net-mac): the container's own.
    neigh = pod.run("ip", "neigh", "show", netns.CONTAINER_IP).stdout
    assert f"lladdr {_mac(pod)}" in neigh, neigh
    console = log.read_text(errors="replace")
    assert f"{solo5net.SERVING}{netns.CONTAINER_IP}, gateway {netns.CLIENT_IP}" in console, console
    _stop(solo5, "p1")
    _assert_nothing_left(solo5, pod, "p1", taps)


TEST_NET_IP, TEST_NET_GATEWAY = "10.0.0.2", "10.0.0.1"  # fixed in Solo5's tests/test_net/test_net.c


@pytest.fixture
def test_net_pod(ns: str) -> Iterator[netns.Pod]:
    """A pod network namespace with test_net's own address on its eth0."""
    p = netns.make(ns, TEST_NET_IP, TEST_NET_GATEWAY)
    yield p
    netns.remove(p)


@pytest.mark.parametrize("monitor", MONITORS)
def test_solo5_test_net_takes_the_network_under_its_declared_service0_and_answers_arp_and_ping(
    solo5: Runner, test_net_pod: netns.Pod, tmp_path: Path, monitor: str
) -> None:
    pod = test_net_pod
    kernel = need(SOLO5 / f"test_net.{monitor}")
    config = UnikernelConfig("mirage", monitor, "/unikernel/kernel")
    image = _image(solo5, tmp_path, f"ukrun/solo5-net-{monitor}:1", config, kernel, cmd=("verbose",))
    log = tmp_path / "test_net.log"
    _run_detached(solo5, "s1", image, pod, log)
    taps = _taps(pod)
    assert len(taps) == 1, taps
    ping = _poll(lambda: pod.run("ping", "-c", "1", "-W", "1", TEST_NET_IP, timeout=10).stdout,
                 lambda out: " 1 received" in out, attempts=60, seconds=60)
    console = log.read_text(errors="replace")
    assert " 1 received" in ping, f"{ping}\nconsole: {console[-2000:]}"
    mac = _mac(pod)
    neigh = pod.run("ip", "neigh", "show", TEST_NET_IP).stdout
    assert f"lladdr {mac}" in neigh, neigh
    # test_net acquired `service0` with the container's MAC, and its command line was only `verbose`.
    assert f"[service0] Serving ping on 10.0.0.2, with MAC: {mac.replace(':', '')}" in console, console
    assert "[service0] Received ping, sending reply" in console, console
    _stop(solo5, "s1")
    _assert_nothing_left(solo5, pod, "s1", taps)
