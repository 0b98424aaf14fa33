"""An operator switching from urunc keeps its configuration file: a containerd whose shims see
URUNC_CONFIG_FILE (as urunc's docs have it set) runs ukrun, which takes the keys ukrun's own file leaves
unset from urunc's file: here `[monitors.qemu] socket_path`, so qemu serves QMP on the container's own
socket (urunc v0.8.1's control socket), which delete removes and nothing else of the operator's folder.
ukrun's own `default_memory_mb` wins over urunc's; `ukrun doctor` says what came from urunc's file.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed import containerd as ctd
from tests.integration.conftest import SNAPSHOTTER, remove_containers, write_ukrun_config
from tests.integration.runner import Runner


@pytest.fixture
def sockets() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="uks", dir="/tmp"))  # short: a socket's path holds 107 bytes
    (folder / "operators-file").write_text("not ukrun's\n")
    yield folder
    shutil.rmtree(folder)


@pytest.fixture
def migrated(daemon: ctd.Daemon, ns: str, tmp_path: Path, guest_image: Path, sockets: Path) -> Iterator[Runner]:
    urunc = tmp_path / "urunc.toml"
    urunc.write_text(f'[log]\nlevel = "debug"\n[monitors.qemu]\ndefault_memory_mb = 128\n'
                     f'socket_path = "{sockets}"\n')
    config = write_ukrun_config(tmp_path / "ukrun.toml", tmp_path / "state")  # sets default_memory_mb = 256
    private = ctd.start(daemon.version, tmp_path / "d", env={"UKRUN_CONFIG": str(config),
                                                            "URUNC_CONFIG_FILE": str(urunc)})
    r = Runner(private, ns, tmp_path / "runc", tmp_path / "state")
    try:
        private.import_image(ns, guest_image, SNAPSHOTTER)
        yield r
        remove_containers(r)
    finally:
        ctd.stop(private.dir)


def _connect(path: Path) -> socket.socket:
    """qemu binds its socket, then listens: a connect in between is refused."""
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    assert ctd.wait_for(lambda: s.connect_ex(str(path)) == 0, timeout=10, interval=0.1)
    return s


def _qmp(path: Path, command: str) -> dict[str, object]:
    with _connect(path) as s:
        reader = s.makefile("r")
        assert "QMP" in json.loads(reader.readline())  # the greeting
        for cmd in ("qmp_capabilities", command):
            s.sendall(json.dumps({"execute": cmd}).encode() + b"\n")
            while "return" not in (answer := json.loads(reader.readline())):
                pass
        return dict(answer["return"])


def test_uruncs_socket_path_gives_qemu_a_qmp_socket_that_delete_removes(migrated: Runner, sockets: Path) -> None:
    proc = migrated.run("q1", "/bin/sh", "/app/run.sh", "sleep", flags=("--detach",))
    assert proc.returncode == 0, proc.stderr
    migrated.wait_status("q1", "RUNNING")
    sock = sockets / f"{migrated.ns}.q1.sock"
    assert ctd.wait_for(sock.is_socket, timeout=30), sorted(p.name for p in sockets.iterdir())
    assert _qmp(sock, "query-status")["status"] == "running"
    (qemu,) = migrated.monitors()
    argv = Path(f"/proc/{qemu}/cmdline").read_bytes().split(b"\0")
    assert argv[argv.index(b"-m") + 1] == b"256"  # ukrun's own file wins over urunc's 128
    migrated.ctr("task", "kill", "-s", "SIGKILL", "q1")
    migrated.wait_status("q1", "STOPPED")
    assert migrated.ctr("task", "delete", "q1").returncode == 0
    assert migrated.ctr("containers", "delete", "q1").returncode == 0
    assert sorted(p.name for p in sockets.iterdir()) == ["operators-file"]  # the socket went, and only it
    migrated.assert_clean("q1")


def test_doctor_says_what_comes_from_uruncs_file(migrated: Runner, tmp_path: Path, sockets: Path) -> None:
    env = {**migrated.daemon.env(), "UKRUN_CONFIG": str(tmp_path / "ukrun.toml"),
           "URUNC_CONFIG_FILE": str(tmp_path / "urunc.toml")}
    out = subprocess.run([sys.executable, "-m", "ukrun", "--state-root", str(tmp_path / "state"), "doctor", "--json"],
                         capture_output=True, text=True, env=env, timeout=120)
    checks = {c["name"]: c for c in json.loads(out.stdout)}
    assert checks["urunc config"]["detail"] == (f"{tmp_path / 'urunc.toml'}: ukrun reads monitors.qemu.socket_path; "
                                                "it does not read log")
    assert checks["monitor qemu socket_path"] == {"name": "monitor qemu socket_path", "status": "ok",
                                                  "detail": f"control sockets in {sockets}", "fix": ""}
