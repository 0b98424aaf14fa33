"""`create`, decided: every choice about a container's VM, made by one pure function from gathered facts.

`plan(facts)` picks the guest type and the monitor, checks that they go together and that the monitor is
installed, decides the root filesystem (runtime.rootplan; runtime.handoff's rule: a device only when it
provably is the container's own snapshot), the monitor's own options (runtime.monitorplan), the block
devices (on Solo5 monitors named after the kernel's manifest: runtime.solo5plan), shares and initrds,
what the spec's bind mounts become (runtime.mountplan: copies, or block volumes the configuration
allows), the guest's command line and files, memory, vCPUs, accelerator and sandbox, and builds the
monitor's argv and configuration files. It reads nothing and changes nothing: `ukrun plan` prints the
same plan without effects, and tests check it cell by cell. What cannot run fails here, before anything
is applied, with one sentence naming the fix.
"""

from __future__ import annotations

import base64
import enum

from ukrun.artifacts.source import Source
from ukrun.errors import PlanError
from ukrun.hypervisors import base as hv
from ukrun.network.base import GuestNetwork, Interface, Link, NetworkMode, PortsLink, StaticLink, UkrunLink
from ukrun.runtime.execplan import ExecPlan, exec_plan
from ukrun.runtime.handoff import RootfsInfo, SnapshotMount
from ukrun.runtime.monitorplan import options
from ukrun.runtime.mountplan import BoundMount, Volume, devices, mounts_plan, resolv_conf
from ukrun.runtime.netplan import network_plan
from ukrun.runtime.rootplan import image_block, no_rootfs_rule, root
from ukrun.runtime.shareplan import VirtiofsdFacts, VirtiofsdPlan, virtiofsd
from ukrun.runtime.solo5plan import address_note, checked_network, device_names
from ukrun.tuples import NamedTuple
from ukrun.unikernel import UnikernelConfig
from ukrun.unikernels import base as guests
from ukrun.unikernels.base import GuestProcess, GuestRequest, RootMode

TYPE_CHECKING = False  # not typing's, whose import costs a create without a helper about 2 ms
if TYPE_CHECKING:
    from typing import Any

    from ukrun.unikernels.solo5_manifest import Manifest, ManifestError

CMDLINE_LIMIT = 2048  # x86's COMMAND_LINE_SIZE: the kernel cuts a longer command line
EXTRA_INITRD = "guest-initrd"  # in the container's state folder
CONFIG_DRIVE = "guest-config.img"  # in the container's state folder: a guest's configuration as a block device
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
    vhost: bool = False  # [monitors.<name>] vhost
    vhost_net: bool = False  # /dev/vhost-net exists
    socket_dir: str = ""  # [monitors.<name>] socket_path: the folder of control sockets
    data_path: str = ""  # [monitors.<name>] data_path


class ArtifactPaths(NamedTuple):
    """Host paths of the image's artifacts, where the monitor reads them, and where they come from."""

    kernel: str
    initrd: str = ""
    block: str = ""  # com.urunc.unikernel.block, where the artifacts are read (a view: read-only)
    own_block: str = ""  # the same file in the container's own rootfs (its to write; see runtime.rootplan)
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
    netns_owner: str = ""  # "" for a container's own; else whose it is (facts.namespace_owner): refused
    interface: Interface | None = None  # its interface with the default route
    links: tuple[UkrunLink, ...] = ()  # ukrun taps already in that namespace
    taken: tuple[str, ...] = ()  # the networks anything else uses there (CIDR)
    image_ports: tuple[str, ...] = ()  # the image's ExposedPorts, when the plan may need them (network.ports)
    annotations: tuple[tuple[str, str], ...] = ()  # the spec's annotations that choose network and share
    manifest: Manifest | ManifestError | None = None  # a Solo5 monitor's: the kernel's manifest, or why it has none
    rootfs_share: str = "auto"  # [runtime] rootfs_share
    virtiofsd: VirtiofsdFacts = VirtiofsdFacts()
    namespace: str = "default"  # containerd's namespace of the container
    exec_agent: bool = False  # the image carries ukrun's exec agent (runtime.execplan.AGENT)


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
    link: Link | None = None  # STATIC and PORTS modes: the private link and its NAT rules
    virtiofsd: VirtiofsdPlan | None = None  # VIRTIOFS root: the daemon the init starts before the monitor
    notes: tuple[str, ...] = ()
    volumes: tuple[Volume, ...] = ()  # unmounted on the host by create, then handed to the VM
    joined_initrd: JoinedInitrd | None = None
    control_socket: str = ""  # the monitor's control socket: a leftover one is removed before, and it after
    artifacts: ArtifactPaths = ArtifactPaths("")
    exec: ExecPlan = ExecPlan(())

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
                "mode": (self.link.mode if self.link else NetworkMode.DYNAMIC).value,
                "publish": [str(p) for p in self.link.publish] if isinstance(self.link, StaticLink) else [],
                **_ports_json(self.link)},
            "virtiofsd": None if self.virtiofsd is None else {
                "argv": list(self.virtiofsd.argv), "socket": self.virtiofsd.socket,
                "shared_dir": self.virtiofsd.shared_dir, "log": self.virtiofsd.log},
            "volumes": [{"id": v.id, "device": v.device, "source": v.source, "destination": v.destination}
                        for v in self.volumes],
            "joined_initrd": None if self.joined_initrd is None else {
                "path": self.joined_initrd.path, "image": self.joined_initrd.image,
                "appended_bytes": len(self.joined_initrd.appended)},
            "control_socket": self.control_socket,
            "artifacts": {"source": self.artifacts.source.value, "reason": self.artifacts.reason,
                          "kernel": self.artifacts.kernel, "initrd": self.artifacts.initrd,
                          "block": self.artifacts.block},
            "notes": list(self.notes),
            "exec": {"ports": [p.socket for p in self.exec.ports], "refusal": self.exec.refusal},
        }


