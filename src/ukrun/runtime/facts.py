"""Gathering the facts that `runtime.plan` decides from: the host, the spec, containerd and the monitor
are asked here, and only here, so that the plan itself reads nothing. `create` and `ukrun plan` gather
the same facts; only `create` then acquires the artifacts and applies the plan."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from ukrun import config as configmod
from ukrun.containerd.records import ContainerRecord
from ukrun.errors import ContainerdUnavailable, NotFound
from ukrun.logs import log
from ukrun.network.base import Interface
from ukrun.runtime import rootfs as rootfsmod
from ukrun.runtime.handoff import RootfsInfo, RootfsKind, SnapshotMount
from ukrun.runtime.plan import ArtifactPaths, Facts, MonitorFacts, Resources
from ukrun.runtime.shareplan import VirtiofsdFacts
from ukrun.runtime.spec import Spec
from ukrun.unikernel import UnikernelConfig
from ukrun.unikernels.base import GuestProcess

if TYPE_CHECKING:
    from ukrun.containerd.client import Client
    from ukrun.unikernels.solo5_manifest import Manifest, ManifestError

ETC_FILES = ("/etc/hosts", "/etc/resolv.conf", "/etc/hostname")
ETC_LIMIT = 1 << 20


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


def host(cfg: configmod.Config, spec: Spec, uk_config: UnikernelConfig, container_id: str,
         client: Client | None, cache_dir: Path) -> HostFacts:
    info = rootfsmod.inspect(spec.rootfs)
    record = container(client, container_id) if client is not None else None
    netns = next((n.path for n in spec.namespaces if n.type == "network"), "")
    interface, taps = network(netns) if netns else (None, ())
    return HostFacts(
        monitor=monitor(cfg, uk_config.hypervisor, cache_dir), rootfs=info, container=record,
        snapshot=snapshot(client, record, info) if client is not None and uk_config.mount_rootfs else None,
        elsewhere=elsewhere(info) if uk_config.mount_rootfs else (), netns=netns, interface=interface,
        taps=taps, rootfs_share=cfg.rootfs_share, virtiofsd=virtiofsd(cfg),
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
        artifacts=artifacts, state_dir=state_dir, etc_files=etc_files(spec), netns=found.netns,
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


def snapshot(client: Client, record: ContainerRecord | None, info: RootfsInfo) -> tuple[SnapshotMount, ...] | None:
    """containerd's mounts for the container's snapshot, for the handoff rule (runtime.handoff)."""
    if record is None or info.kind is RootfsKind.DIR or not (record.snapshotter and record.snapshot_key):
        return None
    return rootfsmod.snapshot_facts(client.mounts(record.snapshotter, record.snapshot_key))


def elsewhere(info: RootfsInfo) -> tuple[str, ...]:
    return tuple(rootfsmod.other_mounts(info)) if info.kind is not RootfsKind.DIR else ()


def etc_files(spec: Spec) -> tuple[tuple[str, bytes], ...]:
    """The spec's bind-mounted /etc files (hosts, resolv.conf, hostname), which a block rootfs receives."""
    out = []
    for m in spec.mounts:
        is_bind = m.type == "bind" or "bind" in m.options or "rbind" in m.options
        if is_bind and m.destination in ETC_FILES and os.path.isfile(m.source):
            with open(m.source, "rb") as f:
                out.append((m.destination, f.read(ETC_LIMIT)))
    return tuple(out)
