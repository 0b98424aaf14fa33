import os
from pathlib import Path

import pytest

from ukrun.artifacts.paths import read_file, resolve, resolve_file
from ukrun.errors import ImageError, MissingInImage, UnsafePath


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    (r / "boot").mkdir(parents=True)
    (r / "boot" / "vmlinuz-6.1").write_bytes(b"kernel")
    (r / "etc").mkdir()
    os.symlink("vmlinuz-6.1", r / "boot" / "vmlinuz")
    os.symlink("/boot/vmlinuz", r / "vmlinuz")  # absolute: resolved inside the root
    os.symlink("../../../../../../etc/passwd", r / "boot" / "escape")
    os.symlink("/etc/shadow", r / "boot" / "shadow")
    os.symlink("loop2", r / "loop1")
    os.symlink("loop1", r / "loop2")
    os.symlink("/", r / "slash")
    return r


def test_relative_and_absolute_links_stay_inside(root: Path) -> None:
    assert resolve_file(root, "/boot/vmlinuz", "kernel").path == root / "boot" / "vmlinuz-6.1"
    res = resolve_file(root, "/vmlinuz", "kernel")
    assert res.path == root / "boot" / "vmlinuz-6.1" and res.followed_links == 2
    assert resolve(root, "/slash/boot/vmlinuz-6.1").path == root / "boot" / "vmlinuz-6.1"


def test_dotdot_above_root_is_refused(root: Path) -> None:
    with pytest.raises(UnsafePath, match="climbs above"):
        resolve(root, "/boot/escape")
    with pytest.raises(UnsafePath, match="climbs above"):
        resolve(root, "/../../etc/passwd")


def test_absolute_link_never_reads_the_host(root: Path) -> None:
    # /etc/shadow exists on the host, not in this image: resolved inside the image, it is missing.
    with pytest.raises(ImageError, match="does not exist in the image"):
        resolve_file(root, "/boot/shadow", "kernel")


def test_link_loops_and_non_files(root: Path) -> None:
    with pytest.raises(UnsafePath, match="symlinks"):
        resolve(root, "/loop1")
    with pytest.raises(ImageError, match="not a regular file"):
        resolve_file(root, "/boot", "kernel")
    with pytest.raises(ImageError, match="not a folder"):
        resolve(root, "/boot/vmlinuz-6.1/x")
    with pytest.raises(ImageError, match="absolute"):
        resolve(root, "boot/vmlinuz")


def test_read_file(root: Path) -> None:
    assert read_file(root, "/vmlinuz", 10, "kernel") == b"kernel"
    with pytest.raises(ImageError, match="limit"):
        read_file(root, "/boot/vmlinuz-6.1", 3, "kernel")


def test_names_too_long_for_a_file_system_are_the_images_error(root: Path) -> None:
    with pytest.raises(ImageError, match="component of 300 bytes") as exc:
        resolve(root, "/boot/" + "a" * 300, "kernel")
    assert str(root) not in str(exc.value)  # never the host's path
    with pytest.raises(ImageError, match="over the 4096"):
        resolve(root, "/a" * 2100, "kernel")
    os.symlink("/" + "b" * 256, root / "longlink")
    with pytest.raises(ImageError, match="target of symlink 'longlink'"):
        resolve(root, "/longlink", "kernel")


def test_a_missing_path_is_its_own_error(root: Path) -> None:
    with pytest.raises(MissingInImage):
        resolve(root, "/nothing/here", "kernel")


def test_a_device_or_fifo_is_refused_without_being_opened(root: Path) -> None:
    os.mkfifo(root / "fifo")  # opening a FIFO for reading would block: it must not be opened at all
    with pytest.raises(ImageError, match="not a regular file"):
        read_file(root, "/fifo", 10, "initrd")
