"""One function per OCI verb. The only place that composes artifacts, rootfs, guest type and monitor.

`state`, `start` and `kill` run for every container, often: they import nothing beyond the standard
library and `runtime.state`. `create` and `delete` talk to containerd and import its client on demand.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from ukrun import config as configmod
from ukrun import crashpoints
from ukrun.errors import UkrunError
from ukrun.runtime import state as st
from ukrun.timing import Timer

if TYPE_CHECKING:
    from ukrun.artifacts.store import ArtifactStore
    from ukrun.runtime.handoff import RootDecision, RootfsInfo
    from ukrun.unikernel import UnikernelConfig

log = logging.getLogger("ukrun")
MODE_ANNOTATION = "io.ukrun.artifacts.mode"  # per container: shared, per-container or copy
MONITOR_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root"}


@dataclass
class Context:
    root: Path
    config: configmod.Config
    argv: list[str]  # our own arguments, to hand a container that is not a unikernel to runc
    address: str = ""
    namespace: str = ""
    systemd_cgroup: bool = False
    state_root: Path | None = None  # artifact views; default [artifacts] state_root

    @property
    def artifacts_root(self) -> Path:
        return self.state_root or self.config.state_root

    def containerd_address(self) -> str:
        # The shim exports the address of the containerd that runs this container: the surest source.
        return self.address or os.environ.get("GRPC_ADDRESS") or self.config.address

    def containerd_namespace(self, bundle: Path | None = None) -> str:
        """--namespace, else the shim's NAMESPACE, else the bundle's place in containerd's layout
        (<state>/io.containerd.runtime.v2.task/<namespace>/<id>), else --root's last component
        (/run/containerd/runc/<namespace>), else the config."""
        if self.namespace or os.environ.get("NAMESPACE"):
            return self.namespace or os.environ["NAMESPACE"]
        if bundle is not None and bundle.parent.parent.name.startswith("io.containerd.runtime"):
            return bundle.parent.name
        return self.root.name or self.config.namespace

    def timer(self, container: str, verb: str) -> Timer:
        return Timer(self.config.timing_log, container, verb)


def exec_runc(ctx: Context) -> NoReturn:
    """Hands the whole invocation to runc: for containers that are not unikernels."""
    me = os.path.realpath(sys.argv[0]) if sys.argv else ""
    runc = ctx.config.runc or next(
        (p for d in os.environ.get("PATH", "").split(":") if (p := os.path.join(d, "runc"))
         and os.access(p, os.X_OK) and os.path.realpath(p) != me),
        "",
    )
    if not runc:
        raise UkrunError("this container is not a unikernel and no runc was found: install runc or set [runtime] runc")
    os.execv(runc, [runc, *ctx.argv])


def _store(ctx: Context, namespace: str) -> ArtifactStore:
    from ukrun.artifacts.store import ArtifactStore
    from ukrun.containerd import connector

    connect = connector(ctx.containerd_address(), namespace, ctx.config.timeout)
    return ArtifactStore(ctx.artifacts_root, namespace, connect)


# -- create -------------------------------------------------------------------------------------------
def unikernel_config(spec_annotations: dict[str, str], rootfs: Path) -> UnikernelConfig | None:
    """The spec's annotations, else `/urunc.json` in the rootfs, else None: not a unikernel.

    An image that carries a `/urunc.json` is a unikernel image whatever that entry is: one ukrun cannot
    use (a link out of the image, a folder, bad content) is refused with the reason, never handed to runc.
    """
    from ukrun.artifacts import paths
    from ukrun.unikernel import URUNC_JSON, URUNC_JSON_LIMIT, from_annotations, parse_urunc_json

    found = from_annotations(spec_annotations)
    if found is not None:
        return found
    if not os.path.lexists(rootfs / URUNC_JSON.lstrip("/")):
        return None
    res = paths.resolve_file(rootfs, URUNC_JSON, "urunc.json")
    return parse_urunc_json(paths.read_limited(res.path, URUNC_JSON_LIMIT, "urunc.json"))


def create(ctx: Context, container_id: str, bundle: Path, pid_file: Path | None, console_socket: str) -> None:
    from ukrun.runtime import spec as specmod

    timer = ctx.timer(container_id, "create")
    timer.mark("start")
    spec = specmod.load(bundle)
    uk_config = unikernel_config(spec.annotations, spec.rootfs)
    if uk_config is None:
        timer.flush()
        exec_runc(ctx)
    timer.mark("spec")
    d = Path(st.container_dir(ctx.root, container_id))
    if d.exists():
        _reclaim_leftover(ctx, container_id)
    d.mkdir(parents=True)
    me = os.getpid()
    record = st.ContainerState(id=container_id, bundle=str(bundle), namespace=ctx.containerd_namespace(bundle),
                               annotations=spec.annotations, created=_now(), timing_log=ctx.config.timing_log,
                               creator=me, creator_start=st.process_start(me))
    st.save(ctx.root, record)  # from here on, `delete` and `gc` find whatever this create makes
    try:
        _create(ctx, spec, uk_config, record, d, _store(ctx, record.namespace), pid_file, console_socket, timer)
    except BaseException:
        teardown(ctx, record)
        raise
    finally:
        timer.flush()


def _reclaim_leftover(ctx: Context, container_id: str) -> None:
    """A state folder for this ID: a create that crashed before its delete ran is reclaimed; anything
    alive, or not ours, is an error."""
    if not st.is_ours(ctx.root, container_id):
        raise UkrunError(f"container {container_id} already exists in {ctx.root}")
    old = st.load(ctx.root, container_id)
    if st.alive(old) or st.creating(old) or old.started:
        raise UkrunError(f"container {container_id} already exists in {ctx.root}: delete it first")
    log.warning("%s: reclaiming what an earlier create of this ID left", container_id)
    teardown(ctx, old)


def _create(ctx: Context, spec, uk_config, record: st.ContainerState, d: Path,  # type: ignore[no-untyped-def]
            store: ArtifactStore, pid_file: Path | None, console_socket: str, timer: Timer) -> None:
    from ukrun import kvm
    from ukrun.hypervisors.base import BlockDevice, MonitorSpec, Share
    from ukrun.hypervisors.base import get as get_hypervisor
    from ukrun.runtime import rootfs as rootfsmod
    from ukrun.runtime.handoff import Handoff
    from ukrun.unikernels.base import FILES_TAG, ROOT_TAG, GuestProcess
    from ukrun.unikernels.base import get as get_type

    guest = get_type(uk_config.unikernel_type)
    monitor_conf = ctx.config.monitor(uk_config.hypervisor)
    hypervisor = get_hypervisor(uk_config.hypervisor, monitor_conf.path)
    binary = hypervisor.find()
    info = rootfsmod.inspect(spec.rootfs)
    decision = _root_decision(store, record.id, info) if uk_config.mount_rootfs else None
    block_root = decision is not None and decision.handoff is Handoff.BLOCK
    shared_root = decision is not None and decision.handoff is Handoff.FOLDER
    if shared_root and not guest.shares_root:
        assert decision is not None
        raise UkrunError(f"a {guest.name} guest boots only from a block rootfs, and this rootfs is not handed to "
                         f"a VM as a device: {decision.rule}; use a block snapshotter (devmapper, blockfile)")
    if block_root:
        if info.fstype not in guest.block_fs_types:
            raise UkrunError(f"a {guest.name} guest cannot boot from a {info.fstype} rootfs; "
                             f"it reads {', '.join(guest.block_fs_types)} (set the snapshotter's fs_type)")
        elsewhere = rootfsmod.other_mounts(info)
        if elsewhere:
            raise UkrunError(f"the rootfs device {info.source} is also mounted at {', '.join(elsewhere)}; "
                             "unmount it there first: a VM must be the device's only user")
    timer.mark("checks")
    mode = spec.annotations.get(MODE_ANNOTATION, ctx.config.artifact_mode)
    if mode not in configmod.MODES:
        raise UkrunError(f"annotation {MODE_ANNOTATION}={mode!r} is not one of {', '.join(configmod.MODES)}")
    art = store.acquire(record.id, mode=mode, spec_annotations=spec.annotations, rootfs=spec.rootfs)
    timer.mark("artifacts")
    process = GuestProcess(spec.process.args, spec.process.env, spec.process.cwd)
    blocks: tuple[BlockDevice, ...] = ()
    shares: tuple[Share, ...] = ()
    if block_root:
        assert decision is not None
        binds = [(m.destination, m.source) for m in spec.mounts if m.type == "bind" or "bind" in m.options
                 or "rbind" in m.options]
        rootfsmod.write_guest_files(Path(info.mount_point), binds, guest.rootfs_files(process))
        rootfsmod.unmount(info, os.getppid())
        rootfsmod.verify_unmounted(info)
        blocks = (BlockDevice("rootfs", decision.device),)
        timer.mark("rootfs-handoff")
    if shared_root:
        # The folder may be the host's: ukrun writes nothing into it. The guest's files come on a share
        # of their own, read-only, from the container's state folder.
        rootfsmod.write_guest_files(d / "guest", [], guest.rootfs_files(process))
        shares = (Share(ROOT_TAG, info.mount_point), Share(FILES_TAG, str(d / "guest"), read_only=True))
    accel = monitor_conf.accel
    if accel == "auto":
        probe = hypervisor.kvm_probe_args()
        accel = "kvm" if probe is not None and kvm.kvm_works(binary, probe, ctx.artifacts_root) else "tcg"
    memory = spec.memory_limit // (1 << 20) if spec.memory_limit else monitor_conf.memory_mb
    vcpus = -(-spec.cpu_quota // spec.cpu_period) if spec.cpu_quota > 0 and spec.cpu_period > 0 else monitor_conf.vcpus
    root = "block" if block_root else "9p" if shared_root else ""
    mspec = MonitorSpec(
        kernel=str(art.kernel), initrd=str(art.initrd or ""), cmdline=guest.cmdline(uk_config, process, root),
        memory_mib=memory, vcpus=max(1, vcpus), blocks=blocks, shares=shares, accel=accel,
        exit_device=guest.reports_exit_code and bool(hypervisor.exit_code_map),
    )
    record.cgroups = _make_cgroups(spec.cgroups_path, ctx.systemd_cgroup)
    st.save(ctx.root, record)
    timer.mark("monitor")
    os.mkfifo(d / st.FIFO, 0o600)
    launch = {
        "monitor": hypervisor.argv(mspec, binary), "env": MONITOR_ENV, "cgroups": record.cgroups,
        "namespaces": [{"type": n.type, "path": n.path} for n in spec.namespaces],
        "hostname": spec.hostname, "terminal": spec.process.terminal,
        "exit_code_map": hypervisor.exit_code_map if mspec.exit_device else "",
        "timing_log": record.timing_log, "id": record.id,
        "views": str(ctx.artifacts_root / "views"),  # a new mount namespace keeps only this container's view
        "keep_mounts": [str(p) for p in (art.mount_point, *(s.path for s in shares)) if p],
    }
    (d / "launch.json").write_text(json.dumps(launch))
    record.pid, commit_fd = _spawn_launcher(d, spec.process.terminal, console_socket)
    try:
        record.pid_start = st.process_start(record.pid)
        timer.mark("launcher")
        crashpoints.point("before-save")
        st.save(ctx.root, record)
        os.write(commit_fd, b"1")  # the init runs on only once its PID is saved (see ukrun.launcher)
    finally:
        os.close(commit_fd)
    if pid_file is not None:
        tmp = pid_file.with_name(f".{pid_file.name}.tmp")
        tmp.write_text(str(record.pid))
        os.replace(tmp, pid_file)
    timer.mark("done")


def _root_decision(store: ArtifactStore, container_id: str, info: RootfsInfo) -> RootDecision:
    """Whether the rootfs goes to the VM as a device, proven against what containerd says the container's
    snapshot mounts are (see runtime.handoff)."""
    from ukrun.errors import ContainerdUnavailable
    from ukrun.runtime import handoff
    from ukrun.runtime.rootfs import snapshot_facts

    snapshot = None
    if info.kind is not handoff.RootfsKind.DIR:
        try:
            c = store.client.get_container(container_id)
            if c.snapshotter and c.snapshot_key:
                snapshot = snapshot_facts(store.client.mounts(c.snapshotter, c.snapshot_key))
        except ContainerdUnavailable as exc:
            log.warning("%s: containerd unreachable, the rootfs is treated as a folder: %s", container_id, exc)
    decision = handoff.decide(info, snapshot)
    log.info("%s: rootfs %s: %s", container_id, decision.handoff.value, decision.rule)
    return decision


def _make_cgroups(cgroups_path: str, systemd: bool) -> list[str]:
    from ukrun import cgroups

    if not cgroups_path:
        return []
    rel = cgroups.relative_path(cgroups_path, systemd).lstrip("/")
    made = []
    for base in cgroups.hierarchies():
        target = base / rel
        try:
            target.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        made.append(str(target))
    return made


def _spawn_launcher(d: Path, terminal: bool, console_socket: str) -> tuple[int, int]:
    """Starts the container's init; returns its PID and the pipe on which `create` commits it."""
    import subprocess

    read_fd, write_fd = os.pipe()
    commit_read, commit_write = os.pipe()
    os.set_inheritable(commit_write, False)
    stdio: int | None = None
    master = slave = -1
    try:
        if terminal:
            if not console_socket:
                raise UkrunError("the spec asks for a terminal but the caller gave no --console-socket")
            master, slave = os.openpty()
            _send_console(console_socket, master)
            stdio = slave
        proc = subprocess.Popen(
            [sys.executable, "-m", "ukrun.launcher", str(d), str(write_fd), str(commit_read)],
            pass_fds=(write_fd, commit_read), close_fds=True, stdin=stdio, stdout=stdio, stderr=stdio,
        )
    except BaseException:
        os.close(commit_write)
        raise
    finally:
        for fd in (write_fd, commit_read, master, slave):
            if fd >= 0:
                os.close(fd)
    with os.fdopen(read_fd) as r:
        line = r.readline().strip()
    if proc.wait() != 0 or not line.isdigit():
        os.close(commit_write)
        reason = line.removeprefix("error ").strip() or f"the launcher exited with {proc.returncode}"
        raise UkrunError(f"cannot start the container's init: {reason}")
    return int(line), commit_write


