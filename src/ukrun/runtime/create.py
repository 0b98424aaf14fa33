"""`create`: gather the facts, acquire the artifacts, plan (runtime.plan, pure), then apply the plan.

What must stay true: the container's record is saved before anything else, so that `delete` and `gc`
find whatever a crash at any later step leaves (`teardown` reclaims it, idempotently); the rootfs is
handed to a VM only as the plan's handoff rule decided, and only once it is unmounted everywhere; the
container's init runs on only after its PID is saved (ukrun.launcher's commit pipe).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from ukrun import config as configmod
from ukrun import crashpoints
from ukrun.errors import UkrunError
from ukrun.runtime import startnet, verbs
from ukrun.runtime import state as st
from ukrun.runtime.zygote import Zygote
from ukrun.timing import Timer

TYPE_CHECKING = False  # not typing's, whose import costs a create without a helper about 2 ms
if TYPE_CHECKING:
    from ukrun.artifacts.source import Artifacts, Decision
    from ukrun.artifacts.store import ArtifactStore
    from ukrun.containerd.client import Client
    from ukrun.launchconfig import Namespace
    from ukrun.runtime.plan import ArtifactPaths, Facts, JoinedInitrd, LaunchPlan
    from ukrun.runtime.spec import Spec
    from ukrun.unikernel import UnikernelConfig

MONITOR_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root"}


def create(ctx: verbs.Context, container_id: str, bundle: Path, pid_file: Path | None, console_socket: str,
           zygote: Zygote | None = None) -> None:
    """`zygote`: the init-to-be, when the shim's child forked it (ukrun.relay); else it is forked here."""
    from ukrun.runtime import spec as specmod

    timer = ctx.timer(container_id, "create")
    timer.mark("start")
    spec = specmod.load(bundle)
    uk_config = verbs.unikernel_config(spec.annotations, spec.rootfs)
    if uk_config is None and not ctx.config.image_config:
        timer.flush()
        verbs.exec_runc(ctx)
    d = Path(st.container_dir(ctx.root, container_id))
    zygote = zygote or Zygote(d)  # the container's init-to-be, forked before anything heavy (gRPC) is loaded
    store = _Store(ctx, ctx.containerd_namespace(bundle)) if ctx.containerd_named() else None
    if uk_config is None and store is None:
        zygote.close()
        timer.flush()
        verbs.exec_runc(ctx)  # no containerd to ask for the image's configuration
    if uk_config is None:
        assert store is not None
        from ukrun.runtime.facts import image_config

        uk_config = image_config(spec, store.client, container_id)
        if uk_config is None:
            zygote.close()
            timer.flush()
            verbs.exec_runc(ctx)
    zygote.prepare(_namespaces(spec))
    timer.mark("spec")
    try:
        if d.exists():
            verbs.reclaim_leftover(ctx, container_id)
        d.mkdir(parents=True)
    except BaseException:
        zygote.close()
        raise
    me = os.getpid()
    record = st.ContainerState(id=container_id, bundle=str(bundle), namespace=store.namespace if store else "",
                               annotations=dict(spec.annotations), created=_now(), timing_log=ctx.config.timing_log,
                               creator=me, creator_start=st.process_start(me))
    try:
        st.save(ctx.root, record)  # from here on, `delete` and `gc` find whatever this create makes
        from ukrun.runtime.plan import plan

        facts, art = _gather(ctx, spec, uk_config, record, d, store, timer)
        launch_plan = plan(facts)
        late = startnet.deferred(tuple((n.type, n.path) for n in spec.namespaces))
        if late:
            startnet.keep(d, facts)
        timer.mark("plan")
        _apply(ctx, launch_plan, facts, spec, record, d, art, zygote, pid_file, console_socket, timer, late)
    except BaseException:
        zygote.close()
        verbs.teardown(ctx, record)
        raise
    finally:
        timer.flush()


class _Store:
    """The artifact store, made (and its modules and containerd's client imported) only when asked for: a
    container whose artifacts are read in place asks containerd nothing but what its facts need."""

    def __init__(self, ctx: verbs.Context, namespace: str) -> None:
        self.ctx, self.namespace = ctx, namespace
        self._client: Client | None = None
        self._store: ArtifactStore | None = None

    def client(self) -> Client:
        if self._client is None:
            from ukrun.containerd import connector

            self._client = connector(self.ctx.containerd_address(), self.namespace, self.ctx.config.timeout)()
        return self._client

    def get(self) -> ArtifactStore:
        if self._store is None:
            self._store = verbs.store(self.ctx, self.namespace, self.client)
        return self._store


