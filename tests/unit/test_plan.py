"""Golden plans: for every (guest, monitor, root filesystem) that urunc v0.8 supports, the plan ukrun makes
from facts, checked against what each framework and monitor documents.

Sources of the expectations (facts, not code):
  qemu        `qemu-system-x86_64 --help`, docs/system/invocation: -kernel -append -initrd -drive/-device
              virtio-blk-pci, -fsdev/-device virtio-9p-pci mount_tag, -sandbox, isa-debug-exit iobase/iosize
  firecracker docs/getting-started.md: --no-api --config-file; boot-source, machine-config, drives
  cloud-hyp.  docs (and --help): --kernel --cmdline --initramfs --memory size= --cpus boot= --disk path=
              --serial tty --console off --seccomp
  solo5       docs/building.md, tenders' --help: --mem=, --block:<name>=, kernel, then the guest's args
  linux       admin-guide/kernel-parameters: root=, rootfstype=, rootflags=, init=/rdinit=, `--`, K=V to init
  unikraft    uklibparam: library parameters, `--`, application args; vfscore's vfs.fstab entries
  rumprun     doc/config.md: JSON configuration with cmdline, env, blk (source etfs, path /dev/ld0a)
  urunc       docs/hypervisor-support.md and unikernel-support.md: the supported pairs and rootfs modes
"""

from __future__ import annotations

import json
import re

import pytest

from ukrun.errors import PlanError, UkrunError
from ukrun.hypervisors.base import ExitDecoding
from ukrun.network.base import Interface, StaticLink, UkrunLink, tap_name
from ukrun.runtime.handoff import RootfsInfo, RootfsKind, SnapshotMount
from ukrun.runtime.mountplan import BoundMount, MountFile, MountKind
from ukrun.runtime.plan import ArtifactPaths, Facts, FilesTarget, MonitorFacts, Resources, plan
from ukrun.unikernel import UnikernelConfig
from ukrun.unikernels.base import GuestProcess, RootMode

SNAP = "/var/lib/containerd/blockfile/snapshots/7"
BLOCK_ROOT = RootfsInfo("/run/b/c1/rootfs", RootfsKind.BLOCKFILE, "ext4", "/dev/loop4", "7:4", "/", SNAP, (2049, 11))
SNAPSHOT = (SnapshotMount("ext4", SNAP, ("rw", "loop"), "", (2049, 11)),)
EXT2_ROOT = RootfsInfo("/run/b/c1/rootfs", RootfsKind.BLOCKFILE, "ext2", "/dev/loop4", "7:4", "/", SNAP, (2049, 11))
DIR_ROOT = RootfsInfo("/run/b/c1/rootfs", RootfsKind.DIR, "overlay", "overlay", "0:70")
NO_ROOT = RootfsInfo("/run/b/c1/rootfs", RootfsKind.DIR, "", "/run/b/c1/rootfs", "")
BINARIES = {"qemu": "/usr/bin/qemu-system-x86_64", "firecracker": "/usr/local/bin/firecracker",
            "cloud-hypervisor": "/usr/local/bin/cloud-hypervisor", "hvt": "/usr/local/bin/solo5-hvt",
            "spt": "/usr/local/bin/solo5-spt", "hyperlight-unikraft": "/usr/local/bin/hyperlight-unikraft"}
STATE = "/run/ukrun/runtime/c1"


def facts(guest: str, monitor: str, *, rootfs: RootfsInfo = NO_ROOT, mount_rootfs: bool = False, initrd: str = "",
          args: tuple[str, ...] = ("/app", "run"), env: tuple[str, ...] = ("A=1",), version: str = "",
          block: str = "", installed: bool = True, seccomp: bool = False, kvm_device: bool = True) -> Facts:
    config = UnikernelConfig(guest, monitor, "/kernel", initrd=initrd, block=block, block_mount_point="/data" if block
                             else "", version=version, mount_rootfs=mount_rootfs)
    return Facts(
        container_id="c1", config=config, process=GuestProcess(args, env, "/"), resources=Resources(seccomp=seccomp),
        rootfs=rootfs, snapshot=SNAPSHOT if rootfs.kind is RootfsKind.BLOCKFILE else None, rootfs_elsewhere=(),
        monitor=MonitorFacts(monitor, BINARIES[monitor] if installed else "", 256, 1, "tcg", False, kvm_device),
        artifacts=ArtifactPaths("/views/v/kernel", "/views/v/initrd" if initrd else "",
                                "/views/v/disk.img" if block else "", f"{rootfs.mount_point}{block}" if block else ""),
        state_dir=STATE,
    )