def _send_console(path: str, fd: int) -> None:
    import array
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(path)
        name = os.ttyname(fd).encode() if os.isatty(fd) else b"/dev/ptmx"
        s.sendmsg([name], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))])


def _now() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e9):09d}Z"


# -- delete -----------------------------------------------------------------------------------------------
def delete(ctx: Context, container_id: str, force: bool) -> None:
    timer = ctx.timer(container_id, "delete")
    timer.mark("start")
    record = st.load(ctx.root, container_id)
    if not force and st.alive(record) and st.status(ctx.root, record) == "running":
        raise UkrunError(f"container {container_id} is running: stop it first or use delete --force")
    teardown(ctx, record)
    timer.mark("done")
    timer.flush()


def teardown(ctx: Context, record: st.ContainerState) -> None:
    """Removes everything a create made, whatever step it reached: the init and anything else in the
    container's cgroups (a create killed before it saved the init's PID leaves only those to find), the
    cgroups, the artifacts and the state folder. Idempotent."""
    from ukrun import cgroups

    if st.alive(record):
        os.kill(record.pid, signal.SIGKILL)
    cgroups.kill_all(record.cgroups, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while (st.alive(record) or cgroups.populated(record.cgroups)) and time.monotonic() < deadline:
        time.sleep(0.01)
    cgroups.remove(record.cgroups)
    # Where create acquired, whoever deletes. Idempotent, and without a record it connects to nothing.
    _store(ctx, record.namespace).release(record.id)
    shutil.rmtree(st.container_dir(ctx.root, record.id), ignore_errors=True)


def gc(ctx: Context, dry_run: bool) -> list[str]:
    """Reclaims what creates that crashed left under the runtime root: a container never started, whose
    create and init are both gone."""
    actions = []
    for name in sorted(os.listdir(ctx.root)) if ctx.root.is_dir() else []:
        if not st.is_ours(ctx.root, name):
            continue
        record = st.load(ctx.root, name)
        if record.started or st.alive(record) or st.creating(record):
            continue
        actions.append(f"remove container {name} (its create did not finish) from {ctx.root}")
        if not dry_run:
            teardown(ctx, record)
    return actions


def features() -> dict[str, object]:
    return {
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.1.0",
        "hooks": [],
        "mountOptions": [],
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "uts"],
            "capabilities": [],
            "cgroup": {"v1": True, "v2": True, "systemd": False},
        },
        "annotations": {"io.ukrun.unikernels": "com.urunc.unikernel.*"},
    }