def _ports_json(link: Link | None) -> dict[str, Any]:
    """PORTS mode: the guest's private link and what is forwarded to it, from where."""
    if not isinstance(link, PortsLink):
        return {}
    return {"private_link": {"tap": link.tap, "host": f"{link.host}/{link.prefixlen}",
                             "guest": f"{link.guest}/{link.prefixlen}"},
            "forward": {"ports": [str(p) for p in link.ports], "from": [link.pod, "127.0.0.1"], "table": link.table}}


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
    mode, decision, notes = root(facts, guest, monitor)
    own_init = guest.init_mounts_blocks(facts.process.args or tuple(cfg.cmdline.split()))
    mounts = mounts_plan(facts.mounts, guest, mode, bool(facts.artifacts.initrd), own_init)
    image = image_block(facts, mode)
    blocks, guest_blocks = devices(guest, names.rootfs, names.block, mode, decision, cfg, image, mounts.volumes)
    net, link, net_notes = _network(facts, monitor, names.net)
    req = GuestRequest(cfg, facts.process, mode, monitor.name, guest_blocks, net, names.net)
    notes += (image.notes if image else ()) + mounts.notes + net_notes + address_note(guest, req)
    guest.check(req)
    execs = exec_plan(guest, monitor, req, facts.state_dir, facts.exec_agent)
    req = req._replace(exec_ports=len(execs.ports))
    files = guest.rootfs_files(req)
    target = FilesTarget.NONE
    shares: tuple[hv.Share, ...] = ()
    files_dir = ""
    daemon = virtiofsd(facts.virtiofsd, facts.rootfs.mount_point, facts.state_dir) \
        if mode is RootMode.VIRTIOFS else None
    if mode in (RootMode.SHARED, RootMode.VIRTIOFS):
        if mode is RootMode.SHARED:
            shares = (hv.Share(guests.ROOT_TAG, facts.rootfs.mount_point),)
        if files:
            files_dir = f"{facts.state_dir}/guest"
            shares += (hv.Share(guests.FILES_TAG, files_dir, read_only=True),)
            target = FilesTarget.SHARE
    elif mode is RootMode.BLOCK and not guest.raw_block:
        files = {**dict(mounts.files), **files}  # urunc copies them into a block rootfs too
        target = FilesTarget.ROOTFS if files else FilesTarget.NONE
    initrds: tuple[str, ...] = (facts.artifacts.initrd,) if facts.artifacts.initrd else ()
    joined = None
    appended = mounts.archive + guest.initrd_archive(req)  # the guest's last: its files win
    if appended:
        joined = JoinedInitrd(f"{facts.state_dir}/{JOINED_INITRD}", facts.artifacts.initrd, appended)
        initrds = (joined.path,)
    monitor_files: list[tuple[str, bytes]] = []
    extra = guest.extra_initrd(req)
    if extra is not None:
        path = f"{facts.state_dir}/{EXTRA_INITRD}"
        initrds += (path,)
        monitor_files.append((path, extra))
    drive = guest.config_drive(req)
    if drive is not None:
        path = f"{facts.state_dir}/{CONFIG_DRIVE}"
        blocks += (hv.BlockDevice(drive[0], path, read_only=True),)
        monitor_files.append((path, drive[1]))
    cmdline = guest.cmdline(req)
    if len(cmdline.encode()) > CMDLINE_LIMIT:
        raise PlanError(f"the guest's command line is {len(cmdline.encode())} bytes, over the kernel's "
                        f"{CMDLINE_LIMIT}: shorten the process's arguments and environment")
    m = facts.monitor
    opts = options(monitor.name, monitor.control_socket, m.vhost, m.vhost_net, m.socket_dir, m.data_path,
                   facts.container_id, facts.namespace, net is not None)
    notes += opts.notes
    spec = hv.MonitorSpec(
        kernel=facts.artifacts.kernel, cmdline=cmdline, initrds=initrds,
        memory_mib=_memory(facts), vcpus=_vcpus(facts), blocks=blocks, shares=shares, accel=_accel(facts),
        virtiofs=hv.VirtioFs(guests.ROOT_TAG, daemon.socket) if daemon else None,
        nets=(hv.NetDevice(names.net, net.tap, net.mac, guest.modern_nic),) if net is not None else (),
        exit_device=guest.exit_device, seccomp=facts.resources.seccomp, workdir=facts.state_dir,
        machine=guest.qemu_machine if monitor.name == "qemu" else "", vhost=opts.vhost,
        control_socket=opts.control_socket, data_path=opts.data_path,
        app_args=facts.process.args or tuple(cfg.cmdline.split()), serial_ports=execs.ports,
    )
    try:
        launch = monitor.launch(spec, facts.monitor.binary)
    except hv.Unescapable as exc:
        raise _unescapable(facts, exc, opts.control_socket) from None
    monitor_files += [(p, text.encode()) for p, text in launch.files]
    return LaunchPlan(
        container_id=facts.container_id, guest=guest.name, monitor=monitor.name, root=mode,
        root_rule=decision.rule if decision else no_rootfs_rule(mode, cfg.block),
        handoff_device=decision.device if mode is RootMode.BLOCK and decision else "",
        files_target=target, files_dir=files_dir,
        guest_files=tuple(sorted(files.items())) if target is not FilesTarget.NONE else (),
        cmdline=cmdline, memory_mib=spec.memory_mib, vcpus=spec.vcpus, accel=spec.accel,
        seccomp=spec.seccomp, blocks=blocks, shares=shares, initrds=initrds, argv=launch.argv,
        files=tuple(monitor_files), exit_decoding=monitor.exit_decoding(spec, guest.exit_decoding),
        netns=facts.netns if net is not None else "", network=net, link=link, notes=notes,
        interface=facts.interface.name if net is not None and facts.interface else "", virtiofsd=daemon,
        volumes=mounts.volumes, joined_initrd=joined, control_socket=opts.control_socket, artifacts=facts.artifacts,
        exec=execs,
    )


