"""The container's init, forked from `ukrun create` before it loads anything heavy (the gRPC client).

`create` forks this "zygote" early and goes on gathering, acquiring and handing over the rootfs; the zygote
waits on a socket. Once `create` has read the spec, it names the new namespaces the zygote may make
meanwhile (`early`: making them is most of the zygote's work after "go"). When `create` has written the
launch configuration it sends "go" (with the terminal's pty as SCM_RIGHTS when the spec asks for one); end
of file instead means `create` failed, and the zygote exits. Then the zygote joins the container's
namespaces and forks again: the child is the init (PID 1 in a new PID namespace), the zygote reports the
child's PID on the sync pipe and exits, so `create` never waits on the init itself and the shim (a
subreaper) adopts it. The init joins the container's cgroups (`settle`: after its PID went out, since the
kernel makes a first move into a new cgroup wait), then waits for `create` to commit (a byte on the commit
pipe, written once the container's state is saved): end of file instead means `create` died before anyone
could know the init, and the init exits, so a crashed create never leaves an orphan. Then it waits until
`ukrun start` opens the exec FIFO (before which nothing of the container runs; an init that could not settle
answers with an empty read and the reason in the state folder), runs the monitor and stays as its parent: it
forwards signals, reaps, and exits with the guest's exit code.
A virtio-fs rootfs's virtiofsd (runtime.shareplan) is the init's child too, started just before the
monitor on a socket the init already listens on: it is in the container's cgroup and PID namespace, dies
with the init (PR_SET_PDEATHSIG; its sandboxed child dies with it in turn), is killed when the monitor
ends, and its death ends the monitor, so it never outlives the VM nor the VM it.
Everything here ends in os._exit: the zygote and the init are copies of `create`, whose buffers and
exit handlers are not theirs. Forking instead of starting an interpreter saves ~80 ms per container.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # signal's C half: signal imports enum, 2.5 ms of every init
import _socket
import fcntl
import os
import sys

from ukrun import crashpoints, libc
from ukrun.launchconfig import LaunchConfig
from ukrun.mounttable import mount_points
from ukrun.runtime.state import FIFO, INIT_ERROR
from ukrun.timing import Timer

TYPE_CHECKING = False  # not typing's (see launchconfig)
if TYPE_CHECKING:
    from collections.abc import Iterable

    from ukrun.launchconfig import Namespace

FLAGS = {"mount": 0x00020000, "uts": 0x04000000, "ipc": 0x08000000, "network": 0x40000000,
         "pid": 0x20000000, "cgroup": 0x02000000}
EARLY = ("uts", "ipc", "network", "pid")  # see early
PREPARE = b"ns"  # then the flags, 4 bytes: the namespaces to make before "go" (see early)
MS_REC, MS_SLAVE, MNT_DETACH = 0x4000, 0x80000, 2
PR_SET_PDEATHSIG = 1
VIRTIOFSD_FD = 3  # runtime.shareplan.SOCKET_FD: the launcher imports no more than it must
SIGKILL = 9  # Linux's
_unshare, _setns, _mount, _umount2, _sethostname, _prctl = (libc.function(name) for name in (
    "unshare", "setns", "mount", "umount2", "sethostname", "prctl"))


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = libc.errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def unshare(flags: int) -> None:
    _check(_unshare(flags), "unshare")


def setns(path: str, kind: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        _check(_setns(fd, FLAGS[kind]), f"setns {kind} {path}")
    finally:
        os.close(fd)


def isolate_mounts(views: str, keep: tuple[str, ...]) -> None:
    """In a new mount namespace: become a slave of the host's (nothing done here propagates out), then
    detach what this container must not hold: other containers' rootfs (a mount at <dir>/rootfs beside a
    <dir>/config.json: a concurrent create would find its device still in use) and other views."""
    _check(_mount(None, b"/", None, MS_REC | MS_SLAVE, None), "mount --make-rslave /")
    for point in sorted(set(mount_points()), key=len, reverse=True):
        if any(point == k or k.startswith(point + "/") or point.startswith(k + "/") for k in keep):
            continue
        bundle = os.path.dirname(point)
        bundle_rootfs = point.endswith("/rootfs") and os.path.exists(os.path.join(bundle, "config.json"))
        if bundle_rootfs or (views and point.startswith(views.rstrip("/") + "/")):
            _umount2(point.encode(), MNT_DETACH)  # a mount already gone with its parent is fine


UNIKRAFT_EXITS = {83: 0, 85: 1}  # Unikraft writes 41 to isa-debug-exit at a clean halt, 42 at a crash


def exit_code(status: int, decoding: str) -> int:
    """The container's exit code from the monitor's wait status (see hypervisors.base.ExitDecoding)."""
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        return 128 - code
    if decoding == "isa-debug-exit" and code > 1 and code % 2 == 1:
        # isa-debug-exit makes qemu exit with (code << 1) | 1. Guests write only non-zero codes, so an
        # odd status above 1 is the guest's code; 0 is a clean power-off; 1 is qemu's own failure.
        return code >> 1
    if decoding == "unikraft":
        return UNIKRAFT_EXITS.get(code, code)
    return code


def early(namespaces: Iterable[Namespace]) -> int:
    """The new namespaces the zygote may make before "go", while `create` plans: those no path names and
    nothing of the launch configuration affects (a new network namespace alone costs 0.7 ms here). Not the
    mount namespace: its copy of the host's mounts must be taken after the rootfs is handed over. Not the
    cgroup namespace: it is made in the container's cgroups (settle)."""
    flags = 0
    for n in namespaces:
        if n.type in EARLY and not n.path:
            flags |= FLAGS[n.type]
    return flags


