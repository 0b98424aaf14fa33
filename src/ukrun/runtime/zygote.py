"""The container's init-to-be, forked by `create` before anything heavy is loaded.

Forking it early keeps the init small and saves a fresh interpreter per container. This module uses
`_socket`, socket's C half: socket itself brings selectors and its enums (2.3 ms of a create without a
helper, of whose imports it was the only user). What must stay true:
the init never runs the container until create has saved its PID (the commit byte), and a create that
fails or crashes lets the zygote and the init exit on end of file, so neither outlives it unrecorded.
"""

from __future__ import annotations

import _socket
import array
import contextlib
import os
from pathlib import Path

from ukrun.errors import UkrunError

TYPE_CHECKING = False  # not typing's, whose import costs a create without a helper about 2 ms
if TYPE_CHECKING:
    from ukrun.launchconfig import Namespace


class Zygote:
    """The container's init-to-be (ukrun.launcher.zygote): forked now, told to go once the launch
    configuration is written; closing it without `start` makes it exit."""

    def __init__(self, d: Path) -> None:
        from ukrun import launcher  # here, not in the child: `prepare` needs it too

        sync_r, sync_w = os.pipe()
        commit_r, commit_w = os.pipe()
        ours, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)  # a message per packet
        pid = os.fork()
        if pid == 0:
            ours.close()
            os.close(sync_r)
            os.close(commit_w)
            launcher.zygote(str(d), theirs, sync_w, commit_r)
        theirs.close()
        os.close(sync_w)
        os.close(commit_r)
        self.pid, self.sock, self.sync, self.commit_fd = pid, ours, sync_r, commit_w
        self.reaped = False

    @classmethod
    def adopt(cls, pid: int, sock: _socket.socket, sync_fd: int, commit_fd: int) -> Zygote:
        """A zygote another process forked and reaps (ukrun.relay: the shim's child), driven from here."""
        z = cls.__new__(cls)
        z.pid, z.sock, z.sync, z.commit_fd = pid, sock, sync_fd, commit_fd
        z.reaped = True  # not ours to wait for
        return z

    def prepare(self, namespaces: tuple[Namespace, ...]) -> None:
        """Names the new namespaces the zygote may make while `create` plans (ukrun.launcher.early). A zygote
        already gone is found by `start`."""
        from ukrun.launcher import PREPARE, early

        flags = early(namespaces)
        if flags:
            with contextlib.suppress(OSError):
                self.sock.send(PREPARE + flags.to_bytes(4, "big"))

    def start(self, terminal: bool, console_socket: str) -> int:
        """Sends "go" (and the terminal); returns the init's PID once the zygote has forked it."""
        master = slave = -1
        try:
            fds = array.array("i")
            if terminal:
                if not console_socket:
                    raise UkrunError("the spec asks for a terminal but the caller gave no --console-socket")
                master, slave = os.openpty()
                send_console(console_socket, master)
                fds.append(slave)
            rights = [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, fds)] if fds else []
            self.sock.sendmsg([b"go"], rights)
        finally:
            self.sock.close()
            for fd in (master, slave):
                if fd >= 0:
                    os.close(fd)
        with os.fdopen(self.sync) as r:
            self.sync = -1
            line = r.readline().strip()
        status = 0
        if not self.reaped:
            _, status = os.waitpid(self.pid, 0)
            self.reaped = True
        if status != 0 or not line.isdigit():
            reason = line.removeprefix("error ").strip() or f"the launcher exited with {status}"
            raise UkrunError(f"cannot start the container's init: {reason}")
        return int(line)

    def commit(self) -> None:
        try:
            os.write(self.commit_fd, b"1")
        except BrokenPipeError:
            raise UkrunError("the container's init died before create could hand it the container") from None
        finally:
            self.close()

    def close(self) -> None:
        """Lets go of the zygote (it exits on end of file) and of the init (likewise, if not committed)."""
        self.sock.close()
        for fd in (self.sync, self.commit_fd):
            if fd >= 0:
                os.close(fd)
        self.sync = self.commit_fd = -1
        if not self.reaped:
            self.reaped = True
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, 0)


def send_console(path: str, fd: int) -> None:
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    try:
        s.connect(path)
        name = os.ttyname(fd).encode() if os.isatty(fd) else b"/dev/ptmx"
        s.sendmsg([name], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, array.array("i", [fd]))])
    finally:
        s.close()
