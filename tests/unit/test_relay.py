"""The helper's pure parts: its record of ukrun's code on disk, and the relay's messages; and a worker letting go
of its caller's streams before it answers, and dying when its caller goes away."""

import marshal
import os
import select
import signal
import socket
import time
from pathlib import Path

import pytest

from ukrun import relay
from ukrun.helper import _let_go_of_streams, _parse, _watch_caller
from ukrun.sourcewatch import SourceWatch


def test_a_worker_lets_go_of_its_callers_streams_before_it_answers() -> None:
    """The shim reads a verb's output until every holder of the pipe has closed it: a worker that has answered
    but not yet exited must not hold it open (a real pipe and a forked worker-to-be)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            for std in (1, 2):
                os.dup2(write, std)
            os.close(write)
            os.close(read)
            _let_go_of_streams()
            signal.pause()
        finally:
            os._exit(0)
    os.close(write)
    try:
        ready, _, _ = select.select([read], [], [], 10)
        assert ready and os.read(read, 1) == b"", "the pipe stays open while the worker lives"
        assert os.waitpid(pid, os.WNOHANG) == (0, 0), "the worker lives on"
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(read)


def test_a_worker_dies_when_its_caller_goes_away_and_works_on_while_it_stays() -> None:
    """Nobody would hear the answer of a worker whose caller died (the shim's timeout killed it): a real socket
    pair and a forked worker-to-be, at work (sleeping) when its caller's end closes."""
    ours, theirs = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        try:
            ours.close()
            _watch_caller(theirs)
            time.sleep(30)
        finally:
            os._exit(0)
    theirs.close()
    done = (0, 0)
    try:
        time.sleep(0.2)
        assert os.waitpid(pid, os.WNOHANG) == (0, 0), "the worker died while its caller was there"
        ours.close()
        deadline = time.monotonic() + 10
        while (done := os.waitpid(pid, os.WNOHANG)) == (0, 0) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert done[0] == pid and os.WIFSIGNALED(done[1]) and os.WTERMSIG(done[1]) == signal.SIGKILL
    finally:
        if done == (0, 0):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


def _package(tmp_path: Path) -> Path:
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    for name in ("pkg/__init__.py", "pkg/m.py", "pkg/sub/n.py"):
        (tmp_path / name).write_text("x = 1\n")
    return tmp_path / "pkg"


@pytest.mark.parametrize("change", ["written", "touched", "removed", "replaced", "added", "in a subfolder",
                                    "subfolder added", "subfolder removed", "package moved"])
def test_a_helper_is_stale_once_its_code_may_have_changed(tmp_path: Path, change: str) -> None:
    """Real inotify watches: every kind of change a module may see (an edit, an upgrade's rename over it, a new
    module or subpackage, a package moved away) makes the helper stale."""
    pkg = _package(tmp_path)
    watch = SourceWatch(str(pkg))
    try:
        assert not watch.changed()
        if change == "written":
            with open(pkg / "m.py", "a") as f:
                f.write("y = 2\n")
        elif change == "touched":
            os.utime(pkg / "m.py", ns=(0, 1))
        elif change == "removed":
            (pkg / "m.py").unlink()
        elif change == "replaced":
            (tmp_path / "new.py").write_text("x = 2\n")
            os.replace(tmp_path / "new.py", pkg / "m.py")
        elif change == "added":
            (pkg / "o.py").write_text("")
        elif change == "in a subfolder":
            (pkg / "sub" / "n.py").write_text("x = 2\n")
        elif change == "subfolder added":
            (pkg / "newsub").mkdir()
        elif change == "subfolder removed":
            (pkg / "sub" / "n.py").unlink()
            (pkg / "sub").rmdir()
        else:
            os.rename(pkg, tmp_path / "moved")
        assert watch.changed()
    finally:
        watch.close()


def test_what_changes_no_code_leaves_a_helper_fresh(tmp_path: Path) -> None:
    """Bytecode caches (compiled by any interpreter at any time) and an editor's files that are not modules."""
    pkg = _package(tmp_path)
    watch = SourceWatch(str(pkg))
    try:
        (pkg / "__pycache__").mkdir()
        (pkg / "__pycache__" / "m.cpython-311.pyc").write_bytes(b"\0" * 16)
        (pkg / ".m.py.swp").write_bytes(b"")
        (pkg / "notes.txt").write_text("")
        assert not watch.changed()
        (pkg / "m.py").write_text("x = 3\n")  # the events above were read and dropped; this one counts
        assert watch.changed()
    finally:
        watch.close()


def test_requests_and_replies_cross_in_marshals_format_0() -> None:
    """Tuples, lists, 32-bit ints and bytes, each with a 32-bit count: what the compiled front writes and reads."""
    req = relay.Request(relay.VERSION, b"create", [b"--root", b"/r", b"create", b"c\xff1"], [b"A=1"], b"/b", 42,
                        [b"4026531840", b"2", b"3"], 7, b"/opt/ukrun", b"/r/c\xff1")
    data = req.pack()
    assert int.from_bytes(data[:4], "big") == len(data) - 4
    assert data[4:14] == b"(\x0a\x00\x00\x00i\x03\x00\x00\x00"  # ten fields; the version first
    back = relay.Request(*marshal.loads(data[4:]))
    assert (back.verb, back.argv, back.env, back.shim, back.namespaces, back.zygote, back.package,
            back.zygote_dir) == (b"create", req.argv, [b"A=1"], 42, req.namespaces, 7, b"/opt/ukrun", b"/r/c\xff1")
    packed = relay.Reply(runc=b"/usr/bin/runc").pack()
    assert packed[4:] == b"(\x03\x00\x00\x00i\x01\x00\x00\x00s\x0d\x00\x00\x00/usr/bin/runcs\x00\x00\x00\x00"
    reply = relay.Reply(*marshal.loads(packed[4:]))
    assert (reply.code, reply.runc, reply.fallback) == (1, b"/usr/bin/runc", b"")


def test_with_no_helper_nothing_is_relayed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UKRUN_HELPER", str(tmp_path / "none.sock"))
    assert not relay.answering()
    (tmp_path / "none.sock").touch()  # a socket file nobody listens on: a killed helper's
    assert relay.answering() and relay.run("delete", ["delete", "c1"], str(tmp_path / "c1")) is None


def test_the_helper_has_imported_every_module_of_ukrun_before_its_first_worker() -> None:
    """A worker that imports is a call that waits: every module file, namespace packages' too, is loaded."""
    import subprocess
    import sys

    import ukrun

    src = Path(ukrun.__file__).parent
    files = {str(p.resolve()) for p in src.rglob("*.py") if p.name != "__main__.py"}
    probe = ("import sys; from ukrun import helper; helper._preload(); "
             "print('\\n'.join(str(getattr(m, '__file__', '')) for m in list(sys.modules.values())))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(src.parent)}).stdout
    assert files - {str(Path(f).resolve()) for f in out.split() if f} == set()


def _call(verb: bytes, *argv: str, zygote_dir: bytes = b"") -> relay.Request:
    return relay.Request(relay.VERSION, verb, [a.encode() for a in argv], [], b"/", 1, relay.namespaces(), 0,
                         relay.package(), zygote_dir)


@pytest.mark.parametrize(("request_", "container"), [
    (_call(b"create", "--root", "/r", "create", "--bundle", "/b", "c1", zygote_dir=b"/r/c1"), "c1"),
    (_call(b"create", "--root", "/r", "create", "--bundle", "/b", "c1", zygote_dir=b"/r/c2"), None),
    (_call(b"create", "--root", "/r", "create", "--bundle", "/b", "..", zygote_dir=b"/r/.."), None),
    (_call(b"kill", "--root=/r", "kill", "--all", "c1", "9"), "c1"),
    (_call(b"kill", "--root", "/r", "kill", "--bogus", "c1"), None),
    (_call(b"start", "--root", "/r", "delete", "c1"), None),
    (_call(b"delete", "--root", "/r", "delete", "--now", "c1"), None),
    (_call(b"state", "--root", "/r", "--bogus", "state", "c1"), None),
], ids=["create", "a zygote of another folder", "an ID of no folder", "kill", "kill's unknown flag",
        "another verb than the request's", "delete's unknown flag", "an unknown global flag"])
def test_a_worker_takes_only_what_the_shims_ukrun_would(request_: relay.Request, container: str | None) -> None:
    """A compiled front parses less than ukrun.fast: the worker parses again, and refuses (the caller then runs the
    call in Python) what the shim's ukrun would not take, and a zygote given another folder than the container's."""
    call = _parse(request_, [a.decode() for a in request_.argv])
    assert (call.container_id if call else None) == container
