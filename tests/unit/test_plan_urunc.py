"""Golden plans for what urunc v0.8.1 does that ukrun follows: urunit's own contract (an initrd root, a
block root, a folder root), the image's block file as the root, the NICs of Hermit and Mewz, FreeBSD on
qemu and firecracker, and hyperlight-unikraft.

Sources of the expectations (facts, not code):
  urunc       pkg/unikontainers/unikernels/linux.go (v0.8: rdinit=, root=/dev/ram0, URUNIT_CONFIG=/urunit.conf
              appended to the initrd; retain_initrd URUNIT_CONFIG=/sys/firmware/initrd otherwise; URUNIT_DEFROUTE),
              rootfs.go chooseRootfs (initrd, then the image's block at "/", then mountRootfs), block.go
              handleExplicitBlockImage (that block's id is `rootfs`), initrd/append.go (a newc member, mode 0400),
              unikernels/hermit_rs.go and mewz.go (virtio-net-pci,disable-legacy=on), unikernels/freebsd.go
              (microvm, vfs.root.mountfrom=, init_path=, the config drive after the other devices, FC_URUNIT_CONFIG),
              hypervisors/hyperlight.go and its CHANGELOG (v0.8.0: simple execution only)
  urunit      README "Urunit configuration file": UES/UEE, UCS/UCE, UBS/UBE
  linux       admin-guide/kernel-parameters (rdinit=, retain_initrd), Documentation/driver-api/early-userspace
              (concatenated newc archives: later members replace earlier ones)
  freebsd     loader.conf(5) vfs.root.mountfrom and init_path; qemu docs/system/i386/microvm.rst (virtio-mmio:
              virtio-*-device, no PCI)
  hyperlight  hyperlight-unikraft's README and --help: <kernel> [--initrd <cpio>] [--memory <size>] [-- <args>]
  firecracker docs/getting-started.md (drives, is_read_only)
"""

from __future__ import annotations

import json

import pytest

from tests.unit.test_plan import BINARIES, BLOCK_ROOT, DIR_ROOT, EXT2_ROOT, SNAP, STATE, TAP, facts, networked
from ukrun.errors import PlanError, UkrunError
from ukrun.network.base import Interface
from ukrun.runtime.mountplan import BoundMount, MountFile, MountKind
from ukrun.runtime.plan import Facts, FilesTarget, plan
from ukrun.unikernels.base import RootMode

URUNIT = ("/urunit", "/app", "hello world")
MAC = "02:42:c0:00:02:02"


def members(archive: bytes) -> dict[str, tuple[int, bytes]]:
    """name -> (mode, data) of a newc archive (or several concatenated), as the kernel reads it."""
    out, i = {}, 0
    while i < len(archive):
        fields = [int(archive[i + 6 + 8 * k:i + 14 + 8 * k], 16) for k in range(13)]
        mode, size, namesize = fields[1], fields[6], fields[11]
        start = i + 110
        name = archive[start:start + namesize - 1].decode()
        data_at = start + namesize + (-(110 + namesize) % 4)
        if name != "TRAILER!!!":
            out[name] = (mode, archive[data_at:data_at + size])
        i = data_at + size + (-size % 4)
    return out


def image_block_root(f: Facts) -> Facts:
    return f._replace(config=f.config._replace(block_mount_point="/"))


# -- 1. urunit with an initrd root ---------------------------------------------------------------------------------
def test_urunit_in_an_initrd_root_gets_its_configuration_appended_as_urunit_conf() -> None:
    p = plan(facts("linux", "qemu", initrd="/initrd", args=URUNIT, env=("A=1", "B=two words")))
    assert p.root is RootMode.INITRD
    # urunc's linux.go: no environment on the command line, rdinit= and multi-word arguments in single quotes
    assert p.cmdline == ("panic=-1 console=ttyS0 root=/dev/ram0 rw URUNIT_CONFIG=/urunit.conf quiet loglevel=3 "
                         "rdinit=/urunit -- /app 'hello world'")
    assert p.joined_initrd is not None and p.joined_initrd.image == "/views/v/initrd"
    assert p.initrds == (f"{STATE}/initrd",)  # the image's initrd with the member appended: no second initrd
    mode, data = members(p.joined_initrd.appended)["urunit.conf"]
    assert mode == 0o100400  # as urunc's initrd/append.go writes it: root's to read
    assert data == b"UES\nA=1\nB=two words\nUEE\nUCS\nUID:0\nGID:0\nWD:/\nUCE\nUBS\nUBE\n"
    assert p.guest_files == () and "ukrun." not in p.cmdline and not p.files


