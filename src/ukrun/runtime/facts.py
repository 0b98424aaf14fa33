"""Gathering the facts that `runtime.plan` decides from: the host, the spec, containerd and the monitor
are asked here, and only here, so that the plan itself reads nothing. `create` and `ukrun plan` gather
the same facts; only `create` then acquires the artifacts and applies the plan."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from ukrun import config as configmod
from ukrun import host as hostmod
from ukrun.artifacts import paths
from ukrun.containerd.records import ContainerRecord, SnapshotKind
from ukrun.errors import ContainerdError, ContainerdUnavailable, ImageError, NotFound, SnapshotterNotLoaded
from ukrun.logs import log
from ukrun.network.base import Interface
from ukrun.runtime import mountplan as mp
from ukrun.runtime import rootfs as rootfsmod
from ukrun.runtime.handoff import RootfsInfo, RootfsKind, SnapshotMount
from ukrun.runtime.plan import ArtifactPaths, Facts, MonitorFacts, Resources
from ukrun.runtime.shareplan import VirtiofsdFacts
from ukrun.runtime.spec import Spec, SpecMount
from ukrun.unikernel import UnikernelConfig
from ukrun.unikernels.base import GuestProcess

if TYPE_CHECKING:
    from ukrun.containerd.client import Client
    from ukrun.unikernels.solo5_manifest import Manifest, ManifestError

# The kernel's views of itself: a bind mount from one of these is not delivered to a guest.
KERNEL_FILE_SYSTEMS = frozenset({"proc", "sysfs", "devtmpfs", "devpts", "cgroup", "cgroup2", "debugfs", "tracefs",
                                 "securityfs", "bpf", "configfs", "mqueue", "hugetlbfs", "pstore", "efivarfs"})


class HostFacts(NamedTuple):
    """What the host and containerd say, before the artifacts are acquired."""

    monitor: MonitorFacts
    rootfs: RootfsInfo
    container: ContainerRecord | None
    snapshot: tuple[SnapshotMount, ...] | None
    elsewhere: tuple[str, ...]
    netns: str
    interface: Interface | None
    taps: tuple[tuple[str, str], ...]
    rootfs_share: str = "auto"
    virtiofsd: VirtiofsdFacts = VirtiofsdFacts()
    mounts: tuple[mp.BoundMount, ...] = ()


def host(cfg: configmod.Config, spec: Spec, uk_config: UnikernelConfig, container_id: str,
         client: Client | None, cache_dir: Path) -> HostFacts:
    table = hostmod.mountinfo()  # read once: the rootfs, its other users and the spec's mounts
    info = rootfsmod.inspect(spec.rootfs, table)
    record = container(client, container_id) if client is not None else None
    if client is not None and record is not None and not record.snapshot_key and info.kind is not RootfsKind.DIR:
        record = keyed_snapshot(client, record)
    netns = next((n.path for n in spec.namespaces if n.type == "network"), "")
    interface, taps = network(netns) if netns else (None, ())
    return HostFacts(
        monitor=monitor(cfg, uk_config.hypervisor, cache_dir), rootfs=info, container=record,
        snapshot=snapshot(client, record, info) if client is not None and uk_config.mount_rootfs else None,
        elsewhere=elsewhere(info, table) if uk_config.mount_rootfs else (), netns=netns, interface=interface,
        taps=taps, rootfs_share=cfg.rootfs_share, virtiofsd=virtiofsd(cfg),
        mounts=bound_mounts(spec, cfg.block_devices, client, record, table),
    )


def network(netns: str) -> tuple[Interface | None, tuple[tuple[str, str], ...]]:
    """The namespace's default interface and the ukrun taps already there."""
    from ukrun.network import netlink

    with netlink.inside(netns) as sock:
        return netlink.default_interface(sock), tuple(sorted(netlink.ukrun_taps(sock).items()))


def facts(found: HostFacts, spec: Spec, uk_config: UnikernelConfig, container_id: str, state_dir: str,
          artifacts: ArtifactPaths) -> Facts:
    return Facts(
        container_id=container_id, config=uk_config, process=process(spec), resources=resources(spec),
        rootfs=found.rootfs, snapshot=found.snapshot, rootfs_elsewhere=found.elsewhere, monitor=found.monitor,
        artifacts=artifacts, state_dir=state_dir, mounts=found.mounts, netns=found.netns,
        interface=found.interface, taps=found.taps, annotations=plan_annotations(spec),
        manifest=solo5_manifest(uk_config, artifacts.kernel), rootfs_share=found.rootfs_share,
        virtiofsd=found.virtiofsd,
    )


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
    from ukrun.runtime.shareplan import SHARE_ANNOTATION

    keys = (MODE_ANNOTATION, PUBLISH_ANNOTATION, CRI_CONTAINER_NAME, SHARE_ANNOTATION)
    return tuple((k, spec.annotations[k]) for k in keys if k in spec.annotations)


