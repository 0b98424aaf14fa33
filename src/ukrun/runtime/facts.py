"""Gathering the facts that `runtime.plan` decides from: the host, the spec, containerd and the monitor
are asked here, and only here, so that the plan itself reads nothing. `create` and `ukrun plan` gather
the same facts; only `create` then acquires the artifacts and applies the plan."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from ukrun import config as configmod
from ukrun import host as hostmod
from ukrun.artifacts import paths
from ukrun.containerd.records import ContainerRecord, SnapshotKind
from ukrun.errors import ContainerdError, ContainerdUnavailable, ImageError, NotFound, SnapshotterNotLoaded
from ukrun.logs import log
from ukrun.network.base import Interface, NetnsFacts, UkrunLink
from ukrun.network.ports import needs_image
from ukrun.runtime import bindsources as bs
from ukrun.runtime import mountplan as mp
from ukrun.runtime import rootfs as rootfsmod
from ukrun.runtime.handoff import RootfsInfo, RootfsKind, SnapshotMount
from ukrun.runtime.plan import ArtifactPaths, Facts, MonitorFacts, Resources
from ukrun.runtime.shareplan import VirtiofsdFacts
from ukrun.runtime.spec import Spec
from ukrun.tuples import NamedTuple
from ukrun.unikernel import UnikernelConfig
from ukrun.unikernels.base import GuestProcess

TYPE_CHECKING = False  # not typing's, whose import costs a create without a helper about 2 ms
if TYPE_CHECKING:
    from ukrun.containerd.client import Client
    from ukrun.unikernels.solo5_manifest import Manifest, ManifestError


class HostFacts(NamedTuple):
    """What the host and containerd say, before the artifacts are acquired."""

    monitor: MonitorFacts
    rootfs: RootfsInfo
    container: ContainerRecord | None
    snapshot: tuple[SnapshotMount, ...] | None
    elsewhere: tuple[str, ...]
    netns: str
    interface: Interface | None
    links: tuple[UkrunLink, ...]
    taken: tuple[str, ...]
    netns_owner: str = ""  # see namespace_owner
    rootfs_share: str = "auto"
    virtiofsd: VirtiofsdFacts = VirtiofsdFacts()
    mounts: tuple[mp.BoundMount, ...] = ()
    image_ports: tuple[str, ...] = ()


def host(cfg: configmod.Config, spec: Spec, uk_config: UnikernelConfig, container_id: str,
         connect: Callable[[], Client] | None, cache_dir: Path, want_record: bool = True) -> HostFacts:
    """`connect`: containerd's client, connected (and its module imported) only when a fact needs it;
    `want_record`: whether containerd's record of the container is needed (a view or a copy: artifacts.source)."""
    table = hostmod.mountinfo()  # read once: the rootfs, its other users and the spec's mounts
    info = rootfsmod.inspect(spec.rootfs, table)
    record = container(connect(), container_id) if connect is not None and want_record else None
    if connect is not None and record is not None and not record.snapshot_key and info.kind is not RootfsKind.DIR:
        record = keyed_snapshot(connect(), record)
    netns = next((n.path for n in spec.namespaces if n.type == "network"), "")
    owner = namespace_owner(netns) if netns else ""
    net = network(netns) if netns and not owner else NetnsFacts(None)
    ports_needed = net.interface is not None and needs_image(spec.annotations)
    return HostFacts(
        monitor=monitor(cfg, uk_config.hypervisor, cache_dir), rootfs=info, container=record,
        snapshot=snapshot(connect(), record, info) if connect is not None and uk_config.mount_rootfs else None,
        elsewhere=elsewhere(info, table) if uk_config.mount_rootfs else (), netns=netns, interface=net.interface,
        links=net.links, taken=net.taken, netns_owner=owner, rootfs_share=cfg.rootfs_share, virtiofsd=virtiofsd(cfg),
        mounts=bound_mounts(spec, cfg.block_devices, connect, record, table),
        image_ports=image_ports(connect, record, container_id) if ports_needed else (),
    )


def namespace_owner(netns: str) -> str:
    """Whose network namespace the spec names, when it is not a container's: "ukrun's own" (the shim's, the
    node's in practice) or "the host's" (PID 1's), told by the namespace file's identity (a bind mount of
    it, or /proc/<pid>/ns/net of any process in it, is the same file); "" otherwise. Its interface is
    not even read then: the plan refuses it."""
    try:
        named = os.stat(netns)
    except OSError:
        return ""  # reading its interface says why
    for path, owner in (("/proc/self/ns/net", "ukrun's own"), ("/proc/1/ns/net", "the host's")):
        try:
            st = os.stat(path)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == (named.st_dev, named.st_ino):
            return owner
    return ""


