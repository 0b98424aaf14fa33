"""Where create reads the artifacts from (artifacts.source): decided from whether containerd manages the
container and whether its rootfs is a snapshot; read in place, nothing is copied or recorded."""

from __future__ import annotations

from pathlib import Path

import pytest

from ukrun import errors
from ukrun.artifacts.source import Source, decide, in_place
from ukrun.containerd.records import ContainerRecord
from ukrun.unikernel import UnikernelConfig

SNAPSHOT = ContainerRecord("c1", "img", "blockfile", "c1")
FOLDER = ContainerRecord("c1", "", "", "")  # Docker's record, or ctr run --rootfs


@pytest.mark.parametrize(("mode", "containerd", "record", "source"), [
    ("shared", True, SNAPSHOT, Source.VIEW),
    ("per-container", True, SNAPSHOT, Source.VIEW),
    ("copy", True, SNAPSHOT, Source.COPY),
    ("shared", True, FOLDER, Source.IN_PLACE),
    ("copy", True, FOLDER, Source.COPY),
    ("shared", True, None, Source.IN_PLACE),
    ("shared", False, None, Source.IN_PLACE),
    ("copy", False, None, Source.IN_PLACE),
])
def test_the_source_follows_containerd_and_its_snapshot(mode: str, containerd: bool, record: ContainerRecord | None,
                                                         source: Source) -> None:
    assert decide(mode, containerd, record).source is source


@pytest.mark.parametrize(("mode", "source"), [("shared", Source.IN_PLACE), ("per-container", Source.IN_PLACE),
                                               ("copy", Source.COPY)])
def test_a_snapshot_that_never_goes_to_the_vm_is_read_in_place_unless_a_copy_is_asked_for(mode: str,
                                                                                        source: Source) -> None:
    """Without mountRootfs the rootfs stays mounted until delete: a view would cost containerd's calls for nothing."""
    decision = decide(mode, True, SNAPSHOT, rootfs_kept=True)
    assert decision.source is source
    assert source is Source.COPY or "mountRootfs" in decision.reason
    if source is Source.IN_PLACE:  # whatever containerd's record says: create does not even ask for it
        assert decide(mode, True, None, rootfs_kept=True) == decision


def test_the_reason_names_the_case() -> None:
    assert "no containerd manages this container" in decide("shared", False, None).reason
    assert "copy mode needs containerd" in decide("copy", False, None).reason
    assert "names no snapshot" in decide("shared", True, FOLDER).reason


def test_in_place_resolves_inside_the_folder_and_refuses_a_way_out(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    (root / "boot").mkdir(parents=True)
    (root / "boot" / "kernel").write_bytes(b"k")
    (root / "kernel").symlink_to("/boot/kernel")  # absolute: restarts at the image's root, not the host's
    config = UnikernelConfig("linux", "qemu", "/kernel")
    art = in_place("c1", "", config, root, "why")
    assert art.kernel == root / "boot" / "kernel" and art.mode == "in-place" and art.reason == "why"
    assert art.initrd is None and art.bytes_copied == 0
    with pytest.raises(errors.UnsafePath):
        in_place("c1", "", UnikernelConfig("linux", "qemu", "/../etc/passwd"), root, "why")