def virtiofsd(cfg: configmod.Config) -> VirtiofsdFacts:
    path = cfg.virtiofsd.path
    return VirtiofsdFacts(path, bool(path) and os.path.isfile(path) and os.access(path, os.X_OK),
                          cfg.virtiofsd.options)


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
                        conf.path)


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


def bound_mounts(spec: Spec, patterns: tuple[str, ...], client: Client | None,
                 record: ContainerRecord | None, table: list[hostmod.MountEntry]) -> tuple[mp.BoundMount, ...]:
    """The spec's bind mounts of regular files, folders and block volumes (runtime.mountplan decides what
    the guest gets). Reading stops at mountplan's limits: files first, then folders, so that what the
    plan may copy has been read; past the budget only sizes are recorded."""
    binds = [m for m in spec.mounts if m.type == "bind" or {"bind", "rbind"} & set(m.options)]
    if not binds:
        return ()
    kinds = [_kind(m.source, table) for m in binds]
    budget = [mp.FILES_LIMIT + 1]
    read: dict[int, mp.BoundMount] = {}
    for i, (m, (kind, _)) in enumerate(zip(binds, kinds, strict=True)):
        if kind is mp.MountKind.FILE:
            size = os.stat(m.source).st_size
            read[i] = mp.BoundMount(m.destination, m.source, kind, (mp.MountFile("/", _read(m.source, budget), size),))
    for i, (m, (kind, entry)) in enumerate(zip(binds, kinds, strict=True)):
        if kind is mp.MountKind.TREE:
            read[i] = _tree(m, budget)
        elif kind is mp.MountKind.VOLUME and entry is not None:
            read[i] = mp.BoundMount(m.destination, m.source, kind,
                                    volume=_volume(entry, table, patterns, client, record))
    return tuple(read[i] for i in sorted(read))


def _kind(source: str, table: list[hostmod.MountEntry]) -> tuple[mp.MountKind | None, hostmod.MountEntry | None]:
    """A regular file, a folder, or the root of a file system on a block device (None: anything else,
    such as a device node or what the kernel's own file systems show, which are the host's, not data)."""
    try:
        st = os.stat(source)
    except OSError:
        return None, None
    real = os.path.realpath(source)
    holder = max((e for e in table if real == e.mount_point or real.startswith(e.mount_point.rstrip("/") + "/")),
                 key=lambda e: len(e.mount_point), default=None)
    if holder is not None and holder.fstype in KERNEL_FILE_SYSTEMS:
        return None, None
    if stat.S_ISREG(st.st_mode):
        return mp.MountKind.FILE, None
    if not stat.S_ISDIR(st.st_mode):
        return None, None
    entry = next((e for e in reversed(table) if e.mount_point == real), None)
    if entry is not None and entry.root == "/" and entry.source.startswith("/"):
        try:
            if stat.S_ISBLK(os.stat(entry.source).st_mode):
                return mp.MountKind.VOLUME, entry
        except OSError:
            pass
    return mp.MountKind.TREE, None


def _read(path: str, budget: list[int]) -> bytes:
    """Up to what is left of the reading budget; nothing once it is spent."""
    if budget[0] <= 0:
        return b""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        data = f.read(budget[0])
    budget[0] -= len(data)
    return data


def _tree(m: SpecMount, budget: list[int]) -> mp.BoundMount:
    """A folder's regular files, by their paths inside it; a link is read only where it leads to a regular
    file inside the folder (resolved there, never on the host); folders reached by links, devices and
    sockets are left out."""
    root = os.path.realpath(m.source)
    found: list[str] = []
    pending = [""]
    while pending:
        rel = pending.pop()
        try:
            entries = sorted(os.scandir(os.path.join(root, rel.lstrip("/"))), key=lambda e: e.name)
        except OSError as exc:
            return mp.BoundMount(m.destination, m.source, mp.MountKind.TREE, skipped=f"cannot read it: {exc.strerror}")
        for e in entries:
            found.append(f"{rel}/{e.name}")
            if len(found) > mp.TREE_ENTRIES:
                return mp.BoundMount(m.destination, m.source, mp.MountKind.TREE,
                                     skipped=f"it holds more than {mp.TREE_ENTRIES} entries")
            if e.is_dir(follow_symlinks=False):
                pending.append(f"{rel}/{e.name}")
    files = []
    for rel in sorted(found):
        try:
            real = paths.resolve_file(Path(root), rel, "file").path
        except (ImageError, OSError):
            continue  # a folder, a device, a link to a folder or out of the tree
        files.append(mp.MountFile(rel, _read(str(real), budget), os.stat(real).st_size))
    return mp.BoundMount(m.destination, m.source, mp.MountKind.TREE, tuple(files))


def _volume(entry: hostmod.MountEntry, table: list[hostmod.MountEntry], patterns: tuple[str, ...],
            client: Client | None, record: ContainerRecord | None) -> mp.VolumeFacts:
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
        snapshot=backed_snapshot(client, record, entry.device, sysfs) if allowed else "", autoclear=autoclear,
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