# -- qemu ------------------------------------------------------------------------------------------------
def test_linux_on_qemu_from_the_containers_block_device() -> None:
    p = plan(facts("linux", "qemu", rootfs=BLOCK_ROOT, mount_rootfs=True, initrd="/initrd"))
    assert p.root is RootMode.BLOCK and p.handoff_device == SNAP and "blockfile" in p.root_rule
    assert p.cmdline == ("panic=-1 console=ttyS0 root=/dev/vda rw A=1 quiet loglevel=3 ukrun.root=/dev/vda "
                         "ukrun.process=/.ukrun/process.sh init=/app -- run")
    assert list(p.argv) == [
        "/usr/bin/qemu-system-x86_64", "-accel", "tcg,thread=multi", "-cpu", "max", "-m", "256", "-smp", "1",
        "-nodefaults", "-no-user-config", "-no-reboot", "-display", "none", "-serial", "stdio", "-monitor", "none",
        "-kernel", "/views/v/kernel", "-append", p.cmdline, "-initrd", "/views/v/initrd",
        "-drive", f"file={SNAP},format=raw,if=none,id=rootfs,cache=none,aio=threads",
        "-device", "virtio-blk-pci,drive=rootfs,serial=rootfs",
        "-device", "isa-debug-exit,iobase=0xf4,iosize=0x4",
        "-device", "pvpanic-pci", "-action", "panic=exit-failure",
    ]
    assert p.files_target is FilesTarget.ROOTFS
    assert dict(p.guest_files)["/.ukrun/process.sh"].endswith(b"exec /app run\n")
    assert p.exit_decoding is ExitDecoding.DEBUG_EXIT


def test_linux_on_qemu_from_a_folder_over_9p_writes_nothing_into_it() -> None:
    p = plan(facts("linux", "qemu", rootfs=DIR_ROOT, mount_rootfs=True))
    assert p.root is RootMode.SHARED and not p.handoff_device
    assert "root=fs0 rw rootfstype=9p rootflags=trans=virtio,version=9p2000.L" in p.cmdline
    assert p.files_target is FilesTarget.SHARE and p.files_dir == f"{STATE}/guest"
    i = p.argv.index("-fsdev")
    assert p.argv[i + 1] == "local,id=fs0,path=/run/b/c1/rootfs,security_model=none,multidevs=remap"
    assert p.argv[i + 3] == "virtio-9p-pci,fsdev=fs0,mount_tag=fs0"
    assert f"local,id=ukrun,path={STATE}/guest,security_model=none,multidevs=remap,readonly=on" in p.argv


def test_linux_initrd_root_and_a_sandboxed_qemu() -> None:
    p = plan(facts("linux", "qemu", initrd="/initrd", seccomp=True))
    assert p.root is RootMode.INITRD and "root=/dev/ram0 rw" in p.cmdline and "rdinit=/app -- run" in p.cmdline
    i = p.argv.index("-sandbox")
    assert p.argv[i + 1] == "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"


def test_linux_with_urunit_gets_its_configuration_as_an_extra_initrd() -> None:
    f = facts("linux", "qemu", rootfs=BLOCK_ROOT, mount_rootfs=True, args=("/urunit", "/bin/sh", "-c", "echo hi"),
              block="/disk.img")
    p = plan(f)
    assert "retain_initrd URUNIT_CONFIG=/sys/firmware/initrd" in p.cmdline and " A=1 " not in p.cmdline
    assert p.cmdline.endswith("init=/urunit -- /bin/sh -c 'echo hi'")
    assert p.initrds == (f"{STATE}/guest-initrd",)
    config = dict(p.files)[f"{STATE}/guest-initrd"].decode()
    assert config == "UES\nA=1\nUEE\nUCS\nUID:0\nGID:0\nWD:/\nUCE\nUBS\nID:annot_vol\nMP:/data\nUBE\n"
    assert "virtio-blk-pci,drive=annot_vol,serial=annot_vol" in p.argv


