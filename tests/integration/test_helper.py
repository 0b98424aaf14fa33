"""The optional resident helper (`ukrun helper`, ukrun.relay) through ctr and the stock shim, on containerd 1.7 and
2.x: it serves create and delete with the same results, hands a plain container to runc through the shim's
child, and the verbs fall back to running in the shim's ukrun when it is stopped or killed; a worker killed
mid-create fails the container and leaves what any crashed create leaves."""

from __future__ import annotations

import contextlib
import marshal
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import ukrun
from testbed import containerd as ctd
from testbed import images
from tests.integration.conftest import SNAPSHOTTER, arm_file, remove_containers, write_ukrun_config
from tests.integration.runner import UKRUN, Runner
from ukrun import relay
from ukrun.helper import SETTLE_S
from ukrun.image.build import Entry

SLEEP = ("/bin/sh", "/app/run.sh", "sleep")
COMPILED = Path(UKRUN).read_bytes()[:4] == b"\x7fELF"  # the compiled front (src/front), not the Python launcher


class Helper:
    def __init__(self, socket: Path, log: Path, ukrun: tuple[str, ...] = (UKRUN,)) -> None:
        self.socket, self.log, self.ukrun = socket, log, ukrun
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([*self.ukrun, "helper", "--socket", str(self.socket)], stdout=log,
                                         stderr=subprocess.STDOUT)
        # Its own word, not the socket's existence: a killed helper leaves its socket behind.
        serving = f"serving {self.socket} (pid {self.proc.pid})"
        assert ctd.wait_for(lambda: serving in self.log.read_text(), 30), self.log.read_text()

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)
        self.proc = None

    def served(self, verb: str, cid: str) -> bool:
        return any(line.endswith(f": {verb} {cid}") for line in self.log.read_text().splitlines())


@pytest.fixture
def relayed(daemon: ctd.Daemon, ns: str, tmp_path: Path, guest_image: Path) -> Iterator[tuple[Runner, Helper]]:
    """A private containerd whose shims find a helper's socket (UKRUN_HELPER), and that helper, started."""
    config = write_ukrun_config(tmp_path / "ukrun.toml", tmp_path / "state")
    helper = Helper(tmp_path / "helper" / "helper.sock", tmp_path / "helper.log")
    private = ctd.start(daemon.version, tmp_path / "d", env={
        "UKRUN_CONFIG": str(config), "UKRUN_HELPER": str(helper.socket),
        "UKRUN_CRASH_ARM": str(arm_file(tmp_path / "d"))})
    r = Runner(private, ns, tmp_path / "runc", tmp_path / "state", config=config)
    try:
        private.import_image(ns, guest_image, SNAPSHOTTER)
        helper.start()
        yield r, helper
        remove_containers(r)
    finally:
        helper.stop()
        ctd.stop(private.dir)


def test_the_helper_serves_create_and_delete_with_the_same_results(relayed: tuple[Runner, Helper]) -> None:
    """And `start` too when the shim's ukrun is the compiled front (src/front), which relays it."""
    r, helper = relayed
    proc = r.run("h1", "/bin/sh", "/app/run.sh", "exit", "hi", "7", flags=("--rm", "--env", "GREETING=hello"))
    assert proc.returncode == 7 and "guest says hi, GREETING=hello" in proc.stdout, proc.stdout + proc.stderr
    assert helper.served("create", "h1") and helper.served("delete", "h1"), helper.log.read_text()
    assert helper.served("start", "h1") == COMPILED, helper.log.read_text()
    r.assert_clean("h1")


def test_the_compiled_front_relays_kill(relayed: tuple[Runner, Helper]) -> None:
    if not COMPILED:
        pytest.skip("scripts/setup installed the Python launcher as ukrun: it runs kill itself")
    r, helper = relayed
    assert r.run("s1", *SLEEP, flags=("--detach",)).returncode == 0
    assert ctd.wait_for(lambda: r.task_status("s1") == "RUNNING", 60)
    proc = r.ctr("task", "kill", "--signal", "SIGKILL", "s1")
    assert proc.returncode == 0, proc.stderr
    assert ctd.wait_for(lambda: r.task_status("s1") == "STOPPED", 60), r.task_status("s1")
    assert helper.served("kill", "s1"), helper.log.read_text()
    assert r.ctr("task", "delete", "s1").returncode == 0 and r.ctr("containers", "delete", "s1").returncode == 0
    r.assert_clean("s1")


