"""The verbs the shim calls for every container, often: state, start, kill, and the delete of a bare
container (one that holds nothing but its processes, cgroups and state folder: `bare`).

Standard library only, and its lightest modules (posix, select; not json or signal, whose imports, enum
and re among them, would be most of `start`'s own cost, nor os: see runtime.state), plus `runtime.state`; no
config file is read: what they need was recorded by `create`. `stop` is delete's first step for every
container (runtime.verbs).
"""

import posix
import select
import time

from ukrun import crashpoints
from ukrun.errors import UkrunError
from ukrun.runtime import state as st
from ukrun.timing import Timer

OCI_VERSION = "1.0.2"
SIGKILL = 9  # Linux's, without importing signal


def start(root: str, container_id: str) -> None:
    record = st.load(root, container_id)
    timer = Timer(record.timing_log, container_id, "start")
    timer.mark("start")
    status = st.status(root, record)
    if status != "created":
        raise UkrunError(f"container {container_id} is {status}, not created: it cannot be started")
    d = st.container_dir(root, container_id)
    if st.exists(st.join(d, st.NETWORK_FACTS)) and routed(record.pid):
        from ukrun.runtime import startnet  # Docker's network arrives between create and start

        startnet.connect(root, record)
        timer.mark("network")
    fifo = st.join(d, st.FIFO)
    crashpoints.point("start-before-release")
    fd = posix.open(fifo, posix.O_RDONLY | posix.O_NONBLOCK | posix.O_CLOEXEC)
    try:
        ready, _, _ = select.select([fd], [], [], 10)
        if not ready or not posix.read(fd, 1):
            raise UkrunError(f"the init of container {container_id} did not answer start{_why(d)}")
    finally:
        posix.close(fd)
    crashpoints.point("start-after-release")
    posix.unlink(fifo)
    record.started = True
    st.save(root, record)
    timer.mark("started")
    timer.flush()


def _why(d: str) -> str:
    try:
        with open(st.join(d, st.INIT_ERROR)) as f:
            return f": {f.read().strip()}"
    except FileNotFoundError:
        return ""


def routed(pid: int) -> bool:
    """Whether the network namespace of process `pid` has an IPv4 default route (from /proc: no netlink)."""
    try:
        with open(f"/proc/{pid}/net/route") as f:
            return any(line.split()[1:2] == ["00000000"] for line in f.readlines()[1:])
    except OSError:
        return False


def state(root: str, container_id: str) -> dict[str, object]:
    record = st.load(root, container_id)
    status = st.status(root, record)
    return {
        "ociVersion": OCI_VERSION,
        "id": record.id,
        "pid": record.pid if status != "stopped" else 0,
        "status": status,
        "bundle": record.bundle,
        "rootfs": st.join(record.bundle, "rootfs"),
        "created": record.created,
        "owner": "",
        "annotations": record.annotations,
    }


def parse_signal(value: str) -> int:
    if value.isdigit():
        return int(value)
    import signal  # the shim passes numbers: a name costs the import

    name = value.upper()
    name = name if name.startswith("SIG") else "SIG" + name
    try:
        return int(signal.Signals[name])
    except KeyError:
        raise UkrunError(f"unknown signal {value!r}") from None


# runc's words: containerd's shim reads "container not running" in a kill's error as "already finished",
# which is how a kubelet's SIGKILL after a graceful stop succeeds.
NOT_RUNNING = "container not running"


def kill(root: str, container_id: str, sig: int, all_processes: bool) -> None:
    record = st.load(root, container_id)
    if not st.alive(record):
        raise UkrunError(f"{NOT_RUNNING}: {container_id} has stopped")
    crashpoints.point("kill-before-signal")
    if all_processes:
        from ukrun import cgroups

        cgroups.kill_all(record.cgroups, sig)
    try:
        posix.kill(record.pid, sig)
    except ProcessLookupError:
        raise UkrunError(f"{NOT_RUNNING}: {container_id} has stopped") from None
    if record.paused and sig == SIGKILL:  # a frozen process dies only once thawed, as with runc
        from ukrun.runtime import control

        control.set_frozen(record, False)
        record.paused = False
        st.save(root, record)


def bare(record: st.ContainerState) -> bool:
    """Whether the container holds nothing but its processes, cgroups and state folder: no view or copy, tap,
    nftables table, block volume or control socket, and it is not frozen. Its delete then needs no
    configuration, containerd or network code (`delete`)."""
    return not (record.acquired or record.tap or record.nat or record.volumes or record.control_socket
                or record.paused)


def deletable(root: "st.Root", record: st.ContainerState, force: bool) -> None:
    if not force and st.alive(record) and st.status(root, record) == "running":
        raise UkrunError(f"container {record.id} is running: stop it first or use delete --force")


def stop(record: st.ContainerState) -> None:
    """Kills the init and whatever else is in the container's cgroups (a create killed before it saved the
    init's PID leaves only those to find), waits until they are gone (10 s at most), and removes the
    cgroups. Idempotent. The kernel removes only an empty cgroup: those it removes at once (the usual case, a
    container whose init has exited) need no listing of their processes."""
    from ukrun import cgroups

    busy = record.cgroups
    if st.alive(record):
        try:  # noqa: SIM105 -- contextlib imports collections and functools: 1 ms of a bare delete
            posix.kill(record.pid, SIGKILL)
        except ProcessLookupError:  # it may end by itself meanwhile
            pass
    else:
        busy = cgroups.remove(busy)
    cgroups.kill_all(busy, SIGKILL)
    deadline = time.monotonic() + 10
    while (st.alive(record) or cgroups.populated(busy)) and time.monotonic() < deadline:
        time.sleep(0.01)
    crashpoints.point("teardown-after-kill")
    cgroups.remove(busy)


def delete(root: str, container_id: str, force: bool) -> bool:
    """Deletes a bare container; False, having done nothing, for any other: the full delete (runtime.verbs),
    which imports what releasing artifacts and networks needs, does it."""
    record = st.load(root, container_id)
    if not bare(record):
        return False
    timer = Timer(record.timing_log, container_id, "delete")
    timer.mark("start")
    deletable(root, record, force)
    stop(record)
    timer.mark("stopped")
    from ukrun.tree import remove_tree

    remove_tree(st.container_dir(root, container_id))
    timer.mark("done")
    timer.flush()
    return True
