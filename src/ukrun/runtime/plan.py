"""`create`, decided: every choice about a container's VM, made by one pure function from gathered facts.

`plan(facts)` picks the guest type and the monitor, checks that they go together and that the monitor is
installed, decides the root filesystem (runtime.handoff's rule: a device only when it provably is the
container's own snapshot), the block devices (on Solo5 monitors named after the kernel's manifest:
runtime.solo5plan), shares and initrds, what the spec's bind mounts become (runtime.mountplan: copies,
or block volumes the configuration allows), the guest's command line and files, memory, vCPUs,
accelerator and sandbox, and builds the monitor's argv and configuration files. It reads
nothing and changes nothing: `ukrun plan` prints the same plan without effects, and tests check it
cell by cell. What cannot run fails here, before anything is applied, with one sentence naming the fix.
"""

from __future__ import annotations

import base64
import enum
from typing import TYPE_CHECKING, Any, NamedTuple

from ukrun.artifacts.source import Source
from ukrun.errors import PlanError
from ukrun.hypervisors import base as hv
from ukrun.network.base import GuestNetwork, Interface, NetworkMode, StaticLink
from ukrun.runtime.handoff import Handoff, RootDecision, RootfsInfo, SnapshotMount, decide
from ukrun.runtime.mountplan import BoundMount, Volume, devices, mounts_plan, resolv_conf
from ukrun.runtime.netplan import network_plan
from ukrun.runtime.shareplan import VirtiofsdFacts, VirtiofsdPlan, choose, virtiofsd
from ukrun.runtime.solo5plan import address_note, checked_network, device_names
from ukrun.unikernel import UnikernelConfig
from ukrun.unikernels import base as guests
from ukrun.unikernels.base import GuestProcess, GuestRequest, RootMode

if TYPE_CHECKING:
    from ukrun.unikernels.solo5_manifest import Manifest, ManifestError

CMDLINE_LIMIT = 2048  # x86's COMMAND_LINE_SIZE: the kernel cuts a longer command line
EXTRA_INITRD = "guest-initrd"  # in the container's state folder
JOINED_INITRD = "initrd"  # in the container's state folder: the image's initrd with the spec's files appended


class FilesTarget(enum.Enum):
    NONE = "none"
    ROOTFS = "rootfs"  # written into the mounted block rootfs before the handoff
    SHARE = "share"  # a read-only share beside a folder rootfs (ukrun never writes into such a folder)


class MonitorFacts(NamedTuple):
    name: str
    binary: str  # "" when not installed
    memory_mib: int  # the configured default
    vcpus: int
    accel: str  # configured: auto, kvm or tcg
    kvm_works: bool  # auto: whether the probe booted a guest under KVM (see ukrun.kvm)
    kvm_device: bool = True  # /dev/kvm exists
    path: str = ""  # the configured binary ([monitors.<name>] path), for messages


class ArtifactPaths(NamedTuple):
    """Host paths of the image's artifacts, where the monitor reads them, and where they come from."""

    kernel: str
    initrd: str = ""
    block: str = ""  # com.urunc.unikernel.block
    source: Source = Source.VIEW  # decided by artifacts.source.decide
    reason: str = ""


class Resources(NamedTuple):
    memory_limit: int = 0  # bytes, from the spec
    cpu_quota: int = 0
    cpu_period: int = 0
    seccomp: bool = True  # the spec carries a seccomp profile; without one, monitors run unsandboxed


class Facts(NamedTuple):
    container_id: str
    config: UnikernelConfig
    process: GuestProcess
    resources: Resources
    rootfs: RootfsInfo
    snapshot: tuple[SnapshotMount, ...] | None  # containerd's mounts for the container's snapshot
    rootfs_elsewhere: tuple[str, ...]  # other users of the rootfs's storage
    monitor: MonitorFacts
    artifacts: ArtifactPaths
    state_dir: str  # the container's state folder
    mounts: tuple[BoundMount, ...] = ()  # the spec's bind mounts of files, folders and block volumes
    netns: str = ""  # the container's network namespace (a path), when the spec names one
    interface: Interface | None = None  # its interface with the default route
    taps: tuple[tuple[str, str], ...] = ()  # ukrun taps already in that namespace: (tap, container)
    annotations: tuple[tuple[str, str], ...] = ()  # the spec's annotations that choose network and share
    manifest: Manifest | ManifestError | None = None  # a Solo5 monitor's: the kernel's manifest, or why it has none
    rootfs_share: str = "auto"  # [runtime] rootfs_share
    virtiofsd: VirtiofsdFacts = VirtiofsdFacts()


