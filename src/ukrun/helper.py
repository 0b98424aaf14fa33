"""`ukrun helper`: an optional resident process that has imported all that `create` and `delete` need, and forks a
worker for each call that the shim's ukrun relays to it (ukrun.relay: create and delete; the compiled front,
src/front, relays state, start and kill too). Nothing requires it: with no helper the verbs run in the shim's
ukrun as before. It saves each call the import of ukrun (most of create's and delete's cost here), and with the
front the interpreter's start, nothing else: the worker runs the very same code, in the caller's environment,
working folder and standard streams, on behalf of the shim whose PID the caller names.

What must stay true:
  * a worker serves only a caller of its own user (SO_PEERCRED), in its own mount, PID and user namespaces,
    whose ukrun is this helper's install (the same package folder: an upgrade to a new place, or a second
    install beside it, never runs on this helper's code), and only while ukrun's code on disk is the code this
    helper loaded (ukrun.sourcewatch): a helper that finds its code changed answers "fall back" and exits. The
    caller's ukrun runs the verb itself otherwise, and the helper's log says why;
  * a worker whose caller dies (the shim's timeout killed it) dies too: nobody would hear its answer, and what
    it made is reclaimed like any crash's;
  * the helper holds no state between calls: each worker is a fresh fork, and reads the configuration, the
    records and containerd as the caller would;
  * the fork happens before the call, not on it: one spare worker waits in accept(), and the helper forks the
    next spare once it has taken a call (the fork of a process that imported all of ukrun costs a few ms that
    the shim would otherwise wait for). A spare never outlives the helper: it exits when the helper's end of
    their pipe closes, so a killed helper leaves no listener behind.
"""

from __future__ import annotations

import _thread
import array
import contextlib
import enum
import marshal
import os
import select
import signal
import socket
import struct
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple, NoReturn

from ukrun import fast, relay
from ukrun.sourcewatch import SourceWatch

# What ukrun's modules import inside functions, on the create and delete paths: a worker imports nothing.
STDLIB = ("pickle", "tomllib", "shutil", "json", "subprocess", "signal", "struct", "stat", "fcntl", "termios",
          "tempfile", "shlex")
SETTLE_S = 1.0  # the longest a worker at work delays the next spare


def serve(path: str, idle_exit: float = 0.0) -> int:
    """Serves until SIGTERM, or `idle_exit` seconds without a call (0: never)."""
    from ukrun.errors import UkrunError

    watch = SourceWatch(_package_dir())  # before the imports: any later change is seen
    _preload()
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, mode=0o700, exist_ok=True)
    if os.path.exists(path):
        if _answers(path):
            raise UkrunError(f"a helper already serves {path}; stop it first (SIGTERM) or name another --socket")
        os.unlink(path)  # a helper that died left its socket
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    old = os.umask(0o177)
    try:
        server.bind(path)
    finally:
        os.umask(old)
    bound = os.stat(path).st_ino
    server.listen(64)
    stop = []
    signal.signal(signal.SIGTERM, lambda _s, _f: stop.append(True))
    last = time.monotonic()
    alive_r, alive_w = os.pipe2(os.O_CLOEXEC)  # a spare's word that this helper lives: its write end
    spare: _Spare | None = None
    print(f"ukrun helper: serving {path} (pid {os.getpid()})", flush=True)
    try:
        while not stop and not (idle_exit and time.monotonic() - last > idle_exit):
            _reap()
            if spare is None:
                spare = _Spare.fork(server, alive_r, alive_w, watch)
            try:
                ready, _, _ = select.select([spare.took], [], [], 1.0)
            except InterruptedError:
                continue
            if ready:  # it took a call (a byte) or died (end of file): either way, the next one
                spare.settle(server)
                spare, last = None, time.monotonic()
    finally:
        if spare is not None:
            spare.end()
        with contextlib.suppress(FileNotFoundError):
            if os.stat(path).st_ino == bound:  # not a later helper's
                os.unlink(path)
        server.close()
        os.close(alive_w)
        watch.close()
    return 0


def _preload() -> None:
    """Every ukrun module and the standard modules they import late: a worker imports nothing."""
    import importlib

    from ukrun.hypervisors.base import REGISTRY, get
    from ukrun.unikernels.base import get as guest

    for name in STDLIB:
        importlib.import_module(name)
    top = os.path.dirname(_package_dir())
    for folder, _, files in os.walk(_package_dir()):
        package = os.path.relpath(folder, top).replace(os.sep, ".")  # some are namespace packages
        for name in sorted(f.removesuffix(".py") for f in files if f.endswith(".py") and f != "__main__.py"):
            importlib.import_module(package if name == "__init__" else f"{package}.{name}")
    get("qemu")  # every monitor and guest type registers itself at its first use: all of them, now
    guest("linux")
    assert REGISTRY


