"""The shim's `create` and `delete`, handed to a resident helper (ukrun.helper) when one answers. ukrun's compiled
front (src/front/front.c), when installed, speaks the same protocol for `state`, `start` and `kill` too.

Why: the shim starts ukrun for every verb, and most of what `create` and `delete` pay is importing ukrun
(the containerd client, the planner, every guest type and monitor), not their work. A helper that has
imported all of it once forks a worker per call; this process, which the shim started, only relays.
It is a speed-up, never a requirement: with no helper, a helper of another mount or PID namespace, of another
install of ukrun (its package elsewhere on disk), or one whose code is older than this ukrun, the verb runs
here as before (None below).

What must stay true:
  * whatever must be the shim's descendant is made here: the container's init-to-be (the zygote) is
    forked by this process before the request (its ends go to the worker as SCM_RIGHTS), and a
    container that is not a unikernel is handed to runc by this process's exec;
  * this process imports posix, marshal and `_socket` alone, all built into the interpreter: `socket` would
    bring enum and selectors (5-10 ms on every relayed call), and os brings `_collections_abc` and posixpath
    (1.2 ms); marshal, not JSON, in its format 0, which a dozen lines of C write and read. The environment is
    posix's, as bytes (the very dict os.environ keeps up to date);
  * once a request is sent, there is no falling back: a worker that dies is a verb that failed, and
    what it made is reclaimed as after any crash (`delete`, `ukrun gc`).
"""

import _socket
import marshal
import posix
import sys

ENV = b"UKRUN_HELPER"  # the helper's socket; default DEFAULT
DEFAULT = "/run/ukrun/helper.sock"
VERSION = 3  # the first field of every request: a worker checks it before it reads the others
NAMESPACES = ("mnt", "pid", "user")  # the worker acts on the host as this process sees it
HOT = (b"state", b"start", b"kill")  # what the compiled front relays beside create and delete (see helper)


def socket_path() -> str:
    return (posix.environ.get(ENV) or DEFAULT.encode()).decode("utf-8", "surrogateescape")


def answering() -> bool:
    """Whether a helper may be there (its socket exists): the only cost the verbs pay without one."""
    try:
        posix.stat(socket_path())
    except OSError:
        return False
    return True


def namespaces() -> list[bytes]:
    """The inode numbers of this process's namespaces, in decimal (they pass 32 bits)."""
    return [str(posix.stat(f"/proc/self/ns/{ns}").st_ino).encode() for ns in NAMESPACES]


def package() -> bytes:
    """The folder of the caller's ukrun package: a helper serves only callers of its own install."""
    import ukrun

    return ukrun.__file__.rpartition("/")[0].encode("utf-8", "surrogateescape")


class Request:
    """A relayed call, marshalled (format 0: tuples, lists, 32-bit ints and bytes only, which the compiled front
    writes too) as a tuple of its fields, in this order. Every text is bytes as the kernel gave it to the caller
    (its arguments, environment entries `NAME=value`, folder), so a caller in C passes them on untouched and the
    worker decodes them as Python decodes its own (no typing on the client's path)."""

    __slots__ = ("argv", "cwd", "env", "namespaces", "package", "shim", "verb", "version", "zygote", "zygote_dir")

    def __init__(self, version: int, verb: bytes, argv: list[bytes], env: list[bytes], cwd: bytes, shim: int,
                 namespaces: list[bytes], zygote: int, package: bytes, zygote_dir: bytes) -> None:
        self.version, self.verb, self.argv, self.env, self.cwd = version, verb, argv, env, cwd
        self.shim, self.namespaces, self.zygote = shim, namespaces, zygote  # the zygote's PID (create)
        self.package = package  # relay.package() of the caller
        self.zygote_dir = zygote_dir  # the state folder the caller gave its zygote (create)

    def pack(self) -> bytes:
        return frame((self.version, self.verb, self.argv, self.env, self.cwd, self.shim, self.namespaces,
                      self.zygote, self.package, self.zygote_dir))


