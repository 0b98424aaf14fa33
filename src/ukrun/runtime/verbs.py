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
from ukrun.errors import UkrunError
from ukrun.runtime import state as st
from ukrun.timing import Timer

if TYPE_CHECKING:
    from ukrun.artifacts.store import ArtifactStore
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
    """The spec's annotations, else `/urunc.json` in the rootfs, else None: not a unikernel."""
    from ukrun.artifacts import paths
    from ukrun.errors import ImageError
    from ukrun.unikernel import URUNC_JSON, URUNC_JSON_LIMIT, from_annotations, parse_urunc_json

    found = from_annotations(spec_annotations)
    if found is not None:
        return found
    try:
        res = paths.resolve_file(rootfs, URUNC_JSON, "urunc.json")
    except ImageError as exc:
        if "does not exist" in str(exc):
            return None
        raise
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
        raise UkrunError(f"container {container_id} already exists in {ctx.root}")
    d.mkdir(parents=True)
    record = st.ContainerState(id=container_id, bundle=str(bundle), namespace=ctx.containerd_namespace(bundle),
                               annotations=spec.annotations, created=_now(), timing_log=ctx.config.timing_log)
    store: ArtifactStore | None = None
    try:
        store = _store(ctx, record.namespace)
        _create(ctx, spec, uk_config, record, d, store, pid_file, console_socket, timer)
    except BaseException:
        if store is not None:
            store.release(container_id)  # idempotent: nothing to do when nothing was acquired
        from ukrun import cgroups

        cgroups.remove(record.cgroups)
        shutil.rmtree(d, ignore_errors=True)
        raise
    finally:
        timer.flush()


def _create(ctx: Context, spec, uk_config, record: st.ContainerState, d: Path,  # type: ignore[no-untyped-def]
            store: ArtifactStore, pid_file: Path | None, console_socket: str, timer: Timer) -> None:
    from ukrun import kvm
    from ukrun.hypervisors.base import BlockDevice, MonitorSpec, Share
    from ukrun.hypervisors.base import get as get_hypervisor
    from ukrun.runtime import rootfs as rootfsmod
    from ukrun.unikernels.base import ROOT_TAG, GuestProcess
    from ukrun.unikernels.base import get as get_type

    guest = get_type(uk_config.unikernel_type)
    monitor_conf = ctx.config.monitor(uk_config.hypervisor)
    hypervisor = get_hypervisor(uk_config.hypervisor, monitor_conf.path)
    binary = hypervisor.find()
    info = rootfsmod.inspect(spec.rootfs)
    block_root = uk_config.mount_rootfs and info.kind != "dir"
    shared_root = uk_config.mount_rootfs and info.kind == "dir" and guest.shares_root
    if uk_config.mount_rootfs and not (block_root or shared_root):
        log.warning("%s: a %s guest cannot use a folder rootfs (%s); it boots without it", record.id, guest.name,
                    info.fstype or "not a mount")
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
    if block_root or shared_root:
        binds = [(m.destination, m.source) for m in spec.mounts if m.type == "bind" or "bind" in m.options
                 or "rbind" in m.options]
        rootfsmod.write_guest_files(info, binds, guest.rootfs_files(process))
    if shared_root:
        shares = (Share(ROOT_TAG, info.mount_point),)
    if block_root:
        rootfsmod.unmount(info, os.getppid())
        rootfsmod.verify_unmounted(info)
        blocks = (BlockDevice("rootfs", info.handoff_path),)
        timer.mark("rootfs-handoff")
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
    record.pid = _spawn_launcher(d, spec.process.terminal, console_socket)
    record.pid_start = st.process_start(record.pid)
    timer.mark("launcher")
    st.save(ctx.root, record)
    if pid_file is not None:
        tmp = pid_file.with_name(f".{pid_file.name}.tmp")
        tmp.write_text(str(record.pid))
        os.replace(tmp, pid_file)
    timer.mark("done")


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


def _spawn_launcher(d: Path, terminal: bool, console_socket: str) -> int:
    import subprocess

    read_fd, write_fd = os.pipe()
    stdio: int | None = None
    master = slave = -1
    if terminal:
        if not console_socket:
            raise UkrunError("the spec asks for a terminal but the caller gave no --console-socket")
        master, slave = os.openpty()
        _send_console(console_socket, master)
        stdio = slave
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ukrun.launcher", str(d), str(write_fd)],
            pass_fds=(write_fd,), close_fds=True, stdin=stdio, stdout=stdio, stderr=stdio,
        )
    finally:
        os.close(write_fd)
        for fd in (master, slave):
            if fd >= 0:
                os.close(fd)
    with os.fdopen(read_fd) as r:
        line = r.readline().strip()
    if proc.wait() != 0 or not line.isdigit():
        reason = line.removeprefix("error ").strip() or f"the launcher exited with {proc.returncode}"
        raise UkrunError(f"cannot start the container's init: {reason}")
    return int(line)


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
    if st.alive(record):
        if not force and st.status(ctx.root, record) == "running":
            raise UkrunError(f"container {container_id} is running: stop it first or use delete --force")
        os.kill(record.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while st.alive(record) and time.monotonic() < deadline:
            time.sleep(0.01)
    from ukrun import cgroups

    cgroups.remove(record.cgroups)
    # Where create acquired, whoever deletes. Idempotent, and without a record it connects to nothing.
    _store(ctx, record.namespace).release(container_id)
    timer.mark("released")
    shutil.rmtree(st.container_dir(ctx.root, container_id), ignore_errors=True)
    timer.mark("done")
    timer.flush()


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