def test_unikraft_on_qemu_from_its_initrd_and_from_a_folder() -> None:
    p = plan(facts("unikraft", "qemu", initrd="/rootfs.cpio", version="0.17.0"))
    assert p.cmdline == 'Unikraft env.vars=[ A=1 ] vfs.fstab=[ "initrd0:/:extract:::" ] -- /app run'
    assert p.initrds == ("/views/v/initrd",) and p.exit_decoding is ExitDecoding.UNIKRAFT
    assert "isa-debug-exit,iobase=0x501,iosize=0x2" in p.argv
    shared = plan(facts("unikraft", "qemu", rootfs=DIR_ROOT, mount_rootfs=True))
    assert shared.root is RootMode.SHARED and 'vfs.fstab=[ "fs0:/:9pfs:::" ]' in shared.cmdline
    assert shared.files_target is FilesTarget.NONE  # Unikraft needs no file from ukrun
    old = plan(facts("unikraft", "qemu", initrd="/rootfs.cpio", version="0.15.0"))
    assert old.cmdline == "Unikraft vfs.rootfs=initrd -- /app run"  # before 0.16.1: no environment


def test_unikraft_on_a_block_snapshot_gets_the_folder_not_the_device() -> None:
    p = plan(facts("unikraft", "qemu", rootfs=BLOCK_ROOT, mount_rootfs=True))
    assert p.root is RootMode.SHARED and not p.blocks and "-drive" not in p.argv
    assert any("shared instead" in n for n in p.notes)


def test_mewz_and_hermit_on_qemu() -> None:
    mewz = plan(facts("mewz", "qemu"))
    assert mewz.cmdline == "" and "isa-debug-exit,iobase=0x501,iosize=0x2" in mewz.argv
    hermit = plan(facts("hermit", "qemu", initrd="/app.initrd"))
    assert hermit.root is RootMode.INITRD and hermit.cmdline == "/app run" and "-initrd" in hermit.argv


# -- solo5 -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("monitor", ["spt", "hvt"])
def test_mirage_on_solo5_gets_the_containers_device_raw_as_storage(monitor: str) -> None:
    p = plan(facts("mirage", monitor, rootfs=BLOCK_ROOT, mount_rootfs=True, args=("--hello", "world")))
    assert list(p.argv) == [BINARIES[monitor], "--mem=256", f"--block:storage={SNAP}", "--", "/views/v/kernel",
                            "--hello world"]
    assert p.files_target is FilesTarget.NONE and p.exit_decoding is ExitDecoding.RAW


def test_mirage_on_qemu_gets_the_image_block_as_a_virtio_disk_from_its_own_rootfs() -> None:
    p = plan(facts("mirage", "qemu", block="/disk.img", args=("--hello",)))
    assert p.root is RootMode.NONE and p.cmdline == "--hello"
    assert "virtio-blk-pci,drive=storage,serial=storage" in p.argv
    # the container's own copy, which it may write: the view is read-only and every container's (urunc
    # attaches the file of the container's rootfs too)
    assert "file=/run/b/c1/rootfs/disk.img,format=raw,if=none,id=storage,cache=none,aio=threads" in p.argv


@pytest.mark.parametrize("monitor", ["spt", "hvt"])
def test_rumprun_on_solo5_reads_its_json_and_an_ext2_rootfs(monitor: str) -> None:
    p = plan(facts("rumprun", monitor, rootfs=EXT2_ROOT, mount_rootfs=True))
    assert json.loads(p.cmdline) == {"cmdline": "/app run", "env": "A=1",
                                     "blk": {"source": "etfs", "path": "/dev/ld0a", "fstype": "blk",
                                             "mountpoint": "/data"}}
    assert f"--block:rootfs={SNAP}" in p.argv


def test_rumprun_on_ext4_is_refused_naming_the_fix() -> None:
    with pytest.raises(PlanError, match=r"cannot boot from a ext4 rootfs; it reads ext2: set the snapshotter's "
                                        r"fs_type to ext2"):
        plan(facts("rumprun", "spt", rootfs=BLOCK_ROOT, mount_rootfs=True))