def test_urunit_conf_comes_after_the_specs_files_so_it_wins() -> None:
    f = facts("linux", "qemu", initrd="/initrd", args=URUNIT)
    data = b"mine\n"
    conf = BoundMount("/urunit.conf", "/host/x", MountKind.FILE, (MountFile("/", data, len(data)),))
    hosts = BoundMount("/etc/hosts", "/host/hosts", MountKind.FILE, (MountFile("/", b"h\n", 2),))
    p = plan(f._replace(mounts=(hosts, conf)))
    assert p.joined_initrd is not None
    appended = p.joined_initrd.appended
    assert members(appended)["etc/hosts"] == (0o100644, b"h\n")
    assert appended.rindex(b"urunit.conf") > appended.index(b"mine")  # the kernel keeps the last one
    assert members(appended)["urunit.conf"][1].startswith(b"UES\n")


def test_urunit_on_a_block_root_writes_nothing_of_ukrun_into_the_rootfs() -> None:
    p = plan(facts("linux", "qemu", rootfs=BLOCK_ROOT, mount_rootfs=True, args=URUNIT))
    assert p.cmdline == ("panic=-1 console=ttyS0 root=/dev/vda rw retain_initrd URUNIT_CONFIG=/sys/firmware/initrd "
                         "quiet loglevel=3 init=/urunit -- /app 'hello world'")
    assert p.files_target is FilesTarget.NONE and p.guest_files == ()
    assert p.initrds == (f"{STATE}/guest-initrd",)


@pytest.mark.parametrize(("share", "root"), [("9p", "root=fs0 rw rootfstype=9p"),
                                              ("virtiofs", "root=fs0 rw rootfstype=virtiofs")])
def test_urunit_on_a_folder_root_gets_no_files_share(share: str, root: str) -> None:
    f = facts("linux", "qemu", rootfs=DIR_ROOT, mount_rootfs=True, args=URUNIT)
    f = f._replace(annotations=(("io.ukrun.rootfs.share", share),),
                   virtiofsd=f.virtiofsd._replace(path="/usr/libexec/virtiofsd", executable=True))
    p = plan(f)
    assert root in p.cmdline and "retain_initrd URUNIT_CONFIG=/sys/firmware/initrd" in p.cmdline
    assert "ukrun." not in p.cmdline and p.files_target is FilesTarget.NONE
    assert not [a for a in p.argv if "id=ukrun" in a]  # no read-only share of ukrun's files


def test_urunit_is_asked_for_a_default_route_when_the_gateway_is_outside_the_subnet() -> None:
    f = networked("linux", "qemu", rootfs=BLOCK_ROOT, mount_rootfs=True, args=URUNIT)
    assert "URUNIT_DEFROUTE" not in plan(f).cmdline
    routed = f._replace(interface=Interface("eth0", 3, "10.244.1.5", 32, "169.254.1.1", MAC, 1500))
    assert "ip=10.244.1.5::169.254.1.1:255.255.255.255:urunc:eth0:off URUNIT_DEFROUTE=1" in plan(routed).cmdline


def test_a_line_break_cannot_reach_urunits_configuration() -> None:
    with pytest.raises(UkrunError, match="holds a line break"):
        plan(facts("linux", "qemu", rootfs=BLOCK_ROOT, mount_rootfs=True, args=URUNIT, env=("A=1\nUCS",)))


# -- 2. the image's block file as the root ---------------------------------------------------------------------------
def test_an_image_block_at_slash_is_the_root_device_from_the_containers_own_copy() -> None:
    p = plan(image_block_root(facts("linux", "qemu", block="/disk.img")))
    assert p.root is RootMode.IMAGE_BLOCK and not p.handoff_device
    assert "image's block file is the guest's root" in p.root_rule
    assert p.cmdline == "panic=-1 console=ttyS0 root=/dev/vda rw A=1 quiet loglevel=3 init=/app -- run"
    i = p.argv.index("-drive")  # the first, so /dev/vda; urunc names it rootfs
    assert p.argv[i:i + 4] == ("-drive", "file=/run/b/c1/rootfs/disk.img,format=raw,if=none,id=rootfs,cache=none,"
                               "aio=threads", "-device", "virtio-blk-pci,drive=rootfs,serial=rootfs")
    assert p.files_target is FilesTarget.NONE  # ukrun writes nothing into the image's block (nor does urunc)