class JoinedInitrd(NamedTuple):
    """An initrd create writes: the image's, padded to 4 bytes, then `appended` (a cpio archive)."""

    path: str
    image: str
    appended: bytes


class LaunchPlan(NamedTuple):
    container_id: str
    guest: str
    monitor: str
    root: RootMode
    root_rule: str  # why: the rule that decided the root filesystem
    handoff_device: str  # BLOCK: the device the monitor opens once the rootfs is unmounted
    files_target: FilesTarget
    files_dir: str  # SHARE: the host folder shared read-only
    guest_files: tuple[tuple[str, bytes], ...]
    cmdline: str
    memory_mib: int
    vcpus: int
    accel: str
    seccomp: bool
    blocks: tuple[hv.BlockDevice, ...]
    shares: tuple[hv.Share, ...]
    initrds: tuple[str, ...]
    argv: tuple[str, ...]
    files: tuple[tuple[str, bytes], ...]  # (path, content) written before the monitor starts
    exit_decoding: hv.ExitDecoding
    netns: str = ""
    interface: str = ""  # the container's interface that the tap is redirected from and to
    network: GuestNetwork | None = None
    link: StaticLink | None = None  # STATIC mode: the private link and its NAT rules
    virtiofsd: VirtiofsdPlan | None = None  # VIRTIOFS root: the daemon the init starts before the monitor
    notes: tuple[str, ...] = ()
    volumes: tuple[Volume, ...] = ()  # unmounted on the host by create, then handed to the VM
    joined_initrd: JoinedInitrd | None = None
    artifacts: ArtifactPaths = ArtifactPaths("")

    def to_json(self) -> dict[str, Any]:
        def show(data: bytes) -> str:
            try:
                return data.decode()
            except UnicodeDecodeError:
                return "base64:" + base64.b64encode(data).decode()

        return {
            "container": self.container_id, "guest": self.guest, "monitor": self.monitor,
            "root": {"mode": self.root.value, "rule": self.root_rule, "device": self.handoff_device},
            "guest_files": {"target": self.files_target.value, "dir": self.files_dir,
                            "files": {p: show(d) for p, d in self.guest_files}},
            "cmdline": self.cmdline, "memory_mib": self.memory_mib, "vcpus": self.vcpus, "accel": self.accel,
            "seccomp": self.seccomp,
            "blocks": [{"id": b.id, "path": b.path, "read_only": b.read_only} for b in self.blocks],
            "shares": [{"tag": s.tag, "path": s.path, "read_only": s.read_only} for s in self.shares],
            "initrds": list(self.initrds), "argv": list(self.argv),
            "files": {p: show(d) for p, d in self.files}, "exit_decoding": self.exit_decoding.value,
            "network": None if self.network is None else {
                "netns": self.netns, "interface": self.interface, "tap": self.network.tap, "mac": self.network.mac,
                "address": self.network.cidr, "gateway": self.network.gateway, "mtu": self.network.mtu,
                "mode": (NetworkMode.STATIC if self.link else NetworkMode.DYNAMIC).value,
                "publish": [str(p) for p in self.link.publish] if self.link else []},
            "virtiofsd": None if self.virtiofsd is None else {
                "argv": list(self.virtiofsd.argv), "socket": self.virtiofsd.socket,
                "shared_dir": self.virtiofsd.shared_dir, "log": self.virtiofsd.log},
            "volumes": [{"id": v.id, "device": v.device, "source": v.source, "destination": v.destination}
                        for v in self.volumes],
            "joined_initrd": None if self.joined_initrd is None else {
                "path": self.joined_initrd.path, "image": self.joined_initrd.image,
                "appended_bytes": len(self.joined_initrd.appended)},
            "artifacts": {"source": self.artifacts.source.value, "reason": self.artifacts.reason,
                          "kernel": self.artifacts.kernel, "initrd": self.artifacts.initrd,
                          "block": self.artifacts.block},
            "notes": list(self.notes),
        }