class _Spare:
    """A worker forked before its call, waiting in accept(): the helper waits on `took` for its byte."""

    __slots__ = ("pid", "took")

    def __init__(self, pid: int, took: int) -> None:
        self.pid, self.took = pid, took

    @classmethod
    def fork(cls, server: socket.socket, alive_r: int, alive_w: int, watch: SourceWatch) -> _Spare:
        took_r, took_w = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:
            try:
                os.close(alive_w)
                os.close(took_r)
                conn = _accept(server, alive_r)
                os.write(took_w, b"1")  # kept open: its end of file says this worker is done
                server.close()
                os.close(alive_r)
            except BaseException:
                os._exit(1)
            _worker(conn, watch)
        os.close(took_w)
        return cls(pid, took_r)

    def settle(self, server: socket.socket) -> None:
        """Waits until this worker is done, or another caller comes, before the next spare is forked: a fork
        beside a worker at work slows it on a small machine."""
        with contextlib.suppress(InterruptedError):
            if os.read(self.took, 1):
                select.select([self.took, server.fileno()], [], [], SETTLE_S)
        self.let_go()

    def let_go(self) -> None:
        os.close(self.took)

    def end(self) -> None:
        """The helper stops: a spare that has taken no call goes (one that has finishes its call)."""
        with contextlib.suppress(OSError):
            if not select.select([self.took], [], [], 0)[0]:
                os.kill(self.pid, signal.SIGKILL)
        self.let_go()


def _accept(server: socket.socket, alive_r: int) -> socket.socket:
    """The next caller; exits when the helper is gone (its end of the pipe closed) instead."""
    while True:
        with contextlib.suppress(InterruptedError):
            ready, _, _ = select.select([alive_r, server.fileno()], [], [])
            if alive_r in ready:
                os._exit(0)
            return server.accept()[0]  # the only process that accepts: the caller is there


def _answers(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(path)
        except OSError:
            return False
    return True


def _reap() -> None:
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass


def _package_dir() -> str:
    import ukrun

    return os.path.dirname(os.path.abspath(ukrun.__file__))


def _worker(conn: socket.socket, watch: SourceWatch) -> None:
    """A forked worker: one call, then os._exit (its buffers and exit handlers are the helper's)."""
    try:
        _pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                              struct.calcsize("3i")))
        if uid != os.getuid():
            os._exit(0)
        fields, fds = _receive(conn)
        if fields[:1] != (relay.VERSION,):
            _refuse(conn, Refusal.VERSION, None)
        request = relay.Request(*fields)
        refusal = _refusal(request, watch)
        if refusal:
            _refuse(conn, refusal, request)
        conn.sendall(_call(request, fds, conn).pack())
    except BaseException:  # anything: the caller reads end of file as a failed verb
        os._exit(1)
    os._exit(0)


class Refusal(enum.Enum):
    """Why a worker does not serve a call; the value is the reply's `fallback`."""

    VERSION = "version"
    NAMESPACES = "namespaces"
    VERB = "verb"
    ARGUMENTS = "arguments"
    STALE = "stale"
    FOREIGN = "foreign"


def _refusal(request: relay.Request, watch: SourceWatch) -> Refusal | None:
    if request.namespaces != relay.namespaces():
        return Refusal.NAMESPACES
    if request.verb not in (b"create", b"delete", *relay.HOT):
        return Refusal.VERB
    if watch.changed():
        return Refusal.STALE
    return None if os.path.realpath(request.package) == os.path.realpath(_package_dir()).encode() else Refusal.FOREIGN


def _refuse(conn: socket.socket, refusal: Refusal, request: relay.Request | None) -> NoReturn:
    _say(f"refused a call ({_why(refusal, request)}): its caller runs it itself")
    conn.sendall(relay.Reply(fallback=refusal.value.encode()).pack())
    if refusal is Refusal.STALE:
        os.kill(os.getppid(), signal.SIGTERM)  # a helper whose code changed serves no more
    os._exit(0)


def _why(refusal: Refusal, request: relay.Request | None) -> str:
    if refusal is Refusal.FOREIGN and request:
        return f"its ukrun is {os.fsdecode(request.package)}, this helper's {_package_dir()}"
    return {Refusal.VERSION: "another version of the relay", Refusal.NAMESPACES: "other mount, PID or user namespaces",
            Refusal.VERB: "not a verb the helper serves", Refusal.ARGUMENTS: "arguments the helper does not parse",
            Refusal.STALE: "this helper's code changed on disk: it stops"}.get(refusal, refusal.value)


def _say(what: str) -> None:
    """A line of the helper's own log (its standard error, until the worker takes on the caller's)."""
    with contextlib.suppress(OSError):
        os.write(2, f"ukrun helper: worker {os.getpid()}: {what}\n".encode())