class Reply:
    """The worker's answer: an exit code, or runc to exec (not a unikernel), or why to run the verb here. A helper
    of an older relay answers a request of this version with its own refusal, whose texts are str."""

    __slots__ = ("code", "fallback", "runc")

    def __init__(self, code: int = 1, runc: bytes | str = b"", fallback: bytes | str = b"") -> None:
        self.code, self.runc, self.fallback = code, runc, fallback

    def pack(self) -> bytes:
        return frame((self.code, self.runc, self.fallback))


def frame(value: tuple[int | bytes | str | list[bytes] | dict[str, str], ...]) -> bytes:
    data = marshal.dumps(value, 0)
    return len(data).to_bytes(4, "big") + data


def run(verb: str, argv: list[str], state_dir: str) -> int | None:
    """Relays `create` or `delete` (argv: ukrun's own arguments); the exit code, or None to run it here."""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    try:
        sock.connect(socket_path())
        cwd, ns = posix.getcwdb(), namespaces()
    except OSError:  # nothing sent yet: run it here
        sock.close()
        return None
    zygote = _Zygote(state_dir) if verb == "create" else None
    try:
        request = Request(VERSION, verb.encode(), [_bytes(a) for a in argv],
                          [k + b"=" + v for k, v in posix.environ.items()], cwd, posix.getppid(), ns,
                          zygote.pid if zygote else 0, package(), _bytes(state_dir) if zygote else b"")
        fds = [0, 1, 2, *(zygote.ends if zygote else ())]
        sock.sendmsg([request.pack()], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, pack_fds(fds))])
        if zygote:
            zygote.let_go()  # the worker holds its ends now: it alone decides the zygote's fate
        reply = _read(sock)
    finally:
        sock.close()
        if zygote:
            zygote.let_go()
            zygote.reap()
    if reply is None:
        return 1  # the worker died: a failed verb, reclaimed like any crash (no falling back now)
    if reply.fallback:
        return None
    if reply.runc:  # not a unikernel: runc, as the shim's child, with the same arguments
        posix.execv(reply.runc, [reply.runc, *argv])
    return reply.code


def _bytes(text: str) -> bytes:
    """An argument or path as the kernel gave it (Python decoded it with surrogateescape)."""
    return text.encode("utf-8", "surrogateescape")


def pack_fds(fds: list[int]) -> bytes:
    """File descriptors as SCM_RIGHTS carries them: C ints, native order."""
    return b"".join(fd.to_bytes(4, sys.byteorder) for fd in fds)


def _read(sock: _socket.socket) -> Reply | None:
    """The worker's framed reply; None on end of file (it died)."""
    head = _exact(sock, 4)
    body = None if head is None else _exact(sock, int.from_bytes(head, "big"))
    return None if body is None else Reply(*marshal.loads(body))


def _exact(sock: _socket.socket, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


class _Zygote:
    """The container's init-to-be, forked here (the shim's descendant) as ukrun.runtime.zygote forks it."""

    def __init__(self, state_dir: str) -> None:
        sync_r, sync_w = posix.pipe2(posix.O_CLOEXEC)
        commit_r, commit_w = posix.pipe2(posix.O_CLOEXEC)
        ours, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)  # as runtime.zygote's
        pid = posix.fork()
        if pid == 0:
            try:
                ours.close()
                posix.close(sync_r)
                posix.close(commit_w)
                from ukrun import launcher  # imported while the worker works: kept light (see launchconfig)

                launcher.zygote(state_dir, theirs, sync_w, commit_r)
            finally:
                posix._exit(1)
        theirs.close()
        posix.close(sync_w)
        posix.close(commit_r)
        self.pid, self.ours, self.ends = pid, ours, (ours.fileno(), sync_r, commit_w)
        self.held = True

    def let_go(self) -> None:
        """Closes this process's ends (idempotent): the zygote then answers only to the worker."""
        if self.held:
            self.held = False
            self.ours.close()
            for fd in self.ends[1:]:
                posix.close(fd)

    def reap(self) -> None:
        try:
            posix.waitpid(self.pid, 0)
        except ChildProcessError:  # reaped already
            return
