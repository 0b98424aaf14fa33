import os
import re
from pathlib import Path

import pytest

from ukrun.artifacts import paths
from ukrun.artifacts.paths import read_file, resolve_file
from ukrun.errors import ImageError, MissingInImage, UnsafePath
from ukrun.runtime.rootfs import write_guest_files


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
    assert resolve_file(root, "/slash/boot/vmlinuz-6.1", "kernel").path == root / "boot" / "vmlinuz-6.1"
    os.symlink("boot", root / "b")  # `..` after a link leaves the folder the link led to, as the kernel does
    assert resolve_file(root, "/b/../boot/vmlinuz", "kernel").path == root / "boot" / "vmlinuz-6.1"


def test_dotdot_above_root_is_refused(root: Path) -> None:
    with pytest.raises(UnsafePath, match="climbs above"):
        resolve_file(root, "/boot/escape", "kernel")
    with pytest.raises(UnsafePath, match="climbs above"):
        resolve_file(root, "/../../etc/passwd", "kernel")


def test_absolute_link_never_reads_the_host(root: Path) -> None:
    # /etc/shadow exists on the host, not in this image: resolved inside the image, it is missing.
    with pytest.raises(ImageError, match="does not exist in the image"):
        resolve_file(root, "/boot/shadow", "kernel")


def test_link_loops_and_non_files(root: Path) -> None:
    with pytest.raises(UnsafePath, match="symlinks"):
        resolve_file(root, "/loop1", "kernel")
    with pytest.raises(ImageError, match="not a regular file"):
        resolve_file(root, "/boot", "kernel")
    with pytest.raises(ImageError, match="not a folder"):
        resolve_file(root, "/boot/vmlinuz-6.1/x", "kernel")
    with pytest.raises(ImageError, match="absolute"):
        resolve_file(root, "boot/vmlinuz", "kernel")


def test_read_file(root: Path) -> None:
    assert read_file(root, "/vmlinuz", 10, "kernel") == b"kernel"
    with pytest.raises(ImageError, match="limit"):
        read_file(root, "/boot/vmlinuz-6.1", 3, "kernel")


def test_names_too_long_for_a_file_system_are_the_images_error(root: Path) -> None:
    with pytest.raises(ImageError, match="component of 300 bytes") as exc:
        resolve_file(root, "/boot/" + "a" * 300, "kernel")
    assert str(root) not in str(exc.value)  # never the host's path
    with pytest.raises(ImageError, match="over the 4096"):
        resolve_file(root, "/a" * 2100, "kernel")
    os.symlink("/" + "b" * 256, root / "longlink")
    with pytest.raises(ImageError, match="target of symlink 'longlink'"):
        resolve_file(root, "/longlink", "kernel")


def test_a_missing_path_is_its_own_error(root: Path) -> None:
    with pytest.raises(MissingInImage):
        resolve_file(root, "/nothing/here", "kernel")


def test_a_device_or_fifo_is_refused_without_being_opened(root: Path) -> None:
    os.mkfifo(root / "fifo")  # opening a FIFO for reading would block: it must not be opened at all
    with pytest.raises(ImageError, match="not a regular file"):
        read_file(root, "/fifo", 10, "initrd")


# -- writing into a rootfs: folders resolved and made inside it, links replaced, never followed ----------------
@pytest.fixture
def host_folder(tmp_path: Path) -> Path:
    """A host folder an image's links name; nothing may be written in it."""
    h = tmp_path / "host"
    h.mkdir()
    (h / "hosts").write_text("the host's own")
    return h


