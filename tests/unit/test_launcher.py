"""The container's init and a virtiofsd that ends before the monitor (ukrun.launcher.supervise), with real
processes standing in for both: a clean end of the daemon as its monitor exits says nothing and keeps the
monitor's code; a daemon that fails, or ends while its monitor runs on, stops the monitor with a note that
names no host path."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from ukrun import launcher
from ukrun.launchconfig import LaunchConfig


def supervised(tmp_path: Path, daemon: str, monitor: str) -> tuple[int, str]:
    """The init's exit code and what it wrote to the container's stderr, run in a child of the test."""
    conf = LaunchConfig(id="c1", monitor=("/bin/sh", "-c", monitor), env={"PATH": "/usr/bin:/bin"},
                        virtiofsd=("/bin/sh", "-c", daemon), virtiofsd_socket=str(tmp_path / "vfs.sock"),
                        virtiofsd_log=str(tmp_path / "virtiofsd.log"))
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.dup2(write, 2)
            code = launcher.supervise(conf, launcher.forwarded())
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read) as f:
        told = f.read()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), told


def test_a_clean_end_as_the_monitor_exits_says_nothing(tmp_path: Path) -> None:
    assert supervised(tmp_path, "exit 0", "sleep 0.3; exit 3") == (3, "")


def test_a_failed_daemon_stops_the_monitor_with_a_note_naming_no_host_path(tmp_path: Path) -> None:
    code, told = supervised(tmp_path, "exit 7", "exec sleep 30")
    assert code == 128 + 9
    assert told == ("ukrun: the rootfs's virtiofsd ended (7) before the monitor, which was stopped; its log is "
                    "virtiofsd.log in the container's state folder\n")
    code, told = supervised(tmp_path, "exit 0", "exec sleep 30")  # clean, but the monitor runs on: stopped
    assert code == 128 + 9 and "virtiofsd ended (0)" in told and str(tmp_path) not in told


def test_an_init_that_cannot_join_its_cgroup_fails_start_with_the_reason(tmp_path: Path) -> None:
    """The init joins its cgroups after `create` has its PID (launcher.settle); when it cannot, nothing runs
    and `start` fails naming why. Real processes: the zygote, the init, and `start` as the shim calls it."""
    from ukrun.errors import UkrunError
    from ukrun.runtime import hot
    from ukrun.runtime import state as st
    from ukrun.runtime.zygote import Zygote

    root, ran = tmp_path / "root", tmp_path / "monitor-ran"
    d = root / "c1"
    d.mkdir(parents=True)
    missing = tmp_path / "no-such-cgroup"
    LaunchConfig(id="c1", monitor=("/bin/sh", "-c", f"touch {ran}"), env={"PATH": "/usr/bin:/bin"},
                 cgroups=(str(missing),)).write(d)
    os.mkfifo(d / st.FIFO, 0o600)
    zygote = Zygote(d)
    pid = zygote.start(False, "")
    st.save(root, st.ContainerState(id="c1", bundle=str(tmp_path), pid=pid, pid_start=st.process_start(pid)))
    zygote.commit()
    with pytest.raises(UkrunError) as failed:
        hot.start(str(root), "c1")
    assert str(failed.value) == (f"the init of container c1 did not answer start: cannot join any cgroup: {missing}: "
                                 "No such file or directory")
    deadline = time.monotonic() + 10
    while st.process_start(pid) and time.monotonic() < deadline:  # not ours to reap: gone, or a zombie
        time.sleep(0.01)
    assert not st.process_start(pid), "the init stayed"
    assert not ran.exists(), "the monitor ran"


def _ns(pid: int | str, kind: str) -> int:
    return os.stat(f"/proc/{pid}/ns/{kind}").st_ino


@pytest.mark.skipif(os.geteuid() != 0, reason="namespaces are made as root")
def test_the_namespaces_named_early_are_made_before_go_and_are_the_inits(tmp_path: Path) -> None:
    """A zygote told the spec's new namespaces (Zygote.prepare) makes them while `create` plans, and its init is
    in those very namespaces: `enter` makes no second one at "go", and the mount namespace waits for "go"."""
    from ukrun.launchconfig import Namespace
    from ukrun.runtime.zygote import Zygote

    d = tmp_path / "c1"
    d.mkdir()
    namespaces = (Namespace("network"), Namespace("uts"), Namespace("mount"), Namespace("pid"))
    LaunchConfig(id="c1", monitor=("/bin/true",), env={}, namespaces=namespaces, hostname="c1").write(d)
    zygote = Zygote(d)
    try:
        zygote.prepare(namespaces)
        deadline = time.monotonic() + 10
        while _ns(zygote.pid, "net") == _ns("self", "net") and time.monotonic() < deadline:
            time.sleep(0.01)
        early = {kind: _ns(zygote.pid, kind) for kind in ("net", "uts", "mnt")}
        assert early["net"] != _ns("self", "net") and early["uts"] != _ns("self", "uts")
        assert early["mnt"] == _ns("self", "mnt"), "the mount namespace was made before go"
        with pytest.raises(FileNotFoundError):  # a new PID namespace that has no process yet
            _ns(zygote.pid, "pid_for_children")
        init = zygote.start(False, "")
        assert (_ns(init, "net"), _ns(init, "uts")) == (early["net"], early["uts"])
        assert _ns(init, "mnt") != _ns("self", "mnt") and _ns(init, "pid") != _ns("self", "pid")
    finally:
        zygote.close()  # not committed: the init exits


def test_namespaces_made_early_that_the_configuration_does_not_ask_for_are_refused() -> None:
    from ukrun.launchconfig import Namespace

    host_network = LaunchConfig(id="c1", monitor=("/bin/true",), env={}, namespaces=(Namespace("uts"),))
    assert launcher.early(host_network.namespaces) == launcher.FLAGS["uts"]
    assert launcher.early((Namespace("network", "/var/run/netns/pod"), Namespace("mount"))) == 0
    with pytest.raises(OSError, match="not the ones the container's configuration asks for"):
        launcher.enter(host_network, -1, launcher.FLAGS["network"])


def test_the_c_librarys_calls_return_its_int_and_keep_its_errno() -> None:
    """ukrun.libc, the launcher's way to unshare, setns and mount without ctypes' Python half."""
    import errno

    from ukrun import libc

    assert libc.function("getpid")() == os.getpid()
    assert libc.function("setns")(-1, 0) == -1 and libc.errno() == errno.EBADF
    assert libc.function("mount")(None, b"/nonexistent/ukrun-test", None, 0, None) == -1
    assert libc.errno() == errno.ENOENT
