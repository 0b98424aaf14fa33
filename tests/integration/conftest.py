"""Fixtures for tests against a real, private containerd (both cached versions) on real loop devices."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed import containerd as ctd
from testbed import guest, images, netns, reliability
from testbed import host as tbhost
from tests.integration.runner import IMAGE, Runner
from ukrun import host
from ukrun.artifacts.store import ArtifactStore
from ukrun.containerd.client import Client
from ukrun.errors import HostError

SNAPSHOTTER = "blockfile"
VIRTIOFSD = ctd.cache_dir() / "virtiofsd" / "virtiofsd"  # a wrapper: trixie's virtiofsd with its own libc


RELIABILITY = reliability.Report()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for mark in item.iter_markers("reliability"):
            RELIABILITY.expected[mark.args[0]] += 1
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
            if os.geteuid() != 0:
                item.add_marker(pytest.mark.skip(reason="needs root (mounts, loop devices, containerd)"))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if exitstatus == 0 and RELIABILITY.complete():
        written = RELIABILITY.write([ctd.installed_version(v) for v in ctd.VERSIONS])
        print(f"\nwrote {written.relative_to(Path(__file__).resolve().parents[2])}")


@pytest.fixture
def report() -> reliability.Report:
    """Where a reliability test records its row, once everything it asserts has held."""
    return RELIABILITY


@pytest.fixture(scope="session", params=ctd.VERSIONS, ids=[f"containerd-{v}" for v in ctd.VERSIONS])
def daemon(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ctd.Daemon]:
    """A private containerd; its shims run ukrun with a config whose state lives in the daemon's folder."""
    folder = tmp_path_factory.mktemp(f"ctd{request.param}")
    config = write_ukrun_config(folder / "ukrun.toml", folder / "ukrun-state")
    # Crash-free until a test writes a point's name into the arm file (ukrun.crashpoints).
    env = {"UKRUN_CONFIG": str(config), "UKRUN_CRASH_ARM": str(arm_file(folder / "d"))}
    d = ctd.start(request.param, folder / "d", env=env)
    yield d
    ctd.stop(d.dir)
    tbhost.unmount_below(folder)


WARM_IDLE = 120.0  # seconds: longer than any test's wait between two containers of an image


@pytest.fixture(scope="session")
def warm_daemon(daemon: ctd.Daemon, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ctd.Daemon]:
    """A private containerd, of the `daemon` fixture's version, whose ukrun keeps views warm: its configuration
    file (`daemon_config`) is the warm tests' to rewrite (`set_idle`); crash-free until armed, like `daemon`."""
    folder = tmp_path_factory.mktemp(f"warm{daemon.version}")
    config = write_ukrun_config(folder / "ukrun.toml", folder / "ukrun-state", idle=WARM_IDLE)
    d = ctd.start(daemon.version, folder / "d", env={"UKRUN_CONFIG": str(config),
                                                     "UKRUN_CRASH_ARM": str(arm_file(folder / "d"))})
    yield d
    ctd.stop(d.dir)
    tbhost.unmount_below(folder)


def set_idle(daemon: ctd.Daemon, seconds: float) -> None:
    """The idle time the warm daemon's ukrun uses from its next call on (the file's change is seen at once)."""
    write_ukrun_config(daemon_config(daemon), daemon.dir.parent / "ukrun-state", idle=seconds)


@pytest.fixture
def warm(warm_daemon: ctd.Daemon, ns: str, tmp_path: Path, guest_image: Path) -> Iterator[Runner]:
    """Runs the linux guest image on the warm daemon; after the test, removes its containers and, through
    `ukrun gc --idle`, its idle views: nothing may stay mounted."""
    set_idle(warm_daemon, WARM_IDLE)
    state = warm_daemon.dir.parent / "ukrun-state"
    r = Runner(warm_daemon, ns, tmp_path / "runc", state, config=daemon_config(warm_daemon))
    warm_daemon.import_image(ns, guest_image, SNAPSHOTTER)
    yield r
    remove_containers(r)
    cleaned = r.gc("--idle")
    assert cleaned.returncode == 0, cleaned.stderr
    left = [m.mount_point for m in host.mountinfo() if m.mount_point.startswith(str(state) + "/")]
    assert not left, f"mounts stayed: {left}"


def daemon_config(daemon: ctd.Daemon) -> Path:
    """The ukrun configuration the daemon's shims read (`idle = 0`), for operator commands beside them."""
    return daemon.dir.parent / "ukrun.toml"


def arm_file(daemon_dir: Path) -> Path:
    return daemon_dir.parent / "crash-arm"


def write_ukrun_config(config_file: Path, state_root: Path, virtiofsd: Path = VIRTIOFSD, idle: float = 0,
                       **monitor: str) -> Path:
    """ukrun's configuration for the tests: folder rootfs go over 9p unless a test's annotation chooses
    virtio-fs, served by the virtiofsd scripts/setup put in the cache. Views are released with their last
    user (`idle = 0`), so that every check of "nothing left" means exactly that; warm views (`idle`) are
    proven on a daemon of their own (test_warm)."""
    extra = "".join(f'{k} = "{v}"\n' for k, v in monitor.items())
    config_file.write_text(
        f'[artifacts]\nstate_root = "{state_root}"\nidle = {idle:g}\n[timing]\nlog = "{state_root}/timing.jsonl"\n'
        f'[runtime]\nrootfs_share = "9p"\n[extra_binaries.virtiofsd]\npath = "{virtiofsd}"\n'
        f"[monitors.qemu]\ndefault_memory_mb = 256\n{extra}"
    )
    return config_file


