"""runc's other verbs on real unikernels that cannot run a second process (Unikraft's c-http on qemu, Solo5's
test_net on spt and hvt), through ctr and the stock shim: exec and checkpoint answer with their sentence
at once, ps lists the container's processes, pause and resume freeze and thaw the VM, and update
applies a CPU limit to its cgroup and refuses a new memory size, as the shim calls it."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed import containerd as ctd
from testbed import netns
from testbed.unikernels import SOLO5, UNIKRAFT, need
from tests.integration.conftest import remove_containers
from tests.integration.runner import UKRUN, Runner
from tests.integration.test_unikernel_network import TEST_NET_GATEWAY, TEST_NET_IP, _image, _run_detached
from ukrun.unikernel import UnikernelConfig

UNIKRAFT_SENTENCE = ("exec is not possible in container {cid}: a Unikraft unikernel runs a single application and "
                     "cannot start another process; to look inside it, read its output")
SOLO5_SENTENCE = ("exec is not possible in container {cid}: a Solo5 unikernel (MirageOS and the like) runs a single "
                  "application and cannot start another process")


@pytest.fixture
def runner(daemon: ctd.Daemon, ns: str, tmp_path: Path) -> Iterator[Runner]:
    r = Runner(daemon, ns, tmp_path / "runc", daemon.dir.parent / "ukrun-state")
    yield r
    remove_containers(r)


def _timed(r: Runner, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    t0 = time.monotonic()
    proc = r.ctr(*args, timeout=30)
    return proc, time.monotonic() - t0


def _verbs(r: Runner, cid: str, sentence: str, monitor: str, tmp_path: Path) -> dict[str, float]:
    """Every verb on a running unikernel; their whole ctr calls' durations."""
    took = {}
    refused, took["exec"] = _timed(r, "task", "exec", "--exec-id", "e1", "--fifo-dir", str(r.fifo_dir), cid,
                                   "/bin/sh", "-c", "true")
    assert refused.returncode != 0 and sentence.format(cid=cid) in refused.stderr, refused.stderr
    listed, took["ps"] = _timed(r, "task", "ps", cid)
    pids = [int(line.split()[0]) for line in listed.stdout.splitlines()[1:]]
    names = [Path(f"/proc/{p}/comm").read_text().strip() for p in pids]
    assert len(pids) == 2 and any(monitor in n for n in names), (listed.stdout, names)  # the init and the monitor
    freezer = Path(f"/sys/fs/cgroup/freezer/{r.ns}/{cid}/freezer.state")
    paused, took["pause"] = _timed(r, "task", "pause", cid)
    assert paused.returncode == 0, paused.stderr
    assert r.task_status(cid) == "PAUSED" and freezer.read_text().strip() == "FROZEN"
    resumed, took["resume"] = _timed(r, "task", "resume", cid)
    assert resumed.returncode == 0 and r.task_status(cid) == "RUNNING", resumed.stderr
    assert freezer.read_text().strip() == "THAWED"
    assert all(Path(f"/proc/{p}").exists() for p in pids)
    checkpoint, took["checkpoint"] = _timed(r, "task", "checkpoint", cid)
    assert checkpoint.returncode != 0 and f"checkpoint is not supported for container {cid}" in checkpoint.stderr
    # update, with the shim's very command line (go-runc: update --resources - ID, the resources on stdin)
    log = tmp_path / f"{cid}-log.json"
    update = [UKRUN, "--root", str(r.runc_root / r.ns), "--log", str(log), "--log-format", "json", "update",
              "--resources", "-", cid]
    t0 = time.monotonic()
    applied = subprocess.run(update, input=json.dumps({"cpu": {"quota": 50000, "period": 100000}}), text=True,
                             capture_output=True, timeout=30)
    took["update"] = time.monotonic() - t0
    assert applied.returncode == 0, applied.stderr
    assert Path(f"/sys/fs/cgroup/cpu/{r.ns}/{cid}/cpu.cfs_quota_us").read_text().strip() == "50000"
    resized = subprocess.run(update, input=json.dumps({"memory": {"limit": 1 << 30}}), text=True,
                             capture_output=True, timeout=30)
    assert resized.returncode == 1 and "a running guest cannot be resized to 1024 MiB" in log.read_text()
    assert "cannot be resized" in resized.stderr  # go-runc shows an update's output as its error
    return took


def _report(what: str, took: dict[str, float]) -> None:
    print(f"{what}: " + ", ".join(f"{verb} {seconds * 1000:.0f} ms" for verb, seconds in took.items()))


def test_unikraft_answers_every_verb(runner: Runner, pod: netns.Pod, tmp_path: Path) -> None:
    kernel = need(UNIKRAFT / "c-http_qemu-x86_64")
    config = UnikernelConfig("unikraft", "qemu", "/unikernel/kernel", version="0.16.3")
    image = _image(runner, tmp_path, "ukrun/uk-c-http:1", config, kernel)
    _run_detached(runner, "v1", image, pod, tmp_path / "c-http.log")
    took = _verbs(runner, "v1", UNIKRAFT_SENTENCE, "qemu", tmp_path)
    _report("unikraft on qemu", took)
    url = f"http://{netns.CONTAINER_IP}:8080/"
    assert ctd.wait_for(lambda: "Hello" in pod.run("curl", "-s", "-m", "3", url, timeout=10).stdout, timeout=120,
                        interval=1), "c-http does not answer after pause and resume"


@pytest.fixture
def test_net_pod(ns: str) -> Iterator[netns.Pod]:
    p = netns.make(ns, TEST_NET_IP, TEST_NET_GATEWAY)
    yield p
    netns.remove(p)


@pytest.mark.parametrize("monitor", ("spt", "hvt"))
def test_solo5_answers_every_verb(solo5: Runner, test_net_pod: netns.Pod, tmp_path: Path, monitor: str) -> None:
    kernel = need(SOLO5 / f"test_net.{monitor}")
    config = UnikernelConfig("mirage", monitor, "/unikernel/kernel")
    image = _image(solo5, tmp_path, f"ukrun/solo5-net-{monitor}:1", config, kernel, cmd=("verbose",))
    _run_detached(solo5, "v2", image, test_net_pod, tmp_path / "test_net.log")
    took = _verbs(solo5, "v2", SOLO5_SENTENCE, f"solo5-{monitor}", tmp_path)
    _report(f"solo5 test_net on {monitor}", took)
    assert solo5.task_status("v2") == "RUNNING"