def test_solo5_cannot_take_a_folder_rootfs() -> None:
    with pytest.raises(PlanError, match="cannot boot from a folder rootfs"):
        plan(facts("mirage", "spt", rootfs=DIR_ROOT, mount_rootfs=True))


# -- firecracker and cloud-hypervisor ------------------------------------------------------------------------
def test_linux_on_firecracker_is_one_configuration_file() -> None:
    p = plan(facts("linux", "firecracker", rootfs=BLOCK_ROOT, mount_rootfs=True, initrd="/initrd"))
    path = f"{STATE}/firecracker.json"
    assert list(p.argv) == [BINARIES["firecracker"], "--no-api", "--config-file", path, "--no-seccomp"]
    config = json.loads(dict(p.files)[path])
    assert config == {
        "boot-source": {"kernel_image_path": "/views/v/kernel", "boot_args": p.cmdline,
                        "initrd_path": "/views/v/initrd"},
        "machine-config": {"vcpu_count": 1, "mem_size_mib": 256, "smt": False},
        "drives": [{"drive_id": "rootfs", "path_on_host": SNAP, "is_root_device": False, "is_read_only": False}],
    }
    assert p.exit_decoding is ExitDecoding.RAW  # no debug-exit device outside qemu
    sandboxed = plan(facts("unikraft", "firecracker", initrd="/rootfs.cpio", seccomp=True))
    assert "--no-seccomp" not in sandboxed.argv


def test_linux_on_cloud_hypervisor() -> None:
    p = plan(facts("linux", "cloud-hypervisor", rootfs=BLOCK_ROOT, mount_rootfs=True, seccomp=True))
    assert list(p.argv) == [
        BINARIES["cloud-hypervisor"], "--kernel=/views/v/kernel", "--memory", "size=256M", "--cpus", "boot=1",
        "--console", "off", "--serial", "tty", "--seccomp", "true",
        "--disk", f'path="{SNAP}",readonly=off,id="rootfs"', f"--cmdline={p.cmdline}",
    ]


def test_folder_rootfs_on_a_monitor_without_shares_is_refused() -> None:
    with pytest.raises(PlanError, match="monitor firecracker cannot share folders"):
        plan(facts("linux", "firecracker", rootfs=DIR_ROOT, mount_rootfs=True))


# -- refusals -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("guest", "monitor", "message"), [
    ("unikraft", "spt", "a unikraft guest does not run on spt; it runs on qemu, firecracker"),
    ("rumprun", "qemu", "a rumprun guest does not run on qemu"),
    ("mewz", "firecracker", "a mewz guest does not run on firecracker"),
])
def test_unsupported_pairs_are_refused(guest: str, monitor: str, message: str) -> None:
    with pytest.raises(PlanError, match=message):
        plan(facts(guest, monitor))


def test_a_missing_monitor_and_a_missing_kvm_are_refused() -> None:
    with pytest.raises(PlanError, match="binary 'solo5-hvt' is not installed; install it or set path"):
        plan(facts("mirage", "hvt", installed=False))
    with pytest.raises(PlanError, match="needs KVM and this host has no /dev/kvm"):
        plan(facts("mirage", "hvt", kvm_device=False))


def test_a_command_line_the_kernel_would_cut_is_refused() -> None:
    with pytest.raises(PlanError, match="over the kernel's 2048"):
        plan(facts("linux", "qemu", env=tuple(f"V{i}={'x' * 60}" for i in range(40))))
    with pytest.raises(UkrunError, match="holds white space"):
        plan(facts("linux", "qemu", env=("A=two words",)))


def test_plans_are_serialisable() -> None:
    p = plan(facts("linux", "firecracker", rootfs=BLOCK_ROOT, mount_rootfs=True))
    doc = json.loads(json.dumps(p.to_json()))
    assert doc["root"]["mode"] == "block" and doc["argv"][0] == BINARIES["firecracker"]


# -- network (urunc's dynamic mode: the container's interface redirected to a tap of its own) ----------------
IFACE = Interface("eth0", 3, "192.0.2.2", 24, "192.0.2.1", "02:42:c0:00:02:02", 1500)
TAP = tap_name("c1")


