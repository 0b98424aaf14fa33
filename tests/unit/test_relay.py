"""The helper's pure parts: its record of ukrun's code on disk, and the relay's messages; and a worker letting go
of its caller's streams before it answers, and dying when its caller goes away."""

import marshal
import os
import select
import signal
import socket
import time
from pathlib import Path

from ukrun import relay
from ukrun.helper import _let_go_of_streams, _stale, _watch_caller


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


def test_a_helper_is_stale_once_a_module_it_loaded_changes_or_goes(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("x = 1\n")
    sources = {str(module): os.stat(module).st_mtime_ns}
    assert not _stale(sources)
    os.utime(module, ns=(0, sources[str(module)] + 1))
    assert _stale(sources)
    module.unlink()
    assert _stale({str(module): 0})


def test_requests_and_replies_cross_as_marshalled_tuples() -> None:
    req = relay.Request(relay.VERSION, "create", ["--root", "/r", "create", "c1"], {"A": "1"}, "/b", 42, [1, 2, 3], 7)
    data = req.pack()
    back = relay.Request(*marshal.loads(data[4:]))
    assert int.from_bytes(data[:4], "big") == len(data) - 4
    assert (back.verb, back.argv, back.env, back.shim, back.zygote) == ("create", req.argv, {"A": "1"}, 42, 7)
    reply = relay.Reply(*marshal.loads(relay.Reply(runc="/usr/bin/runc").pack()[4:]))
    assert (reply.code, reply.runc, reply.fallback) == (1, "/usr/bin/runc", "")


def test_with_no_helper_nothing_is_relayed(tmp_path: Path) -> None:
    env = {relay.ENV: str(tmp_path / "none.sock")}
    assert not relay.answering(env)
    (tmp_path / "none.sock").touch()  # a socket file nobody listens on: a killed helper's
    assert relay.answering(env) and relay.run("delete", ["delete", "c1"], str(tmp_path / "c1"), env) is None


def test_the_relay_reads_this_processs_environment_as_os_environ_decodes_it() -> None:
    assert relay.environ() == dict(os.environ)


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