def _call(request: relay.Request, fds: list[int], conn: socket.socket) -> relay.Reply:
    """Becomes the caller (environment, folder, streams) and runs its verb; the reply."""
    from ukrun.runtime.verbs import HandToRunc

    argv = [os.fsdecode(a) for a in request.argv]
    call = _parse(request, argv)
    if call is None:
        _refuse(conn, Refusal.ARGUMENTS, request)
    _say(f"{call.verb} {call.container_id}")  # which call each worker served
    os.environ.clear()
    os.environb.update(entry.partition(b"=")[::2] for entry in request.env)
    os.chdir(request.cwd)
    for std, fd in zip((0, 1, 2), fds[:3], strict=True):
        os.dup2(fd, std)
        os.close(fd)
    _watch_caller(conn)
    try:
        code = _verb(request, call, argv, fds[3:])
    except HandToRunc as hand:
        code, runc = 0, os.fsencode(hand.runc)
    else:
        runc = b""
    _let_go_of_streams()
    return relay.Reply(code, runc)


def _let_go_of_streams() -> None:
    """Closes the caller's streams before the answer: the shim reads a verb's output until every holder of its
    pipe has closed it, and would otherwise wait for this worker's exit as well as its caller's."""
    sys.stdout.flush()
    sys.stderr.flush()
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    for std in (0, 1, 2):
        os.dup2(null, std)
    os.close(null)


def _watch_caller(conn: socket.socket) -> None:
    """Kills this worker if its caller goes away before the answer. A bare thread: threading's would wait until
    the thread runs (a hand-over of the interpreter's lock and back) before the call goes on."""
    _thread.start_new_thread(_orphaned, (conn,))


def _orphaned(conn: socket.socket) -> None:
    """The caller went away before the answer (its end closed): this worker's work is nobody's."""
    with contextlib.suppress(OSError):
        conn.recv(1)
    os.kill(os.getpid(), signal.SIGKILL)


class Call(NamedTuple):
    """A relayed call, parsed as the shim's ukrun parses it."""

    globals: fast.Globals
    verb: str
    rest: list[str]
    container_id: str


def _parse(request: relay.Request, argv: list[str]) -> Call | None:
    """The call, or None: arguments the shim's ukrun would not take, another verb than the request's, or a zygote
    given another state folder than the container's (a compiled front parses less)."""
    parsed = fast.parse(argv)
    if parsed is None or parsed[1].encode() != request.verb:
        return None
    g, verb, rest = parsed
    if verb == "create":
        args = fast.parse_create(rest)
        if args is None or not fast.valid_id(args.id) or os.fsencode(fast.join(g.root, args.id)) != request.zygote_dir:
            return None
        return Call(g, verb, rest, args.id)
    if verb == "delete":
        deleting = fast.parse_delete(rest)
        return None if deleting is None else Call(g, verb, rest, deleting[1])
    hot = fast.hot_call(verb, rest)
    return None if hot is None else Call(g, verb, rest, hot[0])


def _verb(request: relay.Request, call: Call, argv: list[str], zygote_fds: list[int]) -> int:
    from ukrun.runtime import verbs
    from ukrun.runtime.zygote import Zygote

    g, verb, rest, _ = call

    def context() -> verbs.Context:
        return fast.context(g, argv)._replace(shim=request.shim, relayed=True)

    if verb == "create":
        args = fast.parse_create(rest)
        assert args is not None
        zygote = Zygote.adopt(request.zygote, socket.socket(fileno=zygote_fds[0]), zygote_fds[1], zygote_fds[2])

        def create() -> None:
            from ukrun.runtime.create import create as run

            run(context(), args.id, Path(args.bundle).resolve(), Path(args.pid_file) if args.pid_file else None,
                args.console_socket, zygote)

        return fast.guarded(g, create)
    if verb == "delete":
        deleting = fast.parse_delete(rest)
        assert deleting is not None
        code = fast.bare_delete(g, *deleting)
        return fast.full_delete(g, *deleting, context) if code is None else code
    code = fast.hot(g, verb, rest, argv, context)
    assert code is not None  # its arguments were parsed before anything was done (_parse)
    return code


def _receive(conn: socket.socket) -> tuple[tuple[Any, ...], list[int]]:
    """The request's fields, unchecked (their number and kinds are the version's, the first), and its fds."""
    fds = array.array("i")
    head, ancdata, _flags, _addr = conn.recvmsg(4, socket.CMSG_SPACE(16 * fds.itemsize))
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    size = int.from_bytes(head, "big")
    body = b""
    while len(body) < size:
        chunk = conn.recv(size - len(body))
        if not chunk:
            raise EOFError("the caller went away")
        body += chunk
    fields = marshal.loads(body)
    if not isinstance(fields, tuple):
        raise ValueError("a request is a tuple")
    return fields, list(fds)