def networked(guest: str, monitor: str, **kw: object) -> Facts:
    f = facts(guest, monitor, **kw)  # type: ignore[arg-type]
    data = b"search example\nnameserver 192.0.2.53\n"
    resolv = BoundMount("/etc/resolv.conf", "/run/resolv.conf", MountKind.FILE, (MountFile("/", data, len(data)),))
    return f._replace(netns="/run/netns/pod", interface=IFACE, mounts=(resolv,))


def test_each_guest_is_told_its_network_in_its_own_convention() -> None:
    linux = plan(networked("linux", "qemu", rootfs=BLOCK_ROOT, mount_rootfs=True))
    assert "ip=192.0.2.2::192.0.2.1:255.255.255.0:urunc:eth0:off" in linux.cmdline
    i = linux.argv.index("-netdev")
    assert linux.argv[i + 1] == f"tap,id=net0,ifname={TAP},script=no,downscript=no"
    assert linux.argv[i + 3] == "virtio-net-pci,netdev=net0,mac=02:42:c0:00:02:02"
    assert linux.network is not None and linux.netns == "/run/netns/pod" and linux.interface == "eth0"
    unikraft = plan(networked("unikraft", "qemu", initrd="/rootfs.cpio"))
    assert "netdev.ip=192.0.2.2/24:192.0.2.1:192.0.2.53" in unikraft.cmdline
    old = plan(networked("unikraft", "qemu", initrd="/rootfs.cpio", version="0.15.0"))
    assert "netdev.ipv4_addr=192.0.2.2 netdev.ipv4_gw_addr=192.0.2.1 netdev.ipv4_subnet_mask=255.255.255.0" \
        in old.cmdline
    mirage = plan(networked("mirage", "spt", args=("--port=80",)))
    assert mirage.cmdline == "--ipv4=192.0.2.2/24 --ipv4-gateway=192.0.2.1 --port=80"
    assert f"--net:service={TAP}" in mirage.argv and "--net-mac:service=02:42:c0:00:02:02" in mirage.argv
    rump = plan(networked("rumprun", "hvt", rootfs=EXT2_ROOT, mount_rootfs=True))
    assert json.loads(rump.cmdline)["net"] == {"if": "ukvmif0", "cloner": "True", "type": "inet",
                                               "method": "static", "addr": "192.0.2.2", "mask": "24",
                                               "gw": "192.0.2.1"}
    assert f"--net:tap={TAP}" in rump.argv
    assert plan(networked("mewz", "qemu")).cmdline == "ip=192.0.2.2/24 gateway=192.0.2.1"
    assert plan(networked("hermit", "qemu", initrd="/i")).cmdline == "ip=192.0.2.2/24 gateway=192.0.2.1 -- /app run"


def test_firecracker_and_cloud_hypervisor_get_the_tap() -> None:
    fc = plan(networked("linux", "firecracker", rootfs=BLOCK_ROOT, mount_rootfs=True))
    config = json.loads(dict(fc.files)[f"{STATE}/firecracker.json"])
    assert config["network-interfaces"] == [{"iface_id": "net1", "guest_mac": "02:42:c0:00:02:02",
                                             "host_dev_name": TAP}]
    ch = plan(networked("linux", "cloud-hypervisor", rootfs=BLOCK_ROOT, mount_rootfs=True))
    assert f'tap="{TAP}",mac="02:42:c0:00:02:02"' in ch.argv


def test_one_unikernel_per_network_namespace_without_declared_ports() -> None:
    crowded = networked("linux", "qemu")._replace(links=(UkrunLink(tap_name("other"), "other"),))
    with pytest.raises(PlanError, match="already carries unikernel other, which takes the whole interface"):
        plan(crowded)
    again = networked("linux", "qemu")._replace(links=(UkrunLink(TAP, "c1"),))  # its own, from a crashed create
    assert plan(again).network is not None


def annotated(guest: str, monitor: str, annotations: dict[str, str], **kw: object) -> Facts:
    return networked(guest, monitor, **kw)._replace(annotations=tuple(annotations.items()))


