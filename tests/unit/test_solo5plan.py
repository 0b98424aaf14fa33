"""Golden plans for Solo5 monitors with the kernel's own manifest (runtime.solo5plan): the tender attaches a
device only under a declared name and starts only with every declared device attached (Solo5's
`tenders/common/mft.c`, `tenders/*/..._module_{block,net}.c`, `hvt_main.c`), so the plan names what it attaches
after the manifest and refuses at create what the tender would refuse at start."""

from __future__ import annotations

import re

import pytest

from tests.unit.test_plan import BINARIES, BLOCK_ROOT, EXT2_ROOT, SNAP, TAP, facts, networked
from ukrun.errors import PlanError, UkrunError
from ukrun.runtime.plan import Facts, plan
from ukrun.runtime.solo5plan import device_names
from ukrun.unikernels import base as guests
from ukrun.unikernels.solo5_manifest import Device, DeviceType, Manifest, NotSolo5Unikernel

MAC = "02:42:c0:00:02:02"


def declaring(f: Facts, *devices: tuple[str, DeviceType]) -> Facts:
    return f._replace(manifest=Manifest(tuple(Device(n, t) for n, t in devices)))


BLK, NET = DeviceType.BLOCK, DeviceType.NET


@pytest.mark.parametrize("monitor", ["spt", "hvt"])
def test_solo5s_test_net_gets_the_network_as_service0_and_no_mirage_flags(monitor: str) -> None:
    p = plan(declaring(networked("mirage", monitor, args=("verbose",)), ("service0", NET)))
    assert list(p.argv) == [BINARIES[monitor], "--mem=256", f"--net:service0={TAP}", f"--net-mac:service0={MAC}",
                            "--", "/views/v/kernel", "verbose"]
    assert p.network is not None and p.network.cidr == "192.0.2.2/24"
    assert ("the unikernel's net device is service0, not service: a mirage guest's command line gets no address "
            "then; it must know 192.0.2.2/24 itself") in p.notes


def test_a_mirageos_unikernel_keeps_service_and_its_ipv4_flags() -> None:
    p = plan(declaring(networked("mirage", "hvt", args=("--port=80",)), ("service", NET)))
    assert p.cmdline == "--ipv4=192.0.2.2/24 --ipv4-gateway=192.0.2.1 --port=80"
    assert f"--net:service={TAP}" in p.argv and not [n for n in p.notes if "net device" in n]


def test_test_blk_gets_the_containers_device_as_the_storage_it_declares() -> None:
    p = plan(declaring(facts("mirage", "spt", rootfs=BLOCK_ROOT, mount_rootfs=True, args=()), ("storage", BLK)))
    assert list(p.argv) == [BINARIES["spt"], "--mem=256", f"--block:storage={SNAP}", "--", "/views/v/kernel"]


def test_a_block_device_named_otherwise_takes_the_rootfs() -> None:
    p = plan(declaring(facts("mirage", "hvt", rootfs=BLOCK_ROOT, mount_rootfs=True), ("disk0", BLK)))
    assert f"--block:disk0={SNAP}" in p.argv


def test_with_several_block_devices_the_guests_own_name_goes_first_then_the_manifests_order() -> None:
    both = facts("mirage", "hvt", rootfs=BLOCK_ROOT, mount_rootfs=True, block="/disk.img")
    mirage = guests.get("mirage")
    names = device_names(Manifest((Device("data", BLK), Device("storage", BLK))), mirage, both.config)
    assert (names.rootfs, names.block) == ("storage", "data")
    names = device_names(Manifest((Device("b", BLK), Device("a", BLK))), mirage, both.config)
    assert (names.rootfs, names.block) == ("b", "a")
    # the image's block lies in the rootfs handed to the VM: only the view's read-only file is left, and
    # Solo5's tenders open block devices read-write
    with pytest.raises(UkrunError, match="monitor hvt opens every block device read-write, and data can only be "
                                         "attached read-only"):
        plan(declaring(both, ("data", BLK), ("storage", BLK)))
    image_only = plan(declaring(facts("mirage", "spt", block="/disk.img"), ("storage", BLK)))
    assert "--block:storage=/run/b/c1/rootfs/disk.img" in image_only.argv


def test_rumprun_takes_its_own_names_when_declared() -> None:
    f = networked("rumprun", "hvt", rootfs=EXT2_ROOT, mount_rootfs=True)
    p = plan(declaring(f, ("tap", NET), ("rootfs", BLK)))
    assert f"--block:rootfs={SNAP}" in p.argv and f"--net:tap={TAP}" in p.argv and '"net":' in p.cmdline


@pytest.mark.parametrize(("kw", "message"), [
    ({"rootfs": BLOCK_ROOT, "mount_rootfs": True},
     "the unikernel's Solo5 manifest declares 0 block device(s) (none), and the container asks for 1: the "
     "container's rootfs (mountRootfs); drop it or use a unikernel built with a block device"),
    ({"block": "/disk.img"}, "asks for 1: the image's block /disk.img (com.urunc.unikernel.block); drop it"),
])
def test_a_block_device_with_none_declared_is_refused_naming_the_fix(kw: dict[str, object], message: str) -> None:
    with pytest.raises(PlanError, match=message.replace("(", r"\(").replace(")", r"\)")):
        plan(declaring(facts("mirage", "spt", **kw), ("service", NET)))  # type: ignore[arg-type]


