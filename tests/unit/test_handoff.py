"""The rule that decides whether a VM gets the rootfs's device: only the container's own snapshot."""

from __future__ import annotations

from ukrun.runtime.handoff import Handoff, RootfsInfo, RootfsKind, SnapshotMount, decide

LOOP = RootfsInfo("/b/rootfs", RootfsKind.BLOCKFILE, "ext4", "/dev/loop3", "7:3", "/",
                  "/var/lib/containerd/blockfile/snapshots/12", (2049, 777))
SNAPSHOT_FILE = SnapshotMount("ext4", "/var/lib/containerd/blockfile/snapshots/12", ("rw", "loop"), "", (2049, 777))
DM = RootfsInfo("/b/rootfs", RootfsKind.DEVMAPPER, "ext4", "/dev/mapper/pool-snap-5", "253:5")
DM_SNAPSHOT = SnapshotMount("ext4", "/dev/mapper/pool-snap-5", (), "253:5")


def test_the_containers_own_loop_backed_snapshot_is_handed_over_as_its_file() -> None:
    d = decide(LOOP, (SNAPSHOT_FILE,))
    assert d.handoff is Handoff.BLOCK and d.device == LOOP.backing_file
    assert "blockfile" in d.rule


def test_a_loop_device_over_another_file_is_a_folder() -> None:
    other = SnapshotMount("ext4", "/var/lib/containerd/blockfile/snapshots/13", ("rw", "loop"), "", (2049, 778))
    d = decide(LOOP, (other,))
    assert d.handoff is Handoff.FOLDER and not d.device and "not the container's snapshot" in d.rule


def test_same_path_without_loop_option_is_not_proof() -> None:
    assert decide(LOOP, (SnapshotMount("ext4", SNAPSHOT_FILE.source, ("rw",), "", (2049, 777)),)).handoff \
        is Handoff.FOLDER


def test_a_bind_of_a_subfolder_never_hands_over_its_device() -> None:
    sub = RootfsInfo("/b/rootfs", RootfsKind.BLOCK, "ext4", "/dev/zram0", "252:0", "/containers/c1")
    d = decide(sub, (SnapshotMount("ext4", "/dev/zram0", (), "252:0"),))
    assert d.handoff is Handoff.FOLDER and "subfolder /containers/c1" in d.rule


def test_without_a_snapshot_nothing_is_proven() -> None:
    whole = RootfsInfo("/", RootfsKind.BLOCK, "ext4", "/dev/vda1", "254:1")
    d = decide(whole, None)
    assert d.handoff is Handoff.FOLDER and "no snapshot" in d.rule


def test_devmapper_device_must_be_the_snapshots() -> None:
    assert decide(DM, (DM_SNAPSHOT,)).handoff is Handoff.BLOCK
    assert decide(DM, (DM_SNAPSHOT,)).device == DM.source
    foreign = SnapshotMount("ext4", "/dev/mapper/pool-snap-6", (), "253:6")
    assert decide(DM, (foreign,)).handoff is Handoff.FOLDER


def test_several_snapshot_mounts_or_a_folder_are_folders() -> None:
    assert decide(DM, (DM_SNAPSHOT, DM_SNAPSHOT)).handoff is Handoff.FOLDER
    folder = RootfsInfo("/b/rootfs", RootfsKind.DIR, "overlay", "overlay", "0:55")
    d = decide(folder, (SnapshotMount("overlay", "overlay", ("lowerdir=/a",)),))
    assert d.handoff is Handoff.FOLDER and "overlay" in d.rule