def enter(conf: LaunchConfig, sync_fd: int, made: int = 0) -> None:
    """Joins the container's namespaces and forks the init; the zygote reports the init's PID and exits. The
    init joins its cgroups afterwards (`settle`): the kernel's first move into a new cgroup waits for an RCU
    grace period (6-15 ms here), which `create` no longer waits for; the init settles before it can run.
    `made`: the namespaces the zygote already made (`early`); they must be among those the configuration asks
    for, since the init would otherwise be in a namespace nobody asked for."""
    if made & ~early(conf.namespaces):
        raise OSError("the namespaces made before the launch are not the ones the container's configuration asks for")
    new_pid = False
    flags = 0
    for ns in conf.namespaces:
        kind, path = ns.type, ns.path
        if kind not in FLAGS:
            continue
        if path:
            setns(path, kind)
        elif kind == "pid":
            new_pid = not made & FLAGS["pid"]
        elif kind != "cgroup":  # a new cgroup namespace is made once in the container's cgroups (settle)
            flags |= FLAGS[kind]
    if flags & ~made:
        unshare(flags & ~made)
    if flags & FLAGS["mount"]:
        isolate_mounts(conf.views, conf.keep_mounts)
    if conf.hostname and flags & FLAGS["uts"]:
        name = conf.hostname.encode()
        _check(_sethostname(name, len(name)), "sethostname")
    if conf.terminal:
        import fcntl
        import termios

        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    if new_pid:
        unshare(FLAGS["pid"])
    child = os.fork()
    if child:
        os.write(sync_fd, f"{child}\n".encode())
        os._exit(0)
    os.close(sync_fd)


def settle(conf: LaunchConfig) -> None:
    """In the init, before it waits for `start`: its cgroups (and a new cgroup namespace rooted there)."""
    placed, failures = 0, []
    for folder in conf.cgroups:
        try:
            with open(os.path.join(folder, "cgroup.procs"), "w") as f:
                f.write("0")  # the writer itself, whatever PID namespace it is in
            placed += 1
        except OSError as exc:  # a v2 hierarchy mounted beside v1 controllers may refuse; v1 suffices
            failures.append(f"{folder}: {exc.strerror}")
    if conf.cgroups and not placed:
        raise OSError(f"cannot join any cgroup: {'; '.join(failures)}")
    if any(ns.type == "cgroup" and not ns.path for ns in conf.namespaces):
        unshare(FLAGS["cgroup"])