def test_an_image_block_root_wins_over_mount_rootfs_and_urunit_leaves_it_out_of_its_block_section() -> None:
    f = image_block_root(facts("linux", "qemu", rootfs=BLOCK_ROOT, mount_rootfs=True, block="/disk.img", args=URUNIT))
    p = plan(f)
    assert p.root is RootMode.IMAGE_BLOCK and [b.id for b in p.blocks] == ["rootfs"]
    assert "the container's rootfs is not attached (mountRootfs)" in " ".join(p.notes)
    assert dict(p.files)[f"{STATE}/guest-initrd"].endswith(b"UBS\nUBE\n")


def test_an_image_block_elsewhere_stays_a_data_drive_in_urunits_block_section() -> None:
    p = plan(facts("linux", "qemu", rootfs=BLOCK_ROOT, mount_rootfs=True, block="/disk.img", args=URUNIT))
    assert p.root is RootMode.BLOCK and [b.id for b in p.blocks] == ["rootfs", "annot_vol"]
    assert dict(p.files)[f"{STATE}/guest-initrd"].endswith(b"UBS\nID:annot_vol\nMP:/data\nUBE\n")
    # it lies in the rootfs handed to the VM: read from the image, read-only, and said so
    assert p.blocks[1].path == "/views/v/disk.img" and p.blocks[1].read_only
    assert "file=/views/v/disk.img,format=raw,if=none,id=annot_vol,cache=none,aio=threads,readonly=on" in p.argv


def test_an_image_block_root_on_firecracker() -> None:
    p = plan(image_block_root(facts("linux", "firecracker", block="/disk.img")))
    config = json.loads(dict(p.files)[f"{STATE}/firecracker.json"])
    assert config["drives"] == [{"drive_id": "rootfs", "path_on_host": "/run/b/c1/rootfs/disk.img",
                                 "is_root_device": False, "is_read_only": False}]


# -- 3. the NICs of Hermit and Mewz -----------------------------------------------------------------------------------
@pytest.mark.parametrize("guest", ["hermit", "mewz"])
def test_hermit_and_mewz_get_a_modern_only_nic(guest: str) -> None:
    p = plan(networked(guest, "qemu", initrd="/app.initrd" if guest == "hermit" else ""))
    i = p.argv.index("-netdev")
    assert p.argv[i + 1:i + 4] == (f"tap,id=net0,ifname={TAP},script=no,downscript=no", "-device",
                                   f"virtio-net-pci,netdev=net0,mac={MAC},disable-legacy=on")
    linux = plan(networked("linux", "qemu", rootfs=BLOCK_ROOT, mount_rootfs=True))
    assert f"virtio-net-pci,netdev=net0,mac={MAC}" in linux.argv  # the transitional device, as urunc gives Linux


# -- 4. FreeBSD ------------------------------------------------------------------------------------------------------
def test_freebsd_with_urunit_on_qemu_microvm_from_an_ext2_snapshot() -> None:
    f = networked("freebsd", "qemu", rootfs=EXT2_ROOT, mount_rootfs=True, args=("/urunit", "/bin/sh", "-c", "echo hi"))
    p = plan(f)
    assert p.cmdline == "vfs.root.mountfrom=ext2fs:/dev/vtbd0 init_path=/urunit URUNIT_CONFIG=/dev/vtbd1"
    argv = list(p.argv)
    assert argv[argv.index("-M") + 1] == "microvm,acpi=on,pic=on,pit=on,rtc=on"
    drive = f"{STATE}/guest-config.img"
    assert [a for a in argv if a.startswith("virtio-")] == [
        "virtio-blk-device,drive=rootfs,serial=rootfs", "virtio-blk-device,drive=urunit,serial=urunit",
        f"virtio-net-device,netdev=net0,mac={MAC}"]
    assert f"file={drive},format=raw,if=none,id=urunit,cache=none,aio=threads,readonly=on" in argv
    assert "pvpanic-pci" not in argv and "-initrd" not in argv
    config = dict(p.files)[drive]
    assert len(config) % 512 == 0  # whole sectors: firecracker hides a partial one
    assert config.rstrip(b"\n") == (b"UES\nA=1\nUEE\nUCS\nUID:0\nGID:0\nWD:/\nARC:3\nARV:/bin/sh\nARV:-c\n"
                                    b"ARV:echo hi\nUCE\nUBS\nUBE\nUNS\nIP:192.0.2.2\nGW:192.0.2.1\n"
                                    b"MSK:255.255.255.0\nUNE\nPAD")
    assert p.root is RootMode.BLOCK and p.handoff_device == SNAP