def namespace_of(nodeid: str) -> str:
    return "t" + hashlib.sha256(nodeid.encode()).hexdigest()[:12]


@pytest.fixture
def ns(request: pytest.FixtureRequest) -> str:
    return namespace_of(request.node.nodeid)


@pytest.fixture(autouse=True)
def purge_namespace(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test, the session daemons it used lose its namespace and all in it (Daemon.purge). Set up
    before any other fixture, so torn down after all of them."""
    daemons = [request.getfixturevalue(name) for name in ("daemon", "warm_daemon") if name in request.fixturenames]
    yield
    for d in daemons:
        d.purge(namespace_of(request.node.nodeid))


@pytest.fixture
def pod(ns: str) -> Iterator[netns.Pod]:
    """A network namespace for the test's container and a client's beside it (testbed.netns)."""
    p = netns.make(ns)
    yield p
    netns.remove(p)


@pytest.fixture
def client(daemon: ctd.Daemon, ns: str) -> Iterator[Client]:
    c = Client(daemon.address, ns)
    yield c
    c.close()


@pytest.fixture
def state_root(tmp_path: Path, daemon: ctd.Daemon) -> Iterator[Path]:
    """The state root; after the test nothing may stay mounted below it or looped from the daemon."""
    root = tmp_path / "state"
    root.mkdir()
    ours = (str(daemon.dir) + "/", str(tmp_path) + "/")
    yield root
    left_mounts = [m.mount_point for m in host.mountinfo() if m.mount_point.startswith(str(root))]
    left_loops = {d: b for d, b in host.loop_devices().items() if b.startswith(ours)}
    tbhost.unmount_below(root)
    for dev in left_loops:
        with contextlib.suppress(HostError):  # an autoclear loop device may go by itself meanwhile
            host.detach_loop(dev)
    assert not left_mounts, f"the test left mounts: {left_mounts}"
    assert not left_loops, f"the test left loop devices: {left_loops}"


@pytest.fixture
def store(state_root: Path, daemon: ctd.Daemon, ns: str) -> Iterator[ArtifactStore]:
    s = ArtifactStore(state_root, ns, lambda: Client(daemon.address, ns))
    yield s
    if s._client is not None:
        s._client.close()


@pytest.fixture(scope="session")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("images")


@pytest.fixture(scope="session")
def basic_image(image_dir: Path) -> Path:
    """Marked artifact layer with an unrelated layer above it."""
    from ukrun.image.build import Entry

    return images.unikernel_image(image_dir, "ukrun/basic:1", above=[[Entry("/app/data", data=b"app")]])


def load(daemon: ctd.Daemon, ns: str, tar: Path, name: str, containers: list[str]) -> None:
    daemon.import_image(ns, tar, SNAPSHOTTER)
    for cid in containers:
        daemon.create_container(ns, name, cid, SNAPSHOTTER)


APP = """#!/bin/sh
case "$1" in
  exit) echo "guest says $2, GREETING=$GREETING"; echo "$2" > /guest-file; exit "$3" ;;
  sleep) echo "guest sleeping"; exec /bin/busybox sleep 600 ;;
  panic) echo c > /proc/sysrq-trigger ;;
esac
echo "unknown command $1"; exit 99
"""


@pytest.fixture(scope="session")
def guest_image(image_dir: Path) -> Path:
    return guest.linux_image(image_dir / "guest", IMAGE, APP)


@pytest.fixture
def runner(daemon: ctd.Daemon, ns: str, tmp_path: Path, guest_image: Path) -> Iterator[Runner]:
    """Runs containers of the linux guest image through ctr and the stock shim; kills what is left after."""
    r = Runner(daemon, ns, tmp_path / "runc", daemon.dir.parent / "ukrun-state")
    daemon.import_image(ns, guest_image, SNAPSHOTTER)
    yield r
    for line in r.ctr("task", "ls").stdout.splitlines()[1:]:
        r.ctr("task", "kill", "-s", "SIGKILL", line.split()[0])
        r.ctr("task", "delete", "--force", line.split()[0])


def remove_containers(r: Runner) -> None:
    """Kills and deletes whatever a test left in the runner's namespace, tasks first."""
    for cid in r.ctr("containers", "ls", "-q", timeout=30).stdout.split():
        r.ctr("task", "kill", "-s", "SIGKILL", cid, timeout=30)
        r.ctr("task", "delete", "--force", cid, timeout=60)
        r.ctr("containers", "delete", cid, timeout=30)


@pytest.fixture
def solo5(daemon: ctd.Daemon, ns: str, tmp_path: Path) -> Iterator[Runner]:
    """A private containerd whose ukrun finds the Solo5 tenders scripts/build-unikernels built (skips
    without them)."""
    from testbed.unikernels import SOLO5, need

    need(SOLO5 / "solo5-spt")
    config = write_ukrun_config(tmp_path / "ukrun.toml", tmp_path / "state")
    with open(config, "a") as f:
        for monitor in ("spt", "hvt"):
            f.write(f'[monitors.{monitor}]\npath = "{SOLO5 / f"solo5-{monitor}"}"\ndefault_memory_mb = 64\n')
    # A small scratch file: test_blk walks its whole device, which takes solo5-hvt seconds per MiB here.
    private = ctd.start(daemon.version, tmp_path / "d", env={"UKRUN_CONFIG": str(config)}, scratch_size="8M")
    r = Runner(private, ns, tmp_path / "runc", tmp_path / "state")
    try:
        yield r
        remove_containers(r)
    finally:
        ctd.stop(private.dir)