def committed(commit_fd: int) -> bool:
    """Whether `create` saved the container's state (a byte), rather than dying first (end of file)."""
    try:
        return os.read(commit_fd, 1) == b"1"
    finally:
        os.close(commit_fd)


def forwarded() -> tuple[int, ...]:
    """The signals the init passes on to the monitor."""
    return (_signal.SIGTERM, _signal.SIGINT, _signal.SIGHUP, _signal.SIGQUIT, _signal.SIGUSR1, _signal.SIGUSR2,
            _signal.SIGWINCH, _signal.SIGCONT)


def supervise(conf: LaunchConfig, forward: tuple[int, ...]) -> int:
    argv, env, decoding = conf.monitor, conf.env, conf.exit_decoding
    timer = Timer(conf.timing_log, conf.id, "init")
    daemon = 0
    if conf.virtiofsd:
        try:
            daemon = start_virtiofsd(conf)
        except OSError as exc:
            os.write(2, f"ukrun: cannot start virtiofsd for the rootfs: {exc}\n".encode())
            return 1
        crashpoints.point("init-after-virtiofsd")
    timer.mark("monitor-exec")
    timer.flush()
    child = os.fork()
    if child == 0:
        for sig in forward:
            _signal.signal(sig, _signal.SIG_DFL)
        try:
            os.execve(argv[0], argv, env)
        except OSError as exc:
            os.write(2, f"ukrun: cannot run the monitor {argv[0]}: {exc}\n".encode())
            os._exit(127)
    for sig in forward:
        _signal.signal(sig, lambda s, _f: os.kill(child, s))
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return 1
        if pid == daemon:
            daemon = 0
            code = os.waitstatus_to_exitcode(status)
            if code != 0 or not _ends_by_itself(child):
                os.kill(child, SIGKILL)
                _tell(f"ukrun: the rootfs's virtiofsd ended ({code}) before the monitor, which was stopped; its "
                      "log is virtiofsd.log in the container's state folder\n")
        elif pid == child:
            if daemon:
                os.kill(daemon, SIGKILL)
                os.waitpid(daemon, 0)
            return exit_code(status, decoding)