def _network(facts: Facts, monitor: hv.Hypervisor, net_id: str) -> tuple[
        GuestNetwork | None, Link | None, tuple[str, ...]]:
    """The network plan (runtime.netplan), checked against the kernel's Solo5 manifest and the monitor."""
    net, link, notes = checked_network(facts.manifest, net_id, network_plan(
        facts.container_id, facts.netns, facts.interface, facts.links, facts.taken, facts.annotations,
        resolv_conf(facts.mounts), facts.image_ports, facts.netns_owner))
    if net is not None and not monitor.can_net:
        return None, None, (*notes, f"monitor {monitor.name} gives the guest no network device: the guest gets no "
                                    "network, and its network namespace is left alone")
    return net, link, notes


def _unescapable(facts: Facts, exc: hv.Unescapable, control_socket: str) -> PlanError:
    """A monitor's refusal of a value its option grammar cannot carry, naming the image's field or the
    spec's volume it came from (or, for a path of ukrun's own, the settings that make it), never the
    host path where the image's file lies."""
    cfg, art = facts.config, facts.artifacts
    images = {art.kernel: ("kernel", cfg.binary, "binary"), art.initrd: ("initrd", cfg.initrd, "initrd"),
              art.block: ("block", cfg.block, "block"), art.own_block: ("block", cfg.block, "block")}
    volumes = {b.volume.device: b.source for b in facts.mounts if b.volume is not None}
    where = f"({exc.option} of {exc.monitor})"
    if exc.value in images:
        name, path, key = images[exc.value]
        if not exc.chars or any(c in path for c in exc.chars):
            return PlanError(f"the image's {name} {path!r} (com.urunc.unikernel.{key}) {exc.reason} {where}: "
                             "rename it in the image")
        return PlanError(f"the path where ukrun reads the image's {name} {path!r} {exc.reason} {where}: keep "
                         "such characters out of the image's links and of ukrun's [artifacts] state_root")
    if exc.value and exc.value == control_socket:
        return PlanError(f"the monitor's control socket {exc.value} {exc.reason} {where}: set a [monitors."
                         f"{facts.config.hypervisor}] socket_path without such characters")
    if exc.value in volumes:
        return PlanError(f"block volume {exc.value} (mounted at {volumes[exc.value]}) {exc.reason} {where}: "
                         "mount a device whose name has none of them")
    return PlanError(f"a path ukrun passes {exc.reason} {where}: keep such characters out of the container's ID, "
                     "ukrun's runtime root (the shim's --root) and its [artifacts] state_root")


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