def test_a_container_that_is_no_unikernel_goes_to_runc_from_the_shims_child(relayed: tuple[Runner, Helper],
                                                                          tmp_path: Path) -> None:
    r, helper = relayed
    plain = images.raw_image(tmp_path / "img", "ukrun/plain:1", [[
        Entry("/bin/busybox", source=Path("/bin/busybox"), mode=0o755), Entry("/bin/sh", symlink="busybox")]])
    r.daemon.import_image(r.ns, plain, SNAPSHOTTER)
    proc = r.run("p1", "/bin/busybox", "echo", "plain container", image="ukrun/plain:1", flags=("--rm",))
    assert proc.returncode == 0 and "plain container" in proc.stdout, proc.stdout + proc.stderr
    assert helper.served("create", "p1"), helper.log.read_text()
    r.assert_clean("p1")


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["stopped", "killed"])
def test_without_a_helper_the_verbs_run_in_the_shims_ukrun(relayed: tuple[Runner, Helper],
                                                           how: signal.Signals) -> None:
    r, helper = relayed
    helper.stop(how)  # SIGKILL leaves its socket behind: nothing answers there
    assert helper.socket.exists() == (how == signal.SIGKILL)
    proc = r.run("f1", "/bin/sh", "/app/run.sh", "exit", "alone", "0", flags=("--rm",))
    assert proc.returncode == 0 and "guest says alone" in proc.stdout, proc.stdout + proc.stderr
    assert not helper.served("create", "f1")
    r.assert_clean("f1")
    helper.start()  # a new helper takes over the socket a killed one left
    assert r.run("f2", *SLEEP, flags=("--detach",)).returncode == 0 and helper.served("create", "f2")


@contextlib.contextmanager
def _copy_serving(fixture_helper: Helper, where: Path) -> Iterator[tuple[Path, str, Helper]]:
    """A second install of ukrun (a copy of its package, and a launcher as scripts/setup writes one) whose helper
    serves the fixture's socket in place of the fixture's own: (the copy's code, its launcher, its helper)."""
    fixture_helper.stop()
    code = where / "code"
    shutil.copytree(Path(ukrun.__file__).parent, code / "ukrun", ignore=shutil.ignore_patterns("__pycache__"))
    launcher = where / "ukrun-copy"
    launcher.write_text(f"#!{sys.executable} -IS\nimport sys\nsys.path.insert(0, {str(code)!r})\n"
                        "from ukrun.fast import main\nmain()\n")
    launcher.chmod(0o755)
    helper = Helper(fixture_helper.socket, where / "copy.log", (str(launcher),))
    helper.start()
    try:
        yield code, str(launcher), helper
    finally:
        helper.stop()


def test_a_helper_whose_code_changed_serves_no_more(relayed: tuple[Runner, Helper], tmp_path: Path) -> None:
    """An upgrade under a running helper: the next call runs in the shim's ukrun, and the helper exits. The helper
    and the shim's ukrun run from a copy of ukrun's code, which the test edits."""
    r, fixture_helper = relayed
    with _copy_serving(fixture_helper, tmp_path) as (code, launcher, helper):
        proc = r.run("u1", "/bin/sh", "/app/run.sh", "exit", "before", "0", flags=("--rm",), binary=launcher)
        assert proc.returncode == 0 and helper.served("create", "u1"), proc.stderr + helper.log.read_text()
        with open(code / "ukrun" / "runtime" / "create.py", "a") as f:
            f.write("\n")
        proc = r.run("u2", "/bin/sh", "/app/run.sh", "exit", "after", "0", flags=("--rm",), binary=launcher)
        assert proc.returncode == 0 and "guest says after" in proc.stdout, proc.stdout + proc.stderr
        assert not helper.served("create", "u2"), helper.log.read_text()
        assert helper.proc is not None and helper.proc.wait(timeout=30) == 0, "the stale helper went on serving"
        r.assert_clean("u2")