def network(netns: str) -> NetnsFacts:
    """The namespace's default interface, the ukrun taps already there and the networks in use."""
    from ukrun.network import netlink

    with netlink.inside(netns) as sock:
        return netlink.namespace(sock)


def image_ports(connect: Callable[[], Client] | None, record: ContainerRecord | None,
                container_id: str) -> tuple[str, ...]:
    """The image's ExposedPorts (none when containerd cannot tell)."""
    from ukrun.artifacts.layers import read_image_layers

    if connect is None:
        return ()
    client = connect()
    record = record or container(client, container_id)
    if record is None or not record.image:
        return ()
    try:
        return read_image_layers(client, client.get_image(record.image).target).exposed_ports
    except (ContainerdError, ImageError) as exc:
        log.info("%s: the image's ExposedPorts are unreadable (%s): it declares no ports", record.id, exc)
        return ()


def facts(found: HostFacts, spec: Spec, uk_config: UnikernelConfig, container_id: str, state_dir: str,
          artifacts: ArtifactPaths, namespace: str) -> Facts:
    return Facts(
        container_id=container_id, config=uk_config, process=process(spec), resources=resources(spec),
        rootfs=found.rootfs, snapshot=found.snapshot, rootfs_elsewhere=found.elsewhere, monitor=found.monitor,
        artifacts=artifacts, state_dir=state_dir, mounts=found.mounts, netns=found.netns,
        interface=found.interface, links=found.links, taken=found.taken, image_ports=found.image_ports,
        netns_owner=found.netns_owner, annotations=plan_annotations(spec),
        manifest=solo5_manifest(uk_config, artifacts.kernel), rootfs_share=found.rootfs_share,
        virtiofsd=found.virtiofsd, namespace=namespace, exec_agent=exec_agent(spec, uk_config),
    )


def own_block(spec: Spec, uk_config: UnikernelConfig) -> str:
    """The image's block file in the container's own rootfs (runtime.rootplan), resolved inside it."""
    return str(paths.resolve_file(spec.rootfs, uk_config.block, "block image").path) if uk_config.block else ""


def exec_agent(spec: Spec, uk_config: UnikernelConfig) -> bool:
    """Whether a Linux image's rootfs carries ukrun's exec agent, a regular file as the guest resolves it."""
    from ukrun.runtime.execplan import AGENT

    if uk_config.unikernel_type != "linux" or not uk_config.mount_rootfs:
        return False
    try:
        paths.resolve_file(spec.rootfs, AGENT, "the exec agent")
    except (ImageError, OSError):
        return False
    return True


def solo5_manifest(uk_config: UnikernelConfig, kernel: str) -> Manifest | ManifestError | None:
    """The kernel's Solo5 manifest, for a monitor that attaches devices by its names (None for the others), or
    why there is none: the plan raises it after its own checks (a guest that does not run on this monitor
    is told so first). Only the ELF header, the program headers and the note are read (tens of microseconds)."""
    from ukrun.hypervisors.base import get
    from ukrun.unikernels import solo5_manifest as mft

    monitor = get(uk_config.hypervisor)
    if not monitor.reads_manifest:
        return None
    try:
        with open(kernel, "rb") as f:
            fd = f.fileno()
            return mft.parse(lambda offset, length: os.pread(fd, length, offset), os.fstat(fd).st_size)
    except OSError as exc:
        return mft.ManifestError(f"the kernel {uk_config.binary} cannot be read ({exc.strerror}): check the "
                                 "image's com.urunc.unikernel.binary")
    except mft.NotSolo5Unikernel as exc:
        return mft.NotSolo5Unikernel(
            f"the kernel {uk_config.binary} is not a Solo5 unikernel ({exc}), and monitor {monitor.name} runs only "
            f"Solo5 unikernels: use a kernel built for solo5-{monitor.name}, or set com.urunc.unikernel.hypervisor "
            "to the monitor it was built for")
    except mft.MalformedManifest as exc:
        return mft.MalformedManifest(f"the kernel {uk_config.binary} carries a malformed Solo5 manifest ({exc}): "
                                     "rebuild it with Solo5's toolchain")


