"""The container's init and a virtiofsd that ends before the monitor (ukrun.launcher.supervise), with real
processes standing in for both: a clean end of the daemon as its monitor exits says nothing and keeps the
monitor's code; a daemon that fails, or ends while its monitor runs on, stops the monitor with a note that
names no host path."""

from __future__ import annotations

import os
from pathlib import Path

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
            code = launcher.supervise(conf)
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
