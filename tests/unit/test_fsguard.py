"""ukrun.fsguard, installed in a child process of the test: no set-ID file and no device node can be made,
everything else still works."""

from __future__ import annotations

import ctypes
import errno
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from ukrun import fsguard

pytestmark = pytest.mark.skipif(not fsguard.supported(), reason="fsguard knows x86_64 and aarch64")


def _in_guarded_child(tmp: Path) -> dict[str, str]:
    """Runs each attempt in a forked child under the filter; what each gave, by name ("ok" or the errno)."""
    libc = ctypes.CDLL(None, use_errno=True)

    def attempt(call: Callable[[], object]) -> str:
        try:
            call()
        except OSError as exc:
            return errno.errorcode[exc.errno or 0]
        return "ok"

    def openat2() -> None:
        how = (ctypes.c_uint64 * 3)(os.O_RDONLY, 0, 0)
        if libc.syscall(437, -100, str(tmp).encode(), ctypes.byref(how), ctypes.sizeof(how)) < 0:
            raise OSError(ctypes.get_errno(), "openat2")

    (tmp / "plain").write_text("x")
    attempts: dict[str, Callable[[], object]] = {
        "chmod u+s": lambda: os.chmod(tmp / "plain", 0o4755),
        "chmod g+s": lambda: os.chmod(tmp / "plain", 0o2755),
        "fchmod u+s": lambda: os.fchmod(os.open(tmp / "plain", os.O_RDONLY), 0o4755),
        "chmod 700": lambda: os.chmod(tmp / "plain", 0o700),
        "create setuid": lambda: os.open(tmp / "made-setuid", os.O_WRONLY | os.O_CREAT, 0o4755),
        "create plain": lambda: os.open(tmp / "made", os.O_WRONLY | os.O_CREAT, 0o755),
        "open setuid mode, no create": lambda: os.open(tmp / "plain", os.O_RDONLY, 0o4755),
        "mknod setuid file": lambda: os.mknod(tmp / "node-setuid", stat.S_IFREG | 0o4755),
        "mknod char device": lambda: os.mknod(tmp / "null", stat.S_IFCHR | 0o600, os.makedev(1, 3)),
        "mknod block device": lambda: os.mknod(tmp / "disk", stat.S_IFBLK | 0o600, os.makedev(7, 0)),
        "mknod fifo": lambda: os.mkfifo(tmp / "fifo"),
        "openat2": openat2,
        "mkdir": lambda: os.mkdir(tmp / "dir", 0o755),
    }
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read)
            fsguard.install()
            os.write(write, json.dumps({name: attempt(call) for name, call in attempts.items()}).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        got: dict[str, str] = json.loads(f.read() or "{}")
    os.waitpid(pid, 0)
    return got


def test_no_set_id_file_and_no_device_node_is_made(tmp_path: Path) -> None:
    got = _in_guarded_child(tmp_path)
    assert got == {
        "chmod u+s": "EPERM", "chmod g+s": "EPERM", "fchmod u+s": "EPERM", "chmod 700": "ok",
        "create setuid": "EPERM", "create plain": "ok", "open setuid mode, no create": "ok",
        "mknod setuid file": "EPERM", "mknod char device": "EPERM", "mknod block device": "EPERM",
        "mknod fifo": "ok", "openat2": "ENOSYS", "mkdir": "ok",
    }
    assert not (tmp_path / "made-setuid").exists() and not (tmp_path / "null").exists()
    assert stat.S_IMODE((tmp_path / "plain").stat().st_mode) == 0o700


def test_the_program_ends_every_path_in_a_return() -> None:
    for machine in fsguard.ABIS:
        prog = fsguard.program(machine)
        assert prog[-1] == (fsguard.RET, 0, 0, fsguard.RET_ALLOW)
        for i, (code, jt, jf, _) in enumerate(prog):
            if code in (fsguard.JEQ, fsguard.JSET, fsguard.JGE):
                assert i + 1 + max(jt, jf) < len(prog), (machine, i)