def test_freebsd_over_9p_and_from_its_image_block_on_firecracker() -> None:
    p = plan(facts("freebsd", "qemu", rootfs=DIR_ROOT, mount_rootfs=True, args=("/urunit", "/app")))
    assert p.cmdline == "vfs.root.mountfrom=p9fs:fs0 init_path=/urunit URUNIT_CONFIG=/dev/vtbd0"
    assert "virtio-9p-device,fsdev=fs0,mount_tag=fs0" in p.argv
    fc = plan(image_block_root(facts("freebsd", "firecracker", block="/freebsd.ufs", args=("/urunit", "/app"))))
    assert fc.cmdline == "vfs.root.mountfrom=ufs:/dev/vtbd0 init_path=/urunit URUNIT_CONFIG=/dev/vtbd1"
    drives = json.loads(dict(fc.files)[f"{STATE}/firecracker.json"])["drives"]
    assert [(d["drive_id"], d["path_on_host"], d["is_read_only"]) for d in drives] == [
        ("rootfs", "/run/b/c1/rootfs/freebsd.ufs", False), ("FC_URUNIT_CONFIG", f"{STATE}/guest-config.img", True)]


def test_freebsd_without_urunit_gets_init_path_only_and_what_it_cannot_boot_is_refused() -> None:
    p = plan(networked("freebsd", "qemu", rootfs=EXT2_ROOT, mount_rootfs=True, args=("/sbin/init",)))
    assert p.cmdline == "vfs.root.mountfrom=ext2fs:/dev/vtbd0 init_path=/sbin/init" and len(p.blocks) == 1
    assert ("a freebsd guest learns its address only from urunit's configuration, and its init is not urunit: it "
            "must configure 192.0.2.2/24 itself") in p.notes
    with pytest.raises(UkrunError, match="a freebsd guest needs a root file system"):
        plan(facts("freebsd", "qemu"))
    with pytest.raises(PlanError, match="a freebsd guest cannot boot from a ext4 rootfs; it reads ext2"):
        plan(facts("freebsd", "qemu", rootfs=BLOCK_ROOT, mount_rootfs=True))
    with pytest.raises(PlanError, match="monitor firecracker cannot share folders"):
        plan(facts("freebsd", "firecracker", rootfs=DIR_ROOT, mount_rootfs=True))
    with pytest.raises(PlanError, match="a freebsd guest does not run on cloud-hypervisor"):
        plan(facts("freebsd", "cloud-hypervisor", rootfs=EXT2_ROOT, mount_rootfs=True))


# -- 4. hyperlight-unikraft ------------------------------------------------------------------------------------------
def test_unikraft_on_hyperlight_takes_its_arguments_after_a_double_dash() -> None:
    p = plan(facts("unikraft", "hyperlight-unikraft", initrd="/rootfs.cpio", args=("/hello.py", "a b")))
    assert list(p.argv) == [BINARIES["hyperlight-unikraft"], "/views/v/kernel", "--initrd", "/views/v/initrd",
                            "--memory", "256Mi", "--", "/hello.py", "a b"]


def test_hyperlight_gets_no_network_no_block_and_needs_kvm() -> None:
    p = plan(networked("unikraft", "hyperlight-unikraft", initrd="/rootfs.cpio"))
    assert p.network is None and p.netns == ""
    assert ("monitor hyperlight-unikraft gives the guest no network device: the guest gets no network, and its "
            "network namespace is left alone") in p.notes
    with pytest.raises(PlanError, match=r"monitor hyperlight-unikraft cannot share folders"):
        plan(facts("unikraft", "hyperlight-unikraft", rootfs=DIR_ROOT, mount_rootfs=True))
    with pytest.raises(PlanError, match="monitor hyperlight-unikraft needs KVM"):
        plan(facts("unikraft", "hyperlight-unikraft", initrd="/rootfs.cpio", kvm_device=False))