def _gather(ctx: verbs.Context, spec: Spec, uk_config: UnikernelConfig, record: st.ContainerState, d: Path,
            store: _Store | None, timer: Timer) -> tuple[Facts, Artifacts]:
    from ukrun.artifacts import source
    from ukrun.runtime import facts as gather

    mode, kept = _mode(ctx, spec), not uk_config.mount_rootfs
    found = gather.host(ctx.config, spec, uk_config, record.id, store.client if store else None, ctx.artifacts_root,
                        want_record=not source.kept_in_place(mode, kept))
    timer.mark("checks")
    decision = source.decide(mode, store is not None, found.container, rootfs_kept=kept)
    if decision.source is source.Source.IN_PLACE:
        art = source.in_place(record.id, record.namespace, uk_config, spec.rootfs, decision.reason)
        record.acquired = False  # saved with the monitor's facts; a crash before then leaves True: released
    else:
        assert store is not None
        art = store.get().acquire(record.id, mode=mode, config=uk_config, rootfs=spec.rootfs,
                                  record=found.container)
    timer.mark("artifacts")
    paths = _paths(art, decision, gather.own_block(spec, uk_config))
    return gather.facts(found, spec, uk_config, record.id, str(d), paths, record.namespace), art


def _mode(ctx: verbs.Context, spec: Spec) -> str:
    mode = spec.annotations.get(verbs.MODE_ANNOTATION, ctx.config.artifact_mode)
    if mode not in configmod.MODES:
        raise UkrunError(f"annotation {verbs.MODE_ANNOTATION}={mode!r} is not one of {', '.join(configmod.MODES)}")
    return mode


def _paths(art: Artifacts, decision: Decision, own_block: str) -> ArtifactPaths:
    from ukrun.runtime.plan import ArtifactPaths

    return ArtifactPaths(str(art.kernel), str(art.initrd or ""), str(art.block or ""), own_block, decision.source,
                         decision.reason)


def plan_bundle(ctx: verbs.Context, bundle: Path, container_id: str) -> LaunchPlan:
    """The plan `create` would make for a bundle, with no effect: no view, no unmount, no monitor. The
    artifacts are resolved in place in the bundle's rootfs; the plan says where create reads them from
    (artifacts.source), with the reason."""
    from ukrun.artifacts import source
    from ukrun.containerd import connector
    from ukrun.errors import ContainerdUnavailable
    from ukrun.runtime import facts as gather
    from ukrun.runtime import spec as specmod
    from ukrun.runtime.plan import plan

    spec = specmod.load(bundle)
    uk_config = verbs.unikernel_config(spec.annotations, spec.rootfs)
    if uk_config is None:
        raise UkrunError(f"{bundle} is not a unikernel (no com.urunc.unikernel.* annotations, no /urunc.json): "
                         "ukrun would hand it to runc")
    try:
        client = connector(ctx.containerd_address(), ctx.containerd_namespace(bundle), ctx.config.timeout)()
    except ContainerdUnavailable:
        client = None
    found = gather.host(ctx.config, spec, uk_config, container_id, (lambda: client) if client else None,
                        ctx.artifacts_root)
    decision = source.decide(_mode(ctx, spec), client is not None, found.container,
                             rootfs_kept=not uk_config.mount_rootfs)
    art = source.in_place(container_id, "", uk_config, spec.rootfs, decision.reason)
    state_dir = st.container_dir(ctx.root, container_id)
    return plan(gather.facts(found, spec, uk_config, container_id, state_dir,
                             _paths(art, decision, gather.own_block(spec, uk_config)),
                             ctx.containerd_namespace(bundle)))