def plan_annotations(spec: Spec) -> tuple[tuple[str, str], ...]:
    """The spec's annotations that the plan reads: the network mode and ports, the rootfs share."""
    from ukrun.network.base import CRI_CONTAINER_NAME, MODE_ANNOTATION, PUBLISH_ANNOTATION
    from ukrun.network.ports import KUBELET_PORTS, PORTS_ANNOTATION, name_annotation
    from ukrun.runtime.shareplan import SHARE_ANNOTATION

    name = spec.annotations.get(CRI_CONTAINER_NAME, "")
    keys = (MODE_ANNOTATION, PUBLISH_ANNOTATION, CRI_CONTAINER_NAME, SHARE_ANNOTATION, PORTS_ANNOTATION, KUBELET_PORTS,
            *((name_annotation(name),) if name else ()))
    return tuple((k, spec.annotations[k]) for k in keys if k in spec.annotations)


def virtiofsd(cfg: configmod.Config) -> VirtiofsdFacts:
    from ukrun import fsguard

    path = cfg.virtiofsd.path
    return VirtiofsdFacts(path, bool(path) and os.path.isfile(path) and os.access(path, os.X_OK),
                          cfg.virtiofsd.options, fsguard.supported())


CRI_CONTAINER_TYPE = "io.kubernetes.cri.container-type"


def image_config(spec: Spec, connect: Callable[[], Client], container_id: str) -> UnikernelConfig | None:
    """The unikernel configuration of the container's image (its manifest's annotations and its
    configuration's labels), for a spec and rootfs that carry none, as urunc's shim fills them in. A
    pod's sandbox (pause) container is never asked about. None: not a unikernel."""
    from ukrun.artifacts.layers import read_image_layers
    from ukrun.unikernel import from_image

    if spec.annotations.get(CRI_CONTAINER_TYPE) == "sandbox":
        return None
    try:
        client = connect()
        record = client.get_container(container_id)
        if not record.image:
            return None
        found = read_image_layers(client, client.get_image(record.image).target)
    except (ContainerdUnavailable, NotFound) as exc:
        log.info("%s: no image configuration to read (%s): not a unikernel", container_id, exc)
        return None
    return from_image(found.annotations, found.labels)


def process(spec: Spec) -> GuestProcess:
    p = spec.process
    return GuestProcess(p.args, p.env, p.cwd, p.uid, p.gid)


def resources(spec: Spec) -> Resources:
    return Resources(spec.memory_limit, spec.cpu_quota, spec.cpu_period, spec.seccomp)


def monitor(cfg: configmod.Config, name: str, cache_dir: Path) -> MonitorFacts:
    from ukrun import kvm
    from ukrun.hypervisors.base import get

    conf = cfg.monitor(name)
    hypervisor = get(name, conf.path)
    binary = hypervisor.find()
    works = False
    if conf.accel == "auto" and binary:
        probe = hypervisor.kvm_probe_args()
        works = probe is not None and kvm.kvm_works(binary, probe, cache_dir)
    return MonitorFacts(name, binary, conf.memory_mb, conf.vcpus, conf.accel, works, os.path.exists("/dev/kvm"),
                        conf.path, conf.vhost, conf.vhost and os.path.exists("/dev/vhost-net"), conf.socket_path,
                        conf.data_path)


def container(client: Client, container_id: str) -> ContainerRecord | None:
    """containerd's record of the container; None when containerd cannot be reached or does not know it."""
    try:
        return client.get_container(container_id)
    except ContainerdUnavailable as exc:
        log.warning("%s: containerd unreachable, the rootfs is treated as a folder: %s", container_id, exc)
    except NotFound:
        log.warning("%s: containerd does not know this container: its rootfs is treated as a folder", container_id)
    return None


def keyed_snapshot(client: Client, record: ContainerRecord) -> ContainerRecord:
    """For a block rootfs whose container record names no snapshot: the active snapshot keyed by the
    container's ID, in whichever snapshotter holds one. Docker's containerd image store makes the
    container's snapshot under that key and mounts it itself, naming neither in containerd's record. The
    handoff rule still proves that the mounted device is that snapshot's (runtime.handoff)."""
    for plugin in client.plugins(["type==io.containerd.snapshotter.v1"]):
        if plugin.init_error:
            continue
        try:
            found = client.stat_snapshot(plugin.id, record.id)
        except (NotFound, SnapshotterNotLoaded):
            continue
        if found.kind is SnapshotKind.ACTIVE:
            return record._replace(snapshotter=plugin.id, snapshot_key=record.id)
    return record


def snapshot(client: Client, record: ContainerRecord | None, info: RootfsInfo) -> tuple[SnapshotMount, ...] | None:
    """containerd's mounts for the container's snapshot, for the handoff rule (runtime.handoff)."""
    if record is None or info.kind is RootfsKind.DIR or not (record.snapshotter and record.snapshot_key):
        return None
    return rootfsmod.snapshot_facts(client.mounts(record.snapshotter, record.snapshot_key))


