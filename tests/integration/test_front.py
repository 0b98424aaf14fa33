"""ukrun's compiled front (src/front/front.c), run as the shim runs it, against a socket that plays the helper: the
request it sends is one the helper reads (ukrun.relay's fields, texts as the kernel gave them), with a zygote for
create that it forks, that execs the launcher and that it reaps; what it does with each answer (a code, runc to
exec, a refusal of this relay or of an older one, a worker that died); and when it sends nothing (no helper, calls
it does not carry, the shim's forced delete of a container gone). The real helper, through ctr: test_helper."""

from __future__ import annotations

import array
import contextlib
import marshal
import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import ukrun
from testbed import containerd as ctd
from tests.integration.runner import UKRUN
from ukrun import relay

if Path(UKRUN).read_bytes()[:4] != b"\x7fELF":
    pytest.skip("scripts/setup installed the Python launcher as ukrun (UKRUN_FRONT=python, or no C string holds "
                "its paths): no compiled front to test", allow_module_level=True)

NOT_RUNC = "runc /nonexistent/runc cannot run"  # what the Python launcher says of a container that is not ukrun's


class FakeHelper:
    """Accepts one call, keeps its fields and a zygote's ends, and answers `answer` (None: closes, as a dead
    worker)."""

    def __init__(self, path: Path, answer: bytes | None, zygote_seen: threading.Event | None = None) -> None:
        self.path, self.answer, self.zygote_seen = path, answer, zygote_seen
        self.fields: tuple[Any, ...] = ()
        self.streams = 0
        self.fds: list[int] = []
        self.called = threading.Event()
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(1)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.server.accept()
        except OSError:  # closed: nobody called
            return
        with conn:
            self.called.set()
            fds = array.array("i")
            head, ancdata, _, _ = conn.recvmsg(4, socket.CMSG_SPACE(16 * fds.itemsize))
            for _level, _kind, data in ancdata:
                fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
            body = b""
            while len(body) < int.from_bytes(head, "big"):
                body += conn.recv(65536)
            for fd in fds[:3]:  # the caller's streams: held, they would keep its output open (see helper)
                os.close(fd)
            self.fields, self.streams, self.fds = marshal.loads(body), len(fds[:3]), list(fds[3:])
            if self.zygote_seen is not None:
                self.zygote_seen.wait(30)
            if self.answer is not None:
                conn.sendall(len(self.answer).to_bytes(4, "big") + self.answer)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.server.shutdown(socket.SHUT_RDWR)  # wakes an accept() that nobody called (Linux)
        self.server.close()
        self.thread.join(30)
        for fd in self.fds:
            os.close(fd)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "root").mkdir()
    (tmp_path / "ukrun.toml").write_text('[runtime]\nrunc = "/nonexistent/runc"\n')
    return tmp_path / "root"


