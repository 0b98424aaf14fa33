"""Golden plans for the spec's bind mounts (runtime.mountplan): files and folders copied into a block rootfs
or an archive appended to an initrd root, notes where a guest cannot take them, and block volumes handed
over only when allowed and unshared. The facts' side (which mounts are files, folders or volumes; a
folder read without leaving it) is checked on real files in a temporary folder."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.unit.test_plan import BLOCK_ROOT, DIR_ROOT, EXT2_ROOT, STATE, facts
from ukrun import config as configmod
from ukrun import cpio
from ukrun.errors import ConfigError, PlanError
from ukrun.host import mountinfo
from ukrun.runtime import facts as gather
from ukrun.runtime import mountplan as mp
from ukrun.runtime.mountplan import BoundMount, MountFile, MountKind, VolumeFacts
from ukrun.runtime.plan import Facts, FilesTarget, LaunchPlan, plan
from ukrun.runtime.spec import Spec, SpecMount
from ukrun.unikernels.base import RootMode

VOL = VolumeFacts("/dev/mapper/vol-a", "/dev/dm-3", "ext4", True, ("/mnt/vol-a",), False)


def file(destination: str, data: bytes, source: str = "/host/file") -> BoundMount:
    return BoundMount(destination, source, MountKind.FILE, (MountFile("/", data, len(data)),))


def tree(destination: str, files: dict[str, bytes], skipped: str = "") -> BoundMount:
    return BoundMount(destination, "/host/dir", MountKind.TREE,
                      tuple(MountFile(p, d, len(d)) for p, d in files.items()), skipped)


def volume(destination: str = "/data", **changes: object) -> BoundMount:
    return BoundMount(destination, "/mnt/vol-a", MountKind.VOLUME, volume=VOL._replace(**changes))  # type: ignore[arg-type]


def with_mounts(f: Facts, *mounts: BoundMount) -> Facts:
    return f._replace(mounts=mounts)


def block_linux(*mounts: BoundMount, initrd: str = "/initrd", **kw: object) -> Facts:
    f = facts("linux", "qemu", rootfs=BLOCK_ROOT, mount_rootfs=True, initrd=initrd, **kw)  # type: ignore[arg-type]
    return with_mounts(f, *mounts)


def mount_notes(p: LaunchPlan) -> tuple[str, ...]:
    """The plan's notes about the spec's mounts (not the network's, nor the folder share's choice)."""
    return tuple(n for n in p.notes if "network" not in n and not n.startswith("the rootfs folder goes over"))


# -- files and folders -------------------------------------------------------------------------------------
def test_files_and_folders_are_copied_into_a_block_rootfs_at_their_destinations() -> None:
    p = plan(block_linux(file("/dev/termination-log", b""), file("/app/conf", b"a=1\n"),
                         tree("/var/run/secrets/app", {"/token": b"t", "/..2026/token": b"t"}),
                         file("/etc/hosts", b"127.0.0.1 localhost\n")))
    assert p.files_target is FilesTarget.ROOTFS
    files = dict(p.guest_files)
    assert files["/app/conf"] == b"a=1\n" and files["/dev/termination-log"] == b""
    assert files["/var/run/secrets/app/token"] == b"t" and files["/var/run/secrets/app/..2026/token"] == b"t"
    assert files["/etc/hosts"] == b"127.0.0.1 localhost\n"
    assert files["/.ukrun/process.sh"].startswith(b"# written by ukrun")
    assert not mount_notes(p) and p.joined_initrd is None


def test_a_later_mount_over_the_same_destination_wins_as_mounts_stack() -> None:
    p = plan(block_linux(file("/app/conf", b"first"), file("/app/./conf", b"second")))
    assert dict(p.guest_files)["/app/conf"] == b"second"


@pytest.mark.parametrize(("destination", "needle"), [
    ("/app/../../etc/passwd", "not an absolute path inside the guest (no '..')"),
    ("relative/conf", "not an absolute path inside the guest"),
    ("/.ukrun/process.sh", "lies in /.ukrun, which holds ukrun's own files"),
    ("//.ukrun/x", "lies in /.ukrun"),  # what the kernel reads as /.ukrun/x
    ("//.ukrun", "lies in /.ukrun"),
    ("/./.ukrun/x", "lies in /.ukrun"),
    ("///.ukrun//./x", "lies in /.ukrun"),
    ("/a/../.ukrun/x", "no '..'"),
])
def test_destinations_that_leave_the_root_or_hit_ukruns_files_are_refused(destination: str, needle: str) -> None:
    with pytest.raises(PlanError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        plan(block_linux(file(destination, b"x")))


def test_files_over_the_copy_limit_are_refused_and_a_folder_over_it_is_left_out_with_a_note() -> None:
    big = BoundMount("/big", "/host/big", MountKind.FILE, (MountFile("/", b"", mp.FILES_LIMIT + 1),))
    with pytest.raises(PlanError, match="over the 16777216 that ukrun copies into a guest"):
        plan(block_linux(big))
    half = BoundMount("/half", "/host/half", MountKind.FILE, (MountFile("/", b"h", mp.FILES_LIMIT // 2 + 1),))
    folder = BoundMount("/tree", "/host/dir", MountKind.TREE, (MountFile("/f", b"", mp.FILES_LIMIT // 2),))
    p = plan(block_linux(folder, half))
    assert "/half" in dict(p.guest_files) and "/tree/f" not in dict(p.guest_files)
    assert mount_notes(p) == ("the folder mounted at /tree is not copied into the guest: its 8388608 bytes would pass "
                       "the 16777216-byte limit of copies",)
    p = plan(block_linux(tree("/many", {}, skipped="it holds more than 1000 entries")))
    assert mount_notes(p) == ("the folder mounted at /many is not copied into the guest: it holds more than "
                              "1000 entries",)


def test_a_linux_initrd_root_gets_the_files_as_an_archive_appended_to_its_initrd() -> None:
    f = with_mounts(facts("linux", "qemu", initrd="/initrd"), file("/app/conf", b"a=1\n"), tree("/s", {"/k": b"v"}))
    p = plan(f)
    assert p.root is RootMode.INITRD and p.files_target is FilesTarget.NONE
    assert p.joined_initrd is not None and p.joined_initrd.image == "/views/v/initrd"
    assert p.initrds == (f"{STATE}/initrd",) and p.argv[p.argv.index("-initrd") + 1] == f"{STATE}/initrd"
    assert p.joined_initrd.appended == cpio.archive({"/app/conf": b"a=1\n", "/s/k": b"v"})
    assert p.to_json()["joined_initrd"]["appended_bytes"] == len(p.joined_initrd.appended)


def test_an_appended_archive_unpacks_with_its_folders(tmp_path: Path) -> None:
    data = cpio.archive({"/app/conf": b"a=1\n", "/etc/x/y/z": b"zz"})
    assert len(data) % 4 == 0
    subprocess.run(["cpio", "-id", "--quiet"], input=data, cwd=tmp_path, check=True)
    assert (tmp_path / "app" / "conf").read_bytes() == b"a=1\n" and (tmp_path / "etc/x/y/z").read_bytes() == b"zz"
    assert oct((tmp_path / "app").stat().st_mode & 0o777) == "0o755"


@pytest.mark.parametrize(("f", "why"), [
    (facts("unikraft", "qemu", initrd="/initrd"), "a unikraft guest is not known to unpack a second archive"),
    (facts("linux", "qemu", rootfs=DIR_ROOT, mount_rootfs=True), "ukrun writes nothing into a folder rootfs"),
    (facts("mirage", "hvt", rootfs=BLOCK_ROOT, mount_rootfs=True), "a mirage guest takes its rootfs device raw"),
    (facts("mewz", "qemu"), "the guest has no root file system to hold them"),
])
def test_guests_that_cannot_take_the_copies_get_a_note_saying_they_were_not_delivered(f: Facts, why: str) -> None:
    p = plan(with_mounts(f, file("/app/conf", b"x"), tree("/s", {"/k": b"v"})))
    assert p.joined_initrd is None and "/app/conf" not in dict(p.guest_files)
    assert mount_notes(p)[0].startswith(f"the spec's bind mounts /app/conf, /s are not copied into the guest: {why}")


# -- block volumes -----------------------------------------------------------------------------------------
def test_an_allowed_unshared_block_volume_is_attached_and_mounted_by_the_guest() -> None:
    p = plan(block_linux(volume("/data")))
    assert [(b.id, b.path) for b in p.blocks] == [("rootfs", BLOCK_ROOT.backing_file), ("vol0", "/dev/mapper/vol-a")]
    assert "-drive" in p.argv and "file=/dev/mapper/vol-a,format=raw,if=none,id=vol0,cache=none,aio=threads" in p.argv
    assert "virtio-blk-pci,drive=vol0,serial=vol0" in p.argv
    assert " ukrun.blocks=vol0:/data " in p.cmdline
    assert p.volumes == (mp.Volume("vol0", "/dev/mapper/vol-a", "/mnt/vol-a", "/data"),)
    assert p.to_json()["volumes"] == [{"id": "vol0", "device": "/dev/mapper/vol-a", "source": "/mnt/vol-a",
                                       "destination": "/data"}]


def test_urunit_mounts_a_block_volume_from_its_configuration() -> None:
    p = plan(block_linux(volume("/srv"), initrd="", args=("/urunit", "/bin/app")))
    (extra,) = [data for path, data in p.files if path.endswith("guest-initrd")]
    assert b"UBS\nID:vol0\nMP:/srv\nUBE\n" in extra


@pytest.mark.parametrize(("changes", "needle"), [
    ({"allowed": False}, "block volume /dev/mapper/vol-a (mounted at /mnt/vol-a, the spec's mount at /data) is not "
                         "allowed: a VM gets a host device only when [volumes] block_devices in ukrun's "
                         "configuration names it"),
    ({"host_root": True}, "holds the host's root file system"),
    ({"mounted_at": ("/mnt/vol-a", "/srv/other")}, "is also mounted at /srv/other: unmount it there first"),
    ({"snapshot": "blockfile snapshot 7 of namespace default"}, "backs blockfile snapshot 7 of namespace default"),
    ({"autoclear": True}, "goes away at its unmount (autoclear)"),
    ({"fstype": "xfs"}, "holds xfs, and a linux guest mounts block volumes of ext2, ext3, ext4"),
])
def test_a_block_volume_that_is_not_provably_safe_is_refused_naming_device_mount_and_fix(
        changes: dict[str, object], needle: str) -> None:
    with pytest.raises(PlanError) as info:
        plan(block_linux(volume("/data", **changes)))
    assert needle in str(info.value)
    assert "/dev/mapper/vol-a" in str(info.value) and "/data" in str(info.value)


def test_block_volumes_are_refused_for_guests_that_mount_none_and_at_unspeakable_destinations() -> None:
    with pytest.raises(PlanError, match="a rumprun guest mounts block volumes of none"):
        plan(with_mounts(facts("rumprun", "hvt", rootfs=EXT2_ROOT, mount_rootfs=True), volume()))
    with pytest.raises(PlanError, match="holds a space, comma or colon"):
        plan(block_linux(volume("/da ta")))
    with pytest.raises(PlanError, match="is named by two mounts"):
        plan(block_linux(volume("/a"), volume("/b")))


def test_allowed_matches_the_device_its_node_and_the_nodes_the_patterns_resolve_to() -> None:
    assert mp.allowed("/dev/mapper/vol-a", "/dev/dm-3", ("/dev/mapper/vol-*",), ())
    assert mp.allowed("/dev/mapper/vol-a", "/dev/dm-3", ("/dev/dm-[0-9]",), ())
    assert mp.allowed("/dev/mapper/x", "/dev/dm-3", ("/dev/disk/by-id/dm-name-x",), ("/dev/dm-3",))
    assert not mp.allowed("/dev/mapper/vol-a", "/dev/dm-3", (), ())
    assert not mp.allowed("/dev/loop1", "/dev/loop1", ("/dev/loop1?",), ())


def test_the_volumes_setting_is_read_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[volumes]\nblock_devices = ["/dev/mapper/vol-*", "/dev/disk/by-id/x"]\n')
    assert configmod.load(path).block_devices == ("/dev/mapper/vol-*", "/dev/disk/by-id/x")
    path.write_text('[volumes]\nblock_devices = "/dev/sda"\n')
    with pytest.raises(ConfigError, match=r"\[volumes\] block_devices must be a list of absolute paths"):
        configmod.load(path)


# -- facts: what each bind mount is, read without leaving it -----------------------------------------------
def test_facts_read_files_and_folders_and_never_follow_a_link_out_of_a_folder(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    conf.write_text("c")
    secret = tmp_path / "secret"
    (secret / "..2026").mkdir(parents=True)
    (secret / "..2026" / "token").write_text("t")
    (secret / "..data").symlink_to("..2026")
    (secret / "token").symlink_to("..data/token")
    (secret / "abs").symlink_to("/token")  # absolute: restarts at the folder's root, which has a /token
    (secret / "out").symlink_to(str(conf))  # names a host file: resolved inside the folder, missing there
    (secret / "up").symlink_to("../conf")  # climbs out: refused
    os.mkfifo(secret / "fifo")
    mounts = (SpecMount("/etc/app.conf", "bind", str(conf), ("rbind", "ro")),
              SpecMount("/run/s", "none", str(secret), ("rbind",)),
              SpecMount("/proc", "proc", "proc"), SpecMount("/null", "bind", "/dev/null", ("rbind",)))
    found = gather.bound_mounts(Spec(tmp_path, mounts=mounts), (), None, None, mountinfo())
    assert [(m.destination, m.kind) for m in found] == [("/etc/app.conf", MountKind.FILE), ("/run/s", MountKind.TREE)]
    assert found[0].files == (MountFile("/", b"c", 1),)
    assert {f.path: f.data for f in found[1].files} == {"/..2026/token": b"t", "/token": b"t", "/abs": b"t"}


def test_facts_leave_a_large_folder_unread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mp, "TREE_ENTRIES", 3)
    for i in range(4):
        (tmp_path / "d" / str(i)).mkdir(parents=True)
    (found,) = gather.bound_mounts(Spec(tmp_path, mounts=(SpecMount("/d", "bind", str(tmp_path / "d")),)), (), None,
                                   None, mountinfo())
    assert found.kind is MountKind.TREE and found.skipped == "it holds more than 3 entries" and not found.files


def test_volumes_of_an_initrd_root_are_attached_with_a_note_that_only_its_own_init_mounts_them() -> None:
    p = plan(with_mounts(facts("linux", "qemu", initrd="/initrd"), volume("/data")))
    assert [b.id for b in p.blocks] == ["vol0"] and "ukrun.blocks" not in p.cmdline
    assert mount_notes(p) == ("block volumes vol0 are attached, but only the image's own init can mount them: "
                              "ukrun's init contract (ukrun.blocks=) comes with a block or folder rootfs",)


def test_a_file_is_never_written_over_a_folder_of_the_image(tmp_path: Path) -> None:
    from ukrun.errors import ImageError
    from ukrun.runtime.rootfs import write_guest_files

    (tmp_path / "etc" / "hosts").mkdir(parents=True)
    with pytest.raises(ImageError, match="/etc/hosts is a folder in the image"):
        write_guest_files(tmp_path, {"/etc/hosts": b"x"})


def test_nothing_is_mounted_over_the_guests_root() -> None:
    with pytest.raises(PlanError, match="over the guest's root"):
        plan(block_linux(file("/", b"x")))
    with pytest.raises(PlanError, match="a volume cannot be the guest's root"):
        plan(block_linux(volume("/")))


def test_facts_deliver_nothing_from_the_kernels_own_file_systems(tmp_path: Path) -> None:
    mounts = (SpecMount("/cpuinfo", "bind", "/proc/cpuinfo", ("rbind",)),
              SpecMount("/sysblock", "bind", "/sys/block", ("rbind",)))
    assert gather.bound_mounts(Spec(tmp_path, mounts=mounts), (), None, None, mountinfo()) == ()