def _apply(ctx: verbs.Context, plan: LaunchPlan, facts: Facts, spec: Spec, record: st.ContainerState, d: Path,
           art: Artifacts, zygote: Zygote, pid_file: Path | None, console_socket: str, timer: Timer,
           late_network: bool) -> None:
    from ukrun.launchconfig import LaunchConfig
    from ukrun.runtime import rootfs as rootfsmod
    from ukrun.runtime.plan import FilesTarget
    from ukrun.unikernels.base import RootMode

    info = facts.rootfs
    if plan.network is not None:
        record.netns, record.tap = plan.netns, plan.network.tap
        record.nat = plan.link.table if plan.link else ""
        st.save(ctx.root, record)  # before the tap exists: a crash from here on leaves a record of it
        connect(plan)
        timer.mark("network")
    if plan.files_target is FilesTarget.ROOTFS:
        rootfsmod.write_guest_files(Path(info.mount_point), dict(plan.guest_files))
    elif plan.files_target is FilesTarget.SHARE:
        rootfsmod.write_guest_files(Path(plan.files_dir), dict(plan.guest_files))
    if plan.root is RootMode.BLOCK:
        rootfsmod.unmount(info, ctx.shim_pid())
        rootfsmod.verify_unmounted(info)
        timer.mark("rootfs-handoff")
    if plan.volumes:
        _hand_over_volumes(ctx, plan, record)
        timer.mark("volumes")
    if plan.joined_initrd is not None:
        _join_initrd(plan.joined_initrd, art)
    if plan.control_socket:
        record.control_socket = plan.control_socket
        st.save(ctx.root, record)  # delete removes it, whatever step a crash stopped at
        _free_control_socket(plan.control_socket)
    for path, data in plan.files:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    if plan.exec.folder:
        os.mkdir(plan.exec.folder, 0o700)  # the exec sockets: root's alone (runtime.execplan)
    record.cgroups = _make_cgroups(spec.cgroups_path, ctx.systemd_cgroup)
    record.guest, record.exec_ports, record.exec_refusal = plan.guest, len(plan.exec.ports), plan.exec.refusal
    record.memory_mib, record.memory_limit = plan.memory_mib, facts.resources.memory_limit
    st.save(ctx.root, record)
    timer.mark("monitor")
    os.mkfifo(d / st.FIFO, 0o600)
    vfsd = plan.virtiofsd
    LaunchConfig(
        id=record.id, monitor=plan.argv, env=MONITOR_ENV, cgroups=tuple(record.cgroups),
        namespaces=_namespaces(spec), hostname=spec.hostname,
        terminal=spec.process.terminal, exit_decoding=plan.exit_decoding.value, timing_log=record.timing_log,
        views=str(ctx.artifacts_root / "views"),
        keep_mounts=tuple(str(p) for p in (art.mount_point, *(s.path for s in plan.shares), vfsd and vfsd.shared_dir,
                                            _own_rootfs(plan, info.mount_point)) if p),
        virtiofsd=vfsd.argv if vfsd else (), virtiofsd_socket=vfsd.socket if vfsd else "",
        virtiofsd_log=vfsd.log if vfsd else "", late_network=late_network,
    ).write(d)
    record.pid = zygote.start(spec.process.terminal, console_socket)
    record.pid_start = st.process_start(record.pid)
    if not record.pid_start:
        raise UkrunError("the container's init exited before create could record it")
    timer.mark("launcher")
    crashpoints.point("create-before-save")
    st.save(ctx.root, record)
    zygote.commit()  # the init runs on only once its PID is saved (see ukrun.launcher)
    if pid_file is not None:
        tmp = pid_file.with_name(f".{pid_file.name}.tmp")
        tmp.write_text(str(record.pid))
        os.replace(tmp, pid_file)
    timer.mark("done")


def _namespaces(spec: Spec) -> tuple[Namespace, ...]:
    from ukrun.launchconfig import Namespace

    return tuple(Namespace(n.type, n.path) for n in spec.namespaces)


def _hand_over_volumes(ctx: verbs.Context, plan: LaunchPlan, record: st.ContainerState) -> None:
    """Every block volume checked to have no other user before any is unmounted; each recorded before its
    unmount, and its record dropped again when it was refused and left (or mounted again) as it was."""
    from ukrun.errors import VolumeBusy
    from ukrun.runtime import volumes

    owner = ctx.shim_pid()  # the shim, in whose mount namespace the spec's mounts are
    found = [volumes.alone(v.device, v.source, owner) for v in plan.volumes]
    for v, entry in zip(plan.volumes, found, strict=True):
        record.volumes.append([v.device, v.source])
        st.save(ctx.root, record)  # before the unmount: a crash from here on leaves a record of it
        try:
            volumes.hand_over(entry, v.device, owner)
        except VolumeBusy:
            record.volumes.pop()
            st.save(ctx.root, record)
            raise


def _own_rootfs(plan: LaunchPlan, rootfs: str) -> str:
    """The container's rootfs, when a block device the monitor opens is a file in it (the image's block)."""
    return rootfs if any(b.path.startswith(rootfs.rstrip("/") + "/") for b in plan.blocks) else ""


def _free_control_socket(path: str) -> None:
    """The monitor binds the socket: a leftover one (the name is this container's) goes; anything else there
    is the operator's, and stays."""
    import stat

    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        raise UkrunError(f"the folder {folder} of the monitor's control sockets ([monitors.*] socket_path) does not "
                         "exist: create it")
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise UkrunError(f"{path}, the monitor's control socket, is taken by something that is not a socket: remove "
                         "it, or set another [monitors.*] socket_path")
    os.unlink(path)


def _join_initrd(joined: JoinedInitrd, art: Artifacts) -> None:
    """The image's initrd, zero-padded to 4 bytes (where the kernel looks for the next archive), then the
    archive of the spec's files. The image's initrd is read through the root it was found in (a view, or
    the rootfs read in place; artifacts.paths), or from ukrun's own copy of it."""
    from ukrun.artifacts import paths

    if art.mount_point is not None:
        root = paths.open_root(art.mount_point)
        try:
            image = paths.open_file(root, art.config.initrd, "initrd")
        finally:
            os.close(root)
    else:
        image = os.open(joined.image, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(image, "rb") as source:
        fd = os.open(joined.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as out:
            while chunk := source.read(1 << 20):
                out.write(chunk)
            out.write(b"\0" * (-out.tell() % 4) + joined.appended)


def connect(plan: LaunchPlan) -> None:
    """The container's tap, and either the redirection between it and the container's interface (dynamic)
    or the private link and its NAT rules (static, ports): network.connect."""
    from ukrun.network import connect as network

    assert plan.network is not None
    network.connect(plan.container_id, plan.netns, plan.interface, plan.network, plan.link)


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


def _now() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e9):09d}Z"
