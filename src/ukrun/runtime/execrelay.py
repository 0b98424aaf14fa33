"""An exec's host process: it holds the exec's place on the host (its PID is the exec's, for the shim to
signal and reap) while the process itself runs in the guest.

It takes a free exec port (an exclusive lock on `<i>.lock` in the container's exec folder; the kernel
drops the lock when the process dies), connects to the port's socket, sends START with a fresh nonce and
waits, at most START_TIMEOUT, for the guest's STARTED or FAILED. Then it relays: its stdin (or the
terminal whose master it sent to the console socket) to the guest, the guest's stdout and stderr to its
own, every signal it can catch to the guest's process, the terminal's size on SIGWINCH. It ends as the
guest's process did: with its exit code, or killed by its signal. If the socket closes first (the VM
stopped), it says so on its stderr and dies of SIGKILL, as runc's exec processes do when their
container goes. Its socket buffer is non-blocking and bounded (stdin is read only while it drains), so a
guest that stops reading cannot wedge it; every frame from the guest is checked (ukrun.execwire).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import signal
import socket
import time

from ukrun import crashpoints
from ukrun import execwire as wire
from ukrun.errors import UkrunError
from ukrun.runtime import state as st

START_TIMEOUT = 60.0
HIGH = 256 * 1024
NOT_FORWARDED = {signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD, signal.SIGPIPE, signal.SIGWINCH, signal.SIGSEGV,
                 signal.SIGBUS, signal.SIGILL, signal.SIGFPE, signal.SIGTRAP}
NOT_FATAL = {signal.SIGCHLD, signal.SIGCONT, signal.SIGURG, signal.SIGWINCH, signal.SIGSTOP, signal.SIGTSTP,
             signal.SIGTTIN, signal.SIGTTOU}
PR_SET_PDEATHSIG = 1


class Session:
    """One exec port, locked and connected; `start` has the guest run the process."""

    def __init__(self, root: str, record: st.ContainerState) -> None:
        self.id = record.id
        folder = os.path.join(st.container_dir(root, record.id), st.EXEC_FOLDER)
        self.lock = -1
        for i in range(record.exec_ports):
            fd = os.open(os.path.join(folder, f"{i}.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self.lock, self.path = fd, os.path.join(folder, str(i))
            break
        else:
            raise UkrunError(f"container {record.id} already runs {record.exec_ports} execs, as many as its guest "
                             "serves at once: wait for one to end")
        self.record, self.root = record, root
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        self.nonce = wire.nonce()
        self.reader = wire.Reader(self.nonce)
        self.early: list[tuple[int, bytes]] = []  # frames that came with the guest's answer

    def _connect(self, deadline: float) -> None:
        """qemu listens once the VM runs, moments after `start`: retried while the container lives."""
        while True:
            try:
                self.sock.connect(self.path)
                return
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() > deadline or not st.alive(self.record):
                    raise UkrunError(f"container {self.id}'s monitor does not serve exec: its VM is not running"
                                     ) from None
                time.sleep(0.05)

    def start(self, proc: wire.Process) -> int:
        """The guest's PID for the process, once the guest started it; the guest's reason as the error."""
        deadline = time.monotonic() + START_TIMEOUT
        self._connect(deadline)
        silent = UkrunError(f"the guest of container {self.id} did not answer exec within {START_TIMEOUT:.0f} s: it "
                            "may still be booting, or its init does not start ukrun's exec agent (ukrun.exec=, see "
                            "the README's Linux guests)")
        try:
            self.sock.settimeout(START_TIMEOUT)
            self.sock.sendall(wire.start(self.nonce, proc))
        except TimeoutError:
            raise silent from None
        except ValueError as exc:
            raise UkrunError(f"exec in container {self.id}: {exc}") from None
        while True:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.sock], [], [], max(left, 0))
            if not ready:
                raise silent
            data = self.sock.recv(65536)
            if not data:
                raise UkrunError(f"the guest of container {self.id} stopped before the exec started")
            try:
                frames = self.reader.feed(data)
            except wire.ProtocolError as exc:
                raise UkrunError(f"container {self.id}: {exc}") from None
            if frames:
                kind, payload = frames[0]
                if kind == wire.FAILED:
                    raise UkrunError(f"container {self.id}'s guest could not start the process: "
                                     f"{wire.text(payload[8:])}")
                self.early = frames[1:]
                return wire.started_pid(payload)


def launch(root: str, record: st.ContainerState, proc: wire.Process, detach: bool, pid_file: str,
           console: str) -> int:
    if not detach:  # by hand: this process is the exec's
        tty = _terminal(proc, console) if proc.terminal else -1
        session = Session(root, record)
        session.start(proc)
        finish(relay(session, tty, proc))
    report_r, report_w = os.pipe()
    go_r, go_w = os.pipe()
    parent = os.getpid()
    child = os.fork()
    if child == 0:
        os.close(report_r)
        os.close(go_w)
        _host_process(root, record, proc, console, parent, report_w, go_r)
    os.close(report_w)
    os.close(go_r)
    with os.fdopen(report_r, "rb") as report:
        if report.readline() == b"armed\n":  # from here on the host process dies with this one
            crashpoints.point("exec-after-fork")
        line = report.readline().decode(errors="replace").rstrip("\n")
        if not line.startswith("ok"):
            os.waitpid(child, 0)
            raise UkrunError(line.removeprefix("err ") or f"the exec's host process for container {record.id} died")
        crashpoints.point("exec-before-pid-file")  # the host process dies with this one, the guest's with it
        if pid_file:
            tmp = os.path.join(os.path.dirname(pid_file) or ".", f".{os.path.basename(pid_file)}.tmp")
            with open(tmp, "w") as f:
                f.write(str(child))
            os.replace(tmp, pid_file)
        os.write(go_w, b"1")
        report.read(1)  # the host process no longer dies with this one
    os.close(go_w)
    return 0


def _host_process(root: str, record: st.ContainerState, proc: wire.Process, console: str, parent: int,
                  report: int, go: int) -> None:
    """The forked host process; never returns."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    try:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:
            os._exit(1)
        os.write(report, b"armed\n")
        for folder in record.cgroups:  # the container's processes include its execs (ps, kill --all, delete)
            with contextlib.suppress(OSError), open(os.path.join(folder, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))
        tty = _terminal(proc, console) if proc.terminal else -1
        session = Session(root, record)
        pid = session.start(proc)
    except (UkrunError, OSError) as exc:
        os.write(report, f"err {' '.join(str(exc).split())}\n".encode())
        os._exit(1)
    os.write(report, f"ok {pid}\n".encode())
    if os.read(go, 1) != b"1":
        os._exit(1)  # `exec` died before it wrote the pid file: nobody knows this process
    libc.prctl(PR_SET_PDEATHSIG, 0)
    os.write(report, b"a")
    os.close(report)
    os.close(go)
    finish(relay(session, tty, proc))