def _tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): p.read_text() if p.is_file() else "" for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize("target", ["{host}", "/usr/..{host}", "usr/../{host}", "/usr/{climb}{host}"])
def test_files_are_written_where_the_guest_finds_them_and_never_through_a_link_to_the_host(
        root: Path, host_folder: Path, target: str) -> None:
    (root / "usr").mkdir()
    os.rmdir(root / "etc")
    os.symlink(target.format(host=host_folder, climb="../" * 5), root / "etc")
    before = _tree(host_folder)
    if "climb" in target:
        with pytest.raises(UnsafePath, match="climbs above the image's root") as exc:
            write_guest_files(root, {"/etc/hosts": b"pod"})
        assert str(root) not in str(exc.value)
    else:
        write_guest_files(root, {"/etc/hosts": b"pod", "/etc/deeper/file": b"deep"})
        inside = root / str(host_folder).lstrip("/")
        assert (inside / "hosts").read_bytes() == b"pod" and (inside / "deeper" / "file").read_bytes() == b"deep"
        assert resolve_file(root, "/etc/hosts", "file").path == inside / "hosts"  # as the guest reads it
    assert _tree(host_folder) == before


def test_a_link_at_the_files_own_name_is_replaced_not_followed(root: Path, host_folder: Path) -> None:
    os.symlink(str(host_folder / "hosts"), root / "etc" / "hosts")
    os.symlink(str(host_folder / "hosts"), root / "etc" / ".ukrun.tmp")  # the temporary name, planted
    write_guest_files(root, {"/etc/hosts": b"pod"})
    assert not (root / "etc" / "hosts").is_symlink() and (root / "etc" / "hosts").read_bytes() == b"pod"
    assert not os.path.lexists(root / "etc" / ".ukrun.tmp")
    assert (host_folder / "hosts").read_text() == "the host's own"


def test_a_folder_swapped_for_a_link_after_its_walk_is_not_followed(root: Path, host_folder: Path) -> None:
    root_fd = paths.open_root(root)
    found = paths.walk(root_fd, "/etc", "folder")
    os.close(root_fd)
    try:
        os.rename(root / "etc", root / "etc.old")
        os.symlink(str(host_folder), root / "etc")  # what a racing process would do
        paths.replace(found.fd, "hosts", b"pod", "/etc/hosts")
    finally:
        os.close(found.fd)
    assert (root / "etc.old" / "hosts").read_bytes() == b"pod"  # the folder that was checked
    assert (host_folder / "hosts").read_text() == "the host's own"


def test_a_copy_may_not_land_in_ukruns_folder_or_the_guests_proc_through_a_link(root: Path, host_folder: Path) -> None:
    os.symlink("/.ukrun", root / "x")
    os.symlink(f"/proc/1/root{host_folder}", root / "cfg")
    (root / "proc").mkdir()
    with pytest.raises(ImageError, match=re.escape("'/x/process.sh' resolves, through the image's links, to "
                                                   "'/.ukrun/process.sh' in /.ukrun")):
        write_guest_files(root, {"/.ukrun/process.sh": b"ukrun's", "/x/process.sh": b"pod"})
    with pytest.raises(ImageError, match=r"to '/proc/1/root/.*' in /proc, where the guest's kernel mounts") as exc:
        write_guest_files(root, {"/cfg/authorized_keys": b"pod"})
    assert str(root) not in str(exc.value)
    with pytest.raises(ImageError, match="'/sys/x' lies in /sys, where the guest's kernel mounts"):
        write_guest_files(root, {"/sys/x": b"pod"})
    assert (root / ".ukrun" / "process.sh").read_bytes() == b"ukrun's"
    assert _tree(host_folder) == {"hosts": "the host's own"}


def test_entries_list_links_without_entering_them(tmp_path: Path, host_folder: Path) -> None:
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "sub" / "f").write_text("f")
    (tmp_path / "d" / "out").symlink_to(host_folder)
    fd = paths.open_root(tmp_path / "d")
    try:
        assert paths.entries(fd, 10) == ["/out", "/sub", "/sub/f"]
        assert paths.entries(fd, 2) is None
        with pytest.raises(MissingInImage):  # the link resolves inside the folder, where it names nothing
            paths.open_file(fd, "/out/hosts", "file")
    finally:
        os.close(fd)