def _ends_by_itself(monitor: int, grace: float = 2.0) -> bool:
    """Whether the monitor ends within `grace` seconds (left for the caller to reap). virtiofsd ends cleanly
    (0) when its client goes: a monitor that is exiting closes the socket before its exit is seen here."""
    import time

    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if os.waitid(os.P_PID, monitor, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            return True
        time.sleep(0.01)
    return False


def _tell(message: str) -> None:
    """Writes to the container's stderr without blocking: a monitor that lost its virtio-fs backend may
    have filled that pipe with complaints, which nobody reads once a detached client went away."""
    import contextlib

    with contextlib.suppress(OSError):
        fcntl.fcntl(2, fcntl.F_SETFL, fcntl.fcntl(2, fcntl.F_GETFL) | os.O_NONBLOCK)
        os.write(2, message.encode())


def start_virtiofsd(conf: LaunchConfig) -> int:
    """Listens on the virtio-fs socket, then starts virtiofsd on it (fd VIRTIOFSD_FD), its stderr on its
    log; the monitor may connect at once. Returns virtiofsd's PID."""
    import contextlib
    import socket as sockets

    with contextlib.suppress(FileNotFoundError):
        os.unlink(conf.virtiofsd_socket)  # a crashed earlier attempt's; the folder is this container's
    listener = sockets.socket(sockets.AF_UNIX, sockets.SOCK_STREAM)
    listener.bind(conf.virtiofsd_socket)
    listener.listen(1)
    log = os.open(conf.virtiofsd_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        try:
            _check(_prctl(PR_SET_PDEATHSIG, SIGKILL), "prctl")
            if os.getppid() != parent:  # the init died before the line above
                os._exit(1)
            from ukrun import fsguard

            fsguard.install()  # no set-ID file, no device node in the shared folder (see ukrun.fsguard)
            for sig in forwarded():
                _signal.signal(sig, _signal.SIG_DFL)
            # Above any standard or target number first, so that no dup2 below closes another's source.
            sock, err = (fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (listener.fileno(), log))
            null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
            os.dup2(null, 0)
            os.dup2(null, 1)
            os.dup2(err, 2)
            os.dup2(sock, VIRTIOFSD_FD)
            os.execve(conf.virtiofsd[0], conf.virtiofsd, conf.env)
        except OSError as exc:
            os.write(log, f"ukrun: cannot run virtiofsd {conf.virtiofsd[0]}: {exc}\n".encode())
        os._exit(127)
    listener.close()
    os.close(log)
    return pid


def zygote(state_dir: str, sock: _socket.socket, sync_fd: int, commit_fd: int) -> None:
    """Runs in the child `create` forks; never returns."""
    code = 1
    try:
        code = _run(state_dir, sock, sync_fd, commit_fd)
    finally:
        os._exit(code)


def main(args: list[str]) -> None:
    """The zygote of a `create` that ukrun's compiled front (src/front/front.c) relayed: the front forks and
    execs the interpreter on this, with the state folder and the zygote's three ends (the socket, the sync pipe's
    write end, the commit pipe's read end) as arguments; never returns."""
    import gc

    from ukrun.fast import GC_ALLOCATIONS

    gc.set_threshold(GC_ALLOCATIONS)  # as the shim's ukrun runs, which the init outlives
    state_dir, sock, sync_fd, commit_fd = args
    zygote(state_dir, _socket.socket(fileno=int(sock)), int(sync_fd), int(commit_fd))


def _prepare(flags: int) -> int:
    """The namespaces `create` named early, made now; none when the kernel refuses (`enter` tries again, and
    reports why)."""
    try:
        unshare(flags)
    except OSError:
        return 0
    return flags


def _run(state_dir: str, sock: _socket.socket, sync_fd: int, commit_fd: int) -> int:
    fds: list[int] = []
    made = 0
    msg, ancdata, _flags, _addr = sock.recvmsg(16, _socket.CMSG_SPACE(4))
    while msg.startswith(PREPARE) and len(msg) == len(PREPARE) + 4:  # one packet each (SOCK_SEQPACKET)
        made |= _prepare(int.from_bytes(msg[len(PREPARE):], "big"))
        msg, ancdata, _flags, _addr = sock.recvmsg(16, _socket.CMSG_SPACE(4))
    for level, kind, data in ancdata:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:  # C ints, native order
            fds += [int.from_bytes(data[i:i + 4], sys.byteorder) for i in range(0, len(data) - 3, 4)]
    sock.close()
    if msg != b"go":
        return 1  # create failed before the launch
    for tty in fds:  # the terminal: the container's stdio
        for std in (0, 1, 2):
            os.dup2(tty, std)
        os.close(tty)
    conf = LaunchConfig.read(state_dir)
    try:
        enter(conf, sync_fd, made)
    except Exception as exc:  # reported to `create`, which fails with it
        os.write(sync_fd, f"error {exc}\n".encode())
        return 1
    try:
        settle(conf)
        failed = ""
    except OSError as exc:  # `create` has returned by now: `start` reports it (runtime.hot)
        failed = str(exc)
    crashpoints.point("init-before-commit")
    if not committed(commit_fd):
        return 1
    if failed:
        with open(os.path.join(state_dir, INIT_ERROR), "w") as f:
            f.write(failed)
    forward = forwarded()
    fd = os.open(os.path.join(state_dir, FIFO), os.O_WRONLY | os.O_CLOEXEC)  # blocks until `start`
    if not failed:
        os.write(fd, b"0")
    os.close(fd)  # without the byte, `start` fails with the reason
    if failed:
        return 1
    if conf.late_network:
        conf = LaunchConfig.read(state_dir)  # `start` may have added the network (runtime.startnet)
    crashpoints.point("init-before-monitor")
    return supervise(conf, forward)
