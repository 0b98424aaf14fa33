"""A container's record under the runtime root. Imported by every verb: standard library only, and
no dataclasses or typing, which the hot verbs (state, start, kill) would pay for on every call.

The record is marshal's (a dict of FIELDS), not JSON: marshal is built into the interpreter, while the
json module's import (re and enum with it) cost `start` more than its own work. Only ukrun writes and reads
it, as root, in a root-only folder; `ukrun state ID` shows it as JSON. A record an older ukrun wrote as
JSON (LEGACY_FILE) is still read, so that an upgrade leaves running containers manageable.
posix, not os, and no `from __future__`: os brings _collections_abc and posixpath, and __future__ is a module
of its own; together 1.5 ms of each state, start, kill and bare delete, which import little else."""

import marshal
import posix

TYPE_CHECKING = False  # not typing's (see runtime.hot)
if TYPE_CHECKING:
    from os import PathLike

    Root = str | PathLike[str]

STATE_FILE = "ukrun.record"
LEGACY_FILE = "ukrun.json"
FIFO = "exec.fifo"
INIT_ERROR = "init.error"  # why the init could not settle (ukrun.launcher), for `start` to tell
EXEC_FOLDER = "exec"  # the exec ports' sockets and locks (runtime.execplan)
NETWORK_FACTS = "network.facts"  # create's facts, kept when a network may arrive before start (runtime.startnet)
FIELDS = ("id", "bundle", "pid", "pid_start", "created", "started", "namespace", "annotations", "cgroups",
          "timing_log", "creator", "creator_start", "netns", "tap", "nat", "volumes", "control_socket", "guest",
          "exec_ports", "exec_refusal", "memory_mib", "memory_limit", "paused", "acquired")


class ContainerState:
    __slots__ = FIELDS

    def __init__(self, id: str, bundle: str, pid: int = 0, pid_start: str = "", created: str = "",
                 started: bool = False, namespace: str = "", annotations: dict[str, str] | None = None,
                 cgroups: list[str] | None = None, timing_log: str = "", creator: int = 0,
                 creator_start: str = "", netns: str = "", tap: str = "", nat: str = "",
                 volumes: list[list[str]] | None = None, control_socket: str = "", guest: str = "",
                 exec_ports: int = 0, exec_refusal: str = "", memory_mib: int = 0, memory_limit: int = 0,
                 paused: bool = False, acquired: bool = True) -> None:
        self.id, self.bundle, self.pid, self.pid_start, self.created = id, bundle, pid, pid_start, created
        self.started, self.namespace, self.annotations = started, namespace, annotations or {}
        self.cgroups, self.timing_log = cgroups or [], timing_log
        # The `create` process that wrote the record, while it runs: a record whose creator is gone and
        # whose init is not alive is what a crashed create left (see runtime.verbs.create).
        self.creator, self.creator_start = creator, creator_start
        self.netns, self.tap = netns, tap  # the tap this container's create made (or was about to) in netns
        self.nat = nat  # and its nftables table there, in the static and ports network modes
        # [device, host mount point] of each block volume create unmounted (or was about to) for the VM;
        # nothing remounts them: whoever mounted them (the orchestrator) does
        self.volumes = volumes or []
        self.control_socket = control_socket  # the monitor's, in the operator's folder: removed at delete
        self.guest = guest  # the guest type
        # exec: how many sessions the guest serves at once (runtime.execplan), or why it cannot
        self.exec_ports, self.exec_refusal = exec_ports, exec_refusal
        self.memory_mib, self.memory_limit = memory_mib, memory_limit  # the guest's, and the spec's (bytes)
        self.paused = paused  # frozen by `pause` (runtime.control)
        # Whether create may have acquired a view or a copy, which delete releases: true until create reads the
        # rootfs in place, and in a record an older ukrun wrote (see runtime.hot.bare)
        self.acquired = acquired

    def to_dict(self) -> dict[str, object]:
        return {f: getattr(self, f) for f in FIELDS}


def join(folder: str, name: str) -> str:
    """os.path.join(folder, name) for a name that is not absolute."""
    return folder + name if not folder or folder.endswith("/") else f"{folder}/{name}"


def exists(path: str) -> bool:
    """os.path.exists(path)."""
    try:
        posix.stat(path)
    except (OSError, ValueError):
        return False
    return True


def container_dir(root: "Root", container_id: str) -> str:
    from ukrun.errors import UkrunError

    if not container_id or "/" in container_id or container_id in (".", ".."):
        raise UkrunError(f"invalid container ID {container_id!r}")
    return join(posix.fspath(root), container_id)


def is_ours(root: "Root", container_id: str) -> bool:
    d = container_dir(root, container_id)
    return exists(join(d, STATE_FILE)) or exists(join(d, LEGACY_FILE))


def load(root: "Root", container_id: str) -> ContainerState:
    d = container_dir(root, container_id)
    path = join(d, STATE_FILE)
    if not exists(path) and exists(join(d, LEGACY_FILE)):
        import json

        with open(join(d, LEGACY_FILE)) as f:
            return ContainerState(**json.load(f))
    try:
        with open(path, "rb") as f:
            return ContainerState(**marshal.load(f))
    except FileNotFoundError:
        from ukrun.errors import UkrunError

        raise UkrunError(f"container {container_id} does not exist") from None


def save(root: "Root", st: ContainerState) -> None:
    d = container_dir(root, st.id)
    tmp = join(d, f".{STATE_FILE}.tmp")
    with open(tmp, "wb") as f:
        marshal.dump(st.to_dict(), f)
    posix.replace(tmp, join(d, STATE_FILE))
    legacy = join(d, LEGACY_FILE)
    if exists(legacy):  # an older ukrun's record, superseded now
        posix.unlink(legacy)


def process_start(pid: int) -> str:
    """The process's start time in clock ticks, to tell it from a later process with the same PID."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return ""
    fields = stat.rsplit(")", 1)[1].split()
    return "" if fields[0] == "Z" else fields[19]


def alive(st: ContainerState) -> bool:
    """Whether the init runs: a PID whose start time was never seen (it died first) is never alive."""
    return st.pid > 0 and st.pid_start != "" and process_start(st.pid) == st.pid_start


def creating(st: ContainerState) -> bool:
    """Whether the `create` that wrote this record still runs."""
    return st.creator > 0 and process_start(st.creator) == st.creator_start


def status(root: "Root", st: ContainerState) -> str:
    if not alive(st):
        return "stopped"
    if not st.started and exists(join(container_dir(root, st.id), FIFO)):
        return "created"
    return "paused" if st.paused else "running"