def test_static_mode_puts_the_guest_on_a_private_link_and_publishes_ports() -> None:
    p = plan(annotated("linux", "qemu", {"io.ukrun.network": "static", "io.ukrun.network.publish": "8080, 53/udp"},
                       rootfs=BLOCK_ROOT, mount_rootfs=True))
    assert "ip=172.16.1.2::172.16.1.1:255.255.255.0:urunc:eth0:off" in p.cmdline
    assert isinstance(p.link, StaticLink) and p.link.uplink == "eth0" and p.link.table.startswith("ukrun_")
    assert [str(port) for port in p.link.publish] == ["8080/tcp", "53/udp"]
    rules = p.link.ruleset()
    assert 'ip saddr 172.16.1.0/24 oifname "eth0" masquerade' in rules
    assert 'iifname "eth0" tcp dport 8080 dnat to 172.16.1.2' in rules
    assert 'iifname "eth0" udp dport 53 dnat to 172.16.1.2' in rules
    assert rules.startswith(f"table ip {p.link.table}\ndelete table ip {p.link.table}\n")
    assert p.to_json()["network"]["mode"] == "static"
    unikraft = plan(annotated("unikraft", "qemu", {"io.ukrun.network": "static"}, initrd="/rootfs.cpio"))
    assert "netdev.ip=172.16.1.2/24:172.16.1.1:192.0.2.53" in unikraft.cmdline


@pytest.mark.parametrize("name", ['e"x', "up*", "a\\b", "eth0;", "\u00e9th0"])
def test_static_mode_refuses_an_uplink_nftables_would_read_as_something_else(name: str) -> None:
    facts = annotated("linux", "qemu", {"io.ukrun.network": "static"}, rootfs=BLOCK_ROOT, mount_rootfs=True)
    assert facts.interface is not None
    hostile = facts._replace(interface=facts.interface._replace(name=name))
    with pytest.raises(PlanError, match=r"static network: the interface .* rename it with letters, digits"):
        plan(hostile)
    for usual in ("eth0", "ens3.100", "veth-1_a@x"):
        assert plan(facts._replace(interface=facts.interface._replace(name=usual))).link is not None


def test_knatives_user_container_gets_static_mode_as_urunc_gives_it() -> None:
    knative = plan(annotated("linux", "qemu", {"io.kubernetes.cri.container-name": "user-container"}))
    assert knative.link is not None and knative.network is not None and knative.network.address == "172.16.1.2"
    other = plan(annotated("linux", "qemu", {"io.kubernetes.cri.container-name": "web"}))
    assert other.link is None and other.network is not None and other.network.address == "192.0.2.2"


@pytest.mark.parametrize(("annotations", "message"), [
    ({"io.ukrun.network": "bridge"}, "io.ukrun.network='bridge' is not one of dynamic, static, ports"),
    ({"io.ukrun.network": "static", "io.ukrun.network.publish": "http"}, "'http': the port must be a number"),
    ({"io.ukrun.network": "static", "io.ukrun.network.publish": "80/sctp"}, "the protocol must be tcp or udp"),
    ({"io.ukrun.network": "static", "io.ukrun.network.publish": "70000"}, "from 1 to 65535"),
    ({"io.ukrun.network.publish": "8080"}, "needs io.ukrun.network=static; to forward a unikernel's ports"),
])
def test_bad_network_annotations_are_refused_naming_the_fix(annotations: dict[str, str], message: str) -> None:
    with pytest.raises(PlanError, match=re.escape(message)):
        plan(annotated("linux", "qemu", annotations))


def test_without_a_network_namespace_path_the_guest_gets_no_network() -> None:
    p = plan(facts("linux", "qemu"))
    assert p.network is None and "-netdev" not in p.argv and " ip=" not in p.cmdline
    assert any("no network namespace" in n for n in p.notes)


@pytest.mark.parametrize("argv0", ["/bin/sh\nukrun.process=/evil", "/bin/my app", '/bin/"x', "/bin/\x1b"])
def test_a_first_argument_that_would_split_the_kernel_command_line_is_refused(argv0: str) -> None:
    with pytest.raises(UkrunError, match=r"first argument .* cannot carry in init="):
        plan(facts("linux", "qemu", args=(argv0, "x")))


def test_an_environment_value_with_a_quote_is_refused() -> None:
    with pytest.raises(UkrunError, match="a quote or a control character"):
        plan(facts("linux", "qemu", env=('A="x',)))