def _terminal(proc: wire.Process, console: str) -> int:
    """A pseudo-terminal whose master goes to the console socket; the slave, raw, becomes this process's
    controlling terminal (so the shim's resizes arrive as SIGWINCH) and its stdio."""
    import struct
    import termios
    import tty

    from ukrun.runtime.zygote import send_console

    master, slave = os.openpty()
    if proc.rows and proc.cols:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", proc.rows, proc.cols, 0, 0))
    try:
        send_console(console, master)
    finally:
        os.close(master)
    os.setsid()
    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    tty.setraw(slave)
    for std in (0, 1, 2):  # let go of the caller's stdio: the shim waits for its end before it resizes
        os.dup2(slave, std)
    return slave


def _size(fd: int) -> tuple[int, int]:
    import struct
    import termios

    rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
    return rows, cols


def relay(session: Session, tty: int, proc: wire.Process) -> tuple[bool, int] | None:
    """Relays until the guest's process ends: (killed by a signal, signal or code); None if the VM went."""
    inp, out, err = (tty, tty, tty) if tty >= 0 else (0, 1, 2)
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    for sig in signal.valid_signals() - NOT_FORWARDED | ({signal.SIGWINCH} if tty >= 0 else set()):
        with contextlib.suppress(OSError, ValueError):
            signal.signal(sig, lambda _s, _f: None)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    sock = session.sock
    sock.setblocking(False)
    pending = bytearray()
    if tty >= 0 and proc.rows == 0:
        pending += wire.window(*_size(tty))
    stdin_open = reading = True
    poller = select.poll()
    poller.register(wake_r, select.POLLIN)
    poller.register(inp, select.POLLIN)
    frames = list(session.early)
    while True:
        for kind, payload in frames:
            if kind == wire.EXIT:
                try:
                    return wire.exit_status(payload)
                except wire.ProtocolError as exc:
                    _tell(err, f"container {session.id}: {exc}")
                    return None
            _write_all(err if kind == wire.STDERR else out, payload)
        poller.register(sock, select.POLLIN | (select.POLLOUT if pending else 0))
        if stdin_open and reading != (len(pending) < HIGH):  # stdin waits while the guest drains
            reading = not reading
            poller.modify(inp, select.POLLIN if reading else 0)
        frames = []
        for fd, events in poller.poll():
            if fd == wake_r:
                with contextlib.suppress(BlockingIOError):
                    for number in os.read(wake_r, 64):
                        pending += wire.window(*_size(tty)) if number == signal.SIGWINCH else wire.signal_frame(number)
            elif fd == inp and stdin_open and events & (select.POLLIN | select.POLLHUP | select.POLLERR):
                data = _read(inp)
                if data:
                    pending += wire.frame(wire.STDIN, data)
                else:
                    stdin_open = False
                    poller.unregister(inp)
                    if tty < 0:
                        pending += wire.frame(wire.STDIN_EOF)
            elif fd == sock.fileno():
                if events & select.POLLOUT and pending:
                    try:
                        del pending[:sock.send(pending)]
                    except BlockingIOError:
                        pass
                    except OSError:
                        return None
                if events & (select.POLLIN | select.POLLHUP | select.POLLERR):
                    try:
                        data = sock.recv(65536)
                    except BlockingIOError:
                        continue
                    except OSError:
                        data = b""
                    if not data:
                        _tell(err, f"ukrun: container {session.id}'s guest stopped while this exec ran")
                        return None
                    try:
                        frames += session.reader.feed(data)
                    except wire.ProtocolError as exc:
                        _tell(err, f"ukrun: container {session.id}: {exc}; the exec is abandoned")
                        return None


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, wire.MAX_DATA)
    except OSError:  # EIO: the terminal's other side closed
        return b""


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            select.select([], [fd], [])
        except OSError:
            return  # nobody reads the exec's output any more


def _tell(fd: int, message: str) -> None:
    with contextlib.suppress(OSError):
        os.write(fd, (message + "\r\n" if os.isatty(fd) else message + "\n").encode())


def finish(ended: tuple[bool, int] | None) -> None:
    """Ends this process as the guest's process ended; SIGKILL when the VM went first."""
    signaled, value = ended if ended is not None else (True, signal.SIGKILL)
    if signaled:
        if value not in NOT_FATAL:
            with contextlib.suppress(OSError, ValueError):
                signal.signal(value, signal.SIG_DFL)
                signal.pthread_sigmask(signal.SIG_UNBLOCK, [value])
            os.kill(os.getpid(), value)
        os._exit(128 + value)
    os._exit(value)