def plan(facts: Facts) -> LaunchPlan:
    cfg = facts.config
    guest = guests.get(cfg.unikernel_type)
    monitor = hv.get(cfg.hypervisor, facts.monitor.path)
    if monitor.name not in guest.monitors:
        raise PlanError(f"a {guest.name} guest does not run on {monitor.name}; it runs on "
                        f"{', '.join(guest.monitors)}: set com.urunc.unikernel.hypervisor to one of them")
    if not facts.monitor.binary:
        raise PlanError(monitor.missing())
    if monitor.needs_kvm and not facts.monitor.kvm_device:
        raise PlanError(f"monitor {monitor.name} needs KVM and this host has no /dev/kvm; "
                        "use qemu or solo5-spt, or run on a host with KVM")
    names = device_names(facts.manifest, guest, cfg)
    root, decision, notes = _root(facts, guest, monitor)
    mounts = mounts_plan(facts.mounts, guest, root, bool(facts.artifacts.initrd))
    blocks, guest_blocks = devices(guest, names.rootfs, names.block, root, decision, cfg, facts.artifacts.block,
                                   mounts.volumes)
    net, link, net_notes = checked_network(facts.manifest, names.net, network_plan(
        facts.container_id, facts.netns, facts.interface, facts.taps, facts.annotations, resolv_conf(facts.mounts)))
    req = GuestRequest(cfg, facts.process, root, monitor.name, guest_blocks, net, names.net)
    notes += mounts.notes + net_notes + address_note(guest, req)
    guest.check(req)
    files = guest.rootfs_files(req)
    target = FilesTarget.NONE
    shares: tuple[hv.Share, ...] = ()
    files_dir = ""
    daemon = virtiofsd(facts.virtiofsd, facts.rootfs.mount_point, facts.state_dir) \
        if root is RootMode.VIRTIOFS else None
    if root in (RootMode.SHARED, RootMode.VIRTIOFS):
        if root is RootMode.SHARED:
            shares = (hv.Share(guests.ROOT_TAG, facts.rootfs.mount_point),)
        if files:
            files_dir = f"{facts.state_dir}/guest"
            shares += (hv.Share(guests.FILES_TAG, files_dir, read_only=True),)
            target = FilesTarget.SHARE
    elif root is RootMode.BLOCK and not guest.raw_block:
        files = {**dict(mounts.files), **files}  # urunc copies them into a block rootfs too
        target = FilesTarget.ROOTFS if files else FilesTarget.NONE
    initrds: tuple[str, ...] = (facts.artifacts.initrd,) if facts.artifacts.initrd else ()
    joined = None
    if mounts.archive:
        joined = JoinedInitrd(f"{facts.state_dir}/{JOINED_INITRD}", facts.artifacts.initrd, mounts.archive)
        initrds = (joined.path,)
    monitor_files: list[tuple[str, bytes]] = []
    extra = guest.extra_initrd(req)
    if extra is not None:
        path = f"{facts.state_dir}/{EXTRA_INITRD}"
        initrds += (path,)
        monitor_files.append((path, extra))
    cmdline = guest.cmdline(req)
    if len(cmdline.encode()) > CMDLINE_LIMIT:
        raise PlanError(f"the guest's command line is {len(cmdline.encode())} bytes, over the kernel's "
                        f"{CMDLINE_LIMIT}: shorten the process's arguments and environment")
    spec = hv.MonitorSpec(
        kernel=facts.artifacts.kernel, cmdline=cmdline, initrds=initrds,
        memory_mib=_memory(facts), vcpus=_vcpus(facts), blocks=blocks, shares=shares, accel=_accel(facts),
        virtiofs=hv.VirtioFs(guests.ROOT_TAG, daemon.socket) if daemon else None,
        nets=(hv.NetDevice(names.net, net.tap, net.mac),) if net is not None else (),
        exit_device=guest.exit_device, seccomp=facts.resources.seccomp, workdir=facts.state_dir,
    )
    launch = monitor.launch(spec, facts.monitor.binary)
    monitor_files += [(p, text.encode()) for p, text in launch.files]
    return LaunchPlan(
        container_id=facts.container_id, guest=guest.name, monitor=monitor.name, root=root,
        root_rule=decision.rule if decision else _no_rootfs_rule(root),
        handoff_device=decision.device if root is RootMode.BLOCK and decision else "",
        files_target=target, files_dir=files_dir,
        guest_files=tuple(sorted(files.items())) if target is not FilesTarget.NONE else (),
        cmdline=cmdline, memory_mib=spec.memory_mib, vcpus=spec.vcpus, accel=spec.accel,
        seccomp=spec.seccomp, blocks=blocks, shares=shares, initrds=initrds, argv=launch.argv,
        files=tuple(monitor_files), exit_decoding=monitor.exit_decoding(spec, guest.exit_decoding),
        netns=facts.netns if net is not None else "", network=net, link=link, notes=notes,
        interface=facts.interface.name if net is not None and facts.interface else "", virtiofsd=daemon,
        volumes=mounts.volumes, joined_initrd=joined, artifacts=facts.artifacts,
    )