def test_a_helper_of_another_install_runs_none_of_this_ones_calls(relayed: tuple[Runner, Helper],
                                                                 tmp_path: Path) -> None:
    """ukrun installed a second time elsewhere (an upgrade to a new place) while the first install's helper
    serves: that helper's code is not the caller's, so the calls run in the shim's ukrun, the helper's log says
    why, and the helper goes on serving its own install's calls."""
    r, fixture_helper = relayed
    with _copy_serving(fixture_helper, tmp_path) as (_, launcher, helper):
        proc = r.run("o1", "/bin/sh", "/app/run.sh", "exit", "elsewhere", "0", flags=("--rm",))
        assert proc.returncode == 0 and "guest says elsewhere" in proc.stdout, proc.stdout + proc.stderr
        log = helper.log.read_text()
        assert not helper.served("create", "o1") and not helper.served("delete", "o1"), log
        assert f"its ukrun is {Path(ukrun.__file__).parent}, this helper's {tmp_path / 'code' / 'ukrun'}" in log, log
        r.assert_clean("o1")
        proc = r.run("o2", "/bin/sh", "/app/run.sh", "exit", "home", "0", flags=("--rm",), binary=launcher)
        assert proc.returncode == 0 and helper.served("create", "o2"), proc.stderr + helper.log.read_text()
        r.assert_clean("o2")


def test_a_worker_killed_mid_create_fails_the_container_and_leaves_what_a_crash_leaves(
        relayed: tuple[Runner, Helper]) -> None:
    r, helper = relayed
    arm_file(r.daemon.dir).write_text("create-before-save")
    proc = r.run("k1", *SLEEP, flags=("--detach",))
    assert proc.returncode != 0 and not arm_file(r.daemon.dir).exists(), proc.stderr
    assert helper.served("create", "k1")
    r.ctr("task", "delete", "--force", "k1")
    r.ctr("containers", "delete", "k1")
    assert r.gc().returncode == 0
    assert r.leftovers("k1") == []
    r.assert_clean("k1")
    assert helper.proc is not None and helper.proc.poll() is None, "the helper itself must survive its worker"


def test_the_helper_refuses_a_second_helper_on_its_socket(relayed: tuple[Runner, Helper]) -> None:
    _, helper = relayed
    proc = subprocess.run([UKRUN, "helper", "--socket", str(helper.socket)], capture_output=True, text=True,
                          timeout=60, env={**os.environ})
    assert proc.returncode == 1 and f"a helper already serves {helper.socket}" in proc.stderr, proc.stderr


def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_a_killed_helper_leaves_no_spare_worker_listening(tmp_path: Path) -> None:
    helper = Helper(tmp_path / "helper.sock", tmp_path / "helper.log")
    helper.start()
    assert helper.proc is not None
    spares = _children(helper.proc.pid)
    try:
        assert len(spares) == 1, "one worker forked before any call"
        helper.stop(signal.SIGKILL)
        assert ctd.wait_for(lambda: not Path(f"/proc/{spares[0]}").exists(), 10), "the spare outlived its helper"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s, pytest.raises(ConnectionRefusedError):
            s.connect(str(helper.socket))
    finally:
        helper.stop(signal.SIGKILL)
        for pid in spares:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_callers_at_once_are_each_served_by_a_worker_of_their_own(tmp_path: Path) -> None:
    """The second caller comes while the first one's worker is busy: the helper forks it a spare at once."""
    helper = Helper(tmp_path / "helper.sock", tmp_path / "helper.log")
    helper.start()
    try:
        first, second = (socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(2))
        with first, second:
            first.connect(str(helper.socket))  # taken by the spare, which waits for its request
            assert ctd.wait_for(lambda: len(_children(helper.proc.pid)) == 2, 5)  # type: ignore[union-attr]
            second.connect(str(helper.socket))
            started = time.monotonic()
            ask = relay.Request(relay.VERSION, b"pause", [b"pause", b"c1"], [], b"/", os.getpid(), relay.namespaces(),
                                0, relay.package(), b"")
            second.sendall(ask.pack())
            second.settimeout(10)
            answer = relay.Reply(*marshal.loads(second.recv(4096)[4:]))
            assert answer.fallback == b"verb" and time.monotonic() - started < SETTLE_S
    finally:
        helper.stop()



def test_a_request_of_another_relay_version_is_refused_not_failed(tmp_path: Path) -> None:
    """A caller of an older ukrun (the first version's request: eight fields) gets "run it yourself", not a dead
    worker (which the caller would take for a failed verb)."""
    helper = Helper(tmp_path / "helper.sock", tmp_path / "helper.log")
    helper.start()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(helper.socket))
            first = marshal.dumps((1, "create", ["create", "c1"], {}, "/", os.getpid(), [1, 2, 3], 0))
            s.sendall(len(first).to_bytes(4, "big") + first)
            s.settimeout(10)
            answer = relay.Reply(*marshal.loads(s.recv(4096)[4:]))
        assert answer.fallback == b"version", answer.fallback
        assert "refused a call (another version of the relay)" in helper.log.read_text()
    finally:
        helper.stop()