def test_more_blocks_than_declared_and_a_declared_block_left_empty_are_refused() -> None:
    both = facts("mirage", "hvt", rootfs=BLOCK_ROOT, mount_rootfs=True, block="/disk.img")
    with pytest.raises(PlanError, match=r"declares 1 block device\(s\) \(only storage\), and the container asks "
                                        r"for 2: .* drop one of them"):
        plan(declaring(both, ("storage", BLK)))
    with pytest.raises(PlanError, match=r"declares block device\(s\) storage that the container does not fill, and "
                                        "its tender refuses to start while a declared device is unattached: set "
                                        r"com.urunc.unikernel.mountRootfs \(on a block snapshotter\) or "
                                        "com.urunc.unikernel.block"):
        plan(declaring(facts("mirage", "spt"), ("storage", BLK)))


def test_a_network_namespace_without_a_declared_net_device_gives_no_network_and_says_so() -> None:
    p = plan(declaring(networked("mirage", "spt")))
    assert p.network is None and p.netns == "" and not [a for a in p.argv if a.startswith("--net")]
    assert p.cmdline == "/app run"
    assert p.notes == ("the unikernel's Solo5 manifest declares no net device: it gets no network, and its network "
                       "namespace is left alone",)
    assert plan(declaring(facts("mirage", "spt"))).notes == (
        "the spec names no network namespace: the guest gets no network",)


def test_a_declared_net_device_without_a_network_and_two_net_devices_are_refused() -> None:
    with pytest.raises(PlanError, match=r"declares net device service0, but the container has no network \(the "
                                        r"spec names no network namespace: the guest gets no network\) and its "
                                        "tender refuses to start while a declared device is unattached: run it in a "
                                        "network namespace with a default route"):
        plan(declaring(facts("mirage", "hvt"), ("service0", NET)))
    with pytest.raises(PlanError, match=r"declares 2 net devices \(service, service1\), but ukrun gives a "
                                        "container one network"):
        plan(declaring(networked("mirage", "hvt"), ("service1", NET), ("service", NET)))


def test_the_plan_shows_the_manifests_names_in_json() -> None:
    p = plan(declaring(networked("mirage", "spt"), ("service0", NET)))
    doc = p.to_json()
    assert f"--net:service0={TAP}" in doc["argv"] and doc["network"]["address"] == "192.0.2.2/24"


def test_a_kernel_without_a_manifest_is_refused_after_the_plans_own_checks() -> None:
    wrong = NotSolo5Unikernel("the kernel /kernel is not a Solo5 unikernel (no Solo5 manifest note), ...")
    with pytest.raises(NotSolo5Unikernel, match="is not a Solo5 unikernel"):
        plan(facts("mirage", "spt")._replace(manifest=wrong))
    # A Unikraft kernel given to spt is told that its guest type does not run there, not that it lacks a manifest.
    with pytest.raises(PlanError, match="a unikraft guest does not run on spt"):
        plan(facts("unikraft", "spt")._replace(manifest=wrong))
    with pytest.raises(PlanError, match="binary 'solo5-hvt' is not installed"):
        plan(facts("mirage", "hvt", installed=False)._replace(manifest=wrong))


# urunc v0.8's solo5NetDev and solo5BlkDev annotations (its unikernels/mirage.go: the block names map onto the
# block devices in order; MirageOS's flags carry a device name other than `service` as their prefix)
def named(f: Facts, net: str = "", blk: str = "") -> Facts:
    return f._replace(config=f.config._replace(net_dev=net, blk_dev=blk))


def test_solo5_net_dev_names_the_net_device_and_prefixes_mirages_flags() -> None:
    p = plan(declaring(named(networked("mirage", "hvt", args=("--port=80",)), net="service0"), ("service0", NET)))
    assert f"--net:service0={TAP}" in p.argv and f"--net-mac:service0={MAC}" in p.argv
    assert p.cmdline == "--service0-ipv4=192.0.2.2/24 --service0-ipv4-gateway=192.0.2.1 --port=80"
    assert not [n for n in p.notes if "net device" in n]
    qemu = plan(named(networked("mirage", "qemu", args=()), net="mgmt"))  # no manifest: the flags still say it
    assert qemu.cmdline == "--mgmt-ipv4=192.0.2.2/24 --mgmt-ipv4-gateway=192.0.2.1"


def test_solo5_blk_dev_names_the_block_devices_in_order() -> None:
    both = named(facts("mirage", "hvt", rootfs=BLOCK_ROOT, mount_rootfs=True, block="/disk.img"), blk="a, b")
    names = device_names(Manifest((Device("b", BLK), Device("a", BLK))), guests.get("mirage"), both.config)
    assert (names.rootfs, names.block) == ("a", "b")
    names = device_names(Manifest((Device("b", BLK), Device("a", BLK))), guests.get("mirage"),
                         both.config._replace(blk_dev="a"))
    assert (names.rootfs, names.block) == ("a", "b")  # the devices beyond the list keep the manifest's order
    p = plan(declaring(named(facts("mirage", "spt", block="/disk.img"), blk="disk1"), ("disk1", BLK)))
    assert "--block:disk1=/run/b/c1/rootfs/disk.img" in p.argv


@pytest.mark.parametrize(("net", "blk", "message"), [
    ("tap0", "", "com.urunc.unikernel.solo5NetDev names net device 'tap0', which the unikernel's Solo5 manifest does "
                 "not declare (it declares service): fix the annotation or use the unikernel it was made for"),
    ("", "data", "com.urunc.unikernel.solo5BlkDev names block device 'data', which the unikernel's Solo5 manifest does "
                 "not declare (it declares storage)"),
    ("", "storage,storage", "com.urunc.unikernel.solo5BlkDev='storage,storage' names a block device twice"),
])
def test_a_name_the_manifest_does_not_declare_is_refused(net: str, blk: str, message: str) -> None:
    f = named(networked("mirage", "hvt", rootfs=BLOCK_ROOT, mount_rootfs=True), net=net, blk=blk)
    with pytest.raises(PlanError, match=re.escape(message)):
        plan(declaring(f, ("service", NET), ("storage", BLK)))