def _root(facts: Facts, guest: guests.UnikernelType,
          monitor: hv.Hypervisor) -> tuple[RootMode, RootDecision | None, tuple[str, ...]]:
    """The guest's root filesystem: with mountRootfs, the container's rootfs (its device when proven, else
    its folder); else the image's initrd for a guest that boots from one; else none."""
    cfg = facts.config
    if not cfg.mount_rootfs:
        return (RootMode.INITRD if cfg.initrd and guest.initrd_root else RootMode.NONE), None, ()
    decision = decide(facts.rootfs, facts.snapshot)
    info = facts.rootfs
    if decision.handoff is Handoff.BLOCK and (guest.raw_block or guest.block_fs_types):
        if not guest.raw_block and info.fstype not in guest.block_fs_types:
            raise PlanError(f"a {guest.name} guest cannot boot from a {info.fstype} rootfs; it reads "
                            f"{', '.join(guest.block_fs_types)}: set the snapshotter's fs_type to "
                            f"{guest.block_fs_types[0]}")
        if facts.rootfs_elsewhere:
            raise PlanError(f"the rootfs device {info.source} is also mounted at {', '.join(facts.rootfs_elsewhere)}; "
                            "unmount it there first: a VM must be the device's only user")
        return RootMode.BLOCK, decision, ()
    notes: tuple[str, ...] = ()
    if decision.handoff is Handoff.BLOCK:
        notes = (f"a {guest.name} guest reads no block device: the rootfs's folder is shared instead",)
        decision = RootDecision(Handoff.FOLDER, decision.rule + f"; a {guest.name} guest boots from a folder")
    if not guest.shares_root:
        raise PlanError(f"a {guest.name} guest cannot boot from a folder rootfs, and this rootfs is not handed to "
                        f"a VM as a device ({decision.rule}): use a block snapshotter (devmapper, blockfile)")
    if not monitor.can_share:
        raise PlanError(f"this rootfs is a folder ({decision.rule}), and monitor {monitor.name} cannot share "
                        "folders: use a block snapshotter (devmapper, blockfile) or qemu")
    mode, how = choose(guest, monitor, facts.rootfs_share, facts.annotations, facts.virtiofsd)
    return mode, decision, notes + how


def _no_rootfs_rule(root: RootMode) -> str:
    if root is RootMode.INITRD:
        return "mountRootfs is unset: the image's initrd is the guest's root filesystem"
    return "mountRootfs is unset: the guest gets no root filesystem"


def _memory(facts: Facts) -> int:
    limit = facts.resources.memory_limit
    return limit // (1 << 20) if limit > 0 else facts.monitor.memory_mib


def _vcpus(facts: Facts) -> int:
    r = facts.resources
    if r.cpu_quota > 0 and r.cpu_period > 0:
        return max(1, -(-r.cpu_quota // r.cpu_period))
    return max(1, facts.monitor.vcpus)


def _accel(facts: Facts) -> str:
    accel = facts.monitor.accel
    if accel == "auto":
        return "kvm" if facts.monitor.kvm_works else "tcg"
    return accel