def elsewhere(info: RootfsInfo, table: list[hostmod.MountEntry]) -> tuple[str, ...]:
    return tuple(rootfsmod.other_mounts(info, table)) if info.kind is not RootfsKind.DIR else ()


def bound_mounts(spec: Spec, patterns: tuple[str, ...], connect: Callable[[], Client] | None,
                 record: ContainerRecord | None, table: list[hostmod.MountEntry]) -> tuple[mp.BoundMount, ...]:
    """The spec's bind mounts of regular files, folders and block volumes (runtime.mountplan decides what
    the guest gets), each read through one descriptor of its source (runtime.bindsources). Reading stops at
    mountplan's limits: files first, then folders, so that what the plan may copy has been read; past the
    budget only sizes are recorded."""
    binds = [m for m in spec.mounts if m.type == "bind" or {"bind", "rbind"} & set(m.options)]
    if not binds:
        return ()
    sources = [bs.open_source(m.source) for m in binds]
    try:
        kinds = [bs.kind(fd, table) for fd in sources]
        budget = [mp.FILES_LIMIT + 1]
        read: dict[int, mp.BoundMount] = {}
        for i, (m, fd, (kind, _)) in enumerate(zip(binds, sources, kinds, strict=True)):
            if kind is mp.MountKind.FILE:
                read[i] = bs.file_mount(m, fd, budget)
        for i, (m, fd, (kind, entry)) in enumerate(zip(binds, sources, kinds, strict=True)):
            if kind is mp.MountKind.TREE:
                read[i] = bs.tree_mount(m, fd, budget)
            elif kind is mp.MountKind.VOLUME and entry is not None:
                read[i] = mp.BoundMount(m.destination, m.source, kind,
                                        volume=_volume(entry, table, patterns, connect, record))
    finally:
        for fd in sources:
            if fd >= 0:
                os.close(fd)
    return tuple(read[i] for i in sorted(read))


def _volume(entry: hostmod.MountEntry, table: list[hostmod.MountEntry], patterns: tuple[str, ...],
            connect: Callable[[], Client] | None, record: ContainerRecord | None) -> mp.VolumeFacts:
    import glob

    real = os.path.realpath(entry.source)
    named = tuple(os.path.realpath(p) for pattern in patterns for p in glob.glob(pattern))
    roots = [e for t in (table, _host_table()) for e in t if e.mount_point == "/"]
    sysfs = Path(f"/sys/dev/block/{entry.device}")
    autoclear = (sysfs / "loop" / "autoclear").exists() and (sysfs / "loop" / "autoclear").read_text().strip() == "1"
    allowed = mp.allowed(entry.source, real, patterns, named)
    return mp.VolumeFacts(
        entry.source, real, entry.fstype, allowed,
        mounted_at=tuple(e.mount_point for e in table if e.device == entry.device),
        host_root=any(e.device == entry.device for e in roots),
        snapshot=backed_snapshot(connect() if connect is not None else None, record, entry.device, sysfs)
        if allowed else "", autoclear=autoclear,
    )


def _host_table() -> list[hostmod.MountEntry]:
    try:
        return hostmod.mountinfo("1")
    except OSError:
        return []


def backed_snapshot(client: Client | None, record: ContainerRecord | None, device: str, sysfs: Path) -> str:
    """The container snapshot or ukrun view (any namespace, the snapshotters its containers use) that the
    device backs: its node, or, for a loop device, its backing file. Asked of containerd only for an
    allowed device; when containerd cannot tell, that is said, and the plan refuses."""
    from ukrun.containerd.client import Client as Connection

    backing = (sysfs / "loop" / "backing_file").read_text().strip() if (sysfs / "loop").is_dir() else ""
    if client is None:
        return "possibly a container's snapshot (containerd cannot be asked)"
    try:
        for ns in client.namespaces():
            with Connection(client.address, ns, timeout=client.timeout) as c:
                used = {r.snapshotter for r in c.list_containers() if r.snapshotter}
                used |= {record.snapshotter} if record is not None and record.snapshotter else set()
                for snapshotter in sorted(used):
                    for snap in c.list_snapshots(snapshotter):
                        if snap.kind is SnapshotKind.COMMITTED:
                            continue
                        try:
                            mounts = c.mounts(snapshotter, snap.name)
                        except NotFound:
                            continue  # removed meanwhile
                        for m in rootfsmod.snapshot_facts(mounts):
                            if m.source_rdev == device or (backing and os.path.realpath(m.source) == backing):
                                return f"{snapshotter} snapshot {snap.name} of namespace {ns}"
    except ContainerdError as exc:
        return f"possibly a container's snapshot (containerd cannot tell: {exc})"
    return ""