def front(root: Path, *argv: str | bytes, extra: dict[bytes, bytes] | None = None,
          cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    env = {b"PATH": b"/nonexistent", b"UKRUN_CONFIG": os.fsencode(root.parent / "ukrun.toml"),
           b"UKRUN_HELPER": os.fsencode(root.parent / "helper.sock"), **(extra or {})}
    return subprocess.run([UKRUN, "--root", str(root), *argv], capture_output=True, env=env, timeout=60,
                          cwd=cwd or root.parent)


@pytest.fixture
def helper(root: Path, request: pytest.FixtureRequest) -> Iterator[FakeHelper]:
    fake = FakeHelper(root.parent / "helper.sock", getattr(request, "param", marshal.dumps((0, b"", b""), 0)))
    try:
        yield fake
    finally:
        fake.close()


def test_a_call_goes_to_the_helper_as_the_relay_sends_it(root: Path, helper: FakeHelper) -> None:
    """Every field as ukrun.relay.Request reads it, bytes that are no UTF-8 untouched, and the caller's three
    streams; no zygote but for create."""
    proc = front(root, "kill", b"c\xff1", "9", extra={b"ODD": b"\xfe=x"}, cwd=root.parent)
    assert proc.returncode == 0 and proc.stderr == b"", proc.stderr
    request = relay.Request(*helper.fields)
    assert (request.version, request.verb, request.argv) == (
        relay.VERSION, b"kill", [b"--root", os.fsencode(root), b"kill", b"c\xff1", b"9"])
    assert b"ODD=\xfe=x" in request.env and b"UKRUN_HELPER=" + os.fsencode(root.parent / "helper.sock") in request.env
    assert (request.cwd, request.shim) == (os.fsencode(root.parent), os.getpid())
    assert request.namespaces == relay.namespaces()
    assert (request.zygote, request.package, request.zygote_dir) == (0, relay.package(), b"")
    assert request.package == os.fsencode(Path(ukrun.__file__).parent)
    assert (helper.streams, helper.fds) == (3, [])


def test_create_forks_a_zygote_that_runs_the_launcher_and_is_reaped(root: Path, tmp_path: Path) -> None:
    """The zygote is the front's child, execs the interpreter on ukrun.launcher with its three ends, and its ends go
    to the worker: a worker that lets them go (here: answers without "go") ends it, and the front reaps it."""
    seen = threading.Event()
    helper = FakeHelper(tmp_path / "helper.sock", marshal.dumps((0, b"", b""), 0), seen)
    try:
        with subprocess.Popen([UKRUN, "--root", str(root), "create", "--bundle", str(tmp_path), "z1"],
                              env={"UKRUN_HELPER": str(tmp_path / "helper.sock")}) as proc:
            assert helper.called.wait(30) and ctd.wait_for(lambda: bool(helper.fields), 30)
            request = relay.Request(*helper.fields)
            assert (request.verb, request.zygote_dir) == (b"create", os.fsencode(root / "z1"))
            assert helper.streams == 3 and len(helper.fds) == 3 and request.zygote > 0
            zygote = Path(f"/proc/{request.zygote}")
            assert (zygote / "stat").read_text().rsplit(")", 1)[1].split()[1] == str(proc.pid), "the front's child"
            assert ctd.wait_for(lambda: b"ukrun.launcher" in (zygote / "cmdline").read_bytes(), 30)
            assert os.fsencode(root / "z1") in (zygote / "cmdline").read_bytes().split(b"\0")
            seen.set()
            for fd in helper.fds:
                os.close(fd)
            helper.fds = []
            assert proc.wait(60) == 0
        assert not zygote.exists(), "the zygote was left behind"
    finally:
        seen.set()
        helper.close()


@pytest.mark.parametrize("helper", [marshal.dumps((5, b"", b""), 0)], indirect=True)
def test_the_workers_code_is_the_calls(root: Path, helper: FakeHelper) -> None:
    proc = front(root, "start", "c1")
    assert (proc.returncode, proc.stderr) == (5, b"")


@pytest.mark.parametrize("helper", [marshal.dumps((0, b"/bin/echo", b""), 0)], indirect=True)
def test_a_container_for_runc_is_execed_into_it_with_the_same_arguments(root: Path, helper: FakeHelper) -> None:
    proc = front(root, "state", "c1")
    assert proc.returncode == 0 and proc.stdout == f"--root {root} state c1\n".encode(), proc


@pytest.mark.parametrize("helper", [marshal.dumps((1, b"", b"namespaces"), 0), marshal.dumps((0, "", "version"))],
                         ids=["refused", "an older relay's refusal"], indirect=True)
def test_a_refused_call_runs_in_python(root: Path, helper: FakeHelper) -> None:
    """Refused by this relay's worker, or answered by an older helper (its own marshal format, its texts str): the
    call runs in the Python launcher, never taken for an exit code (the older answer's says 0)."""
    proc = front(root, "start", "c1")
    assert helper.called.is_set()
    assert proc.returncode == 1 and NOT_RUNC in proc.stderr.decode(), proc.stderr


@pytest.mark.parametrize("helper", [None], indirect=True)
def test_a_worker_that_died_is_a_failed_call_not_run_again(root: Path, helper: FakeHelper) -> None:
    proc = front(root, "start", "c1")
    assert helper.called.is_set() and (proc.returncode, proc.stderr) == (1, b"")


def test_with_no_helper_the_call_runs_in_python(root: Path) -> None:
    proc = front(root, "start", "c1")
    assert proc.returncode == 1 and NOT_RUNC in proc.stderr.decode(), proc.stderr


@pytest.mark.parametrize("argv", [("pause", "c1"), ("--bogus", "start", "c1"), ("create", "--bundle", "/b", "a/b"),
                                  ("--root",), ("create", "..")])
def test_calls_it_does_not_carry_run_in_python_without_a_word_to_the_helper(root: Path, helper: FakeHelper,
                                                                            argv: tuple[str, ...]) -> None:
    """Other verbs and flags, and a create whose ID names no folder of the root."""
    proc = front(root, *argv)
    assert proc.returncode != 0 and not helper.called.is_set(), proc.stderr


def test_the_shims_forced_delete_of_a_container_gone_is_answered_at_once(root: Path, helper: FakeHelper) -> None:
    """As ukrun.fast.gone: with nothing of it in the root, neither ukrun nor runc has it. A container whose folder is
    there, an ID that names no folder of the root and an unforced delete all go to the helper."""
    assert front(root, "delete", "--force", "gone1").returncode == 0
    assert front(root, "delete", "-f", "gone1").returncode == 0
    assert not helper.called.is_set()
    (root / "here").mkdir()
    for argv in (("delete", "--force", "here"), ("delete", "--force", ".."), ("delete", "gone1")):
        fake = FakeHelper(root.parent / "other.sock", marshal.dumps((3, b"", b""), 0))
        try:
            proc = front(root, *argv, extra={b"UKRUN_HELPER": os.fsencode(root.parent / "other.sock")})
            assert proc.returncode == 3 and fake.called.is_set(), (argv, proc.stderr)
        finally:
            fake.close()
            (root.parent / "other.sock").unlink()
