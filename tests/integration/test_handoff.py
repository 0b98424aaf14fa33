"""A VM gets a block device only when it is its own container's snapshot (runtime.handoff).

Each case is a rootfs a hostile or careless operator can hand ukrun through `ctr run` and the stock
shim: a bind of a subfolder of a foreign disk, a foreign disk mounted whole, a plain host folder, and
the native snapshotter's bind mount. Each boots its guest over 9p from the folder it was given; the
monitor's argv names no host device and no foreign disk file; the folder is left as it was found.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed import containerd as ctd
from testbed import guest
from testbed import host as tbhost
from tests.integration.runner import UKRUN, Runner
from ukrun import host

APP = """#!/bin/sh
echo "guest root: $(ls / | tr '\\n' ' ')"
exit 5
"""
ANNOTATIONS = {"unikernelType": "linux", "hypervisor": "qemu", "binary": "/boot/vmlinuz",
               "initrd": "/boot/initrd.img", "mountRootfs": "true"}


@pytest.fixture(scope="module")
def rootfs_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A unikernel rootfs as a plain folder: the Debian kernel, the test initrd, busybox, the app."""
    tree = tmp_path_factory.mktemp("tree")
    for d in ("boot", "bin", "app", "proc", "dev", "sys", "tmp", "etc"):
        (tree / d).mkdir()
    shutil.copyfile(guest.kernel(), tree / "boot" / "vmlinuz")
    guest.build_initrd(tree / "boot" / "initrd.img")
    shutil.copyfile(guest.BUSYBOX, tree / "bin" / "busybox")
    (tree / "bin" / "busybox").chmod(0o755)
    (tree / "bin" / "sh").symlink_to("busybox")
    (tree / "app" / "run.sh").write_text(APP)
    (tree / "app" / "run.sh").chmod(0o755)
    return tree


@pytest.fixture
def foreign_disk(tmp_path: Path, rootfs_tree: Path) -> Iterator[Path]:
    """An ext4 disk image, not a containerd snapshot: a rootfs and a host secret at its top, and another
    rootfs in containers/c1."""
    staging = tmp_path / "staging"
    shutil.copytree(rootfs_tree, staging, symlinks=True)
    (staging / "HOST-SECRET.txt").write_text("the host's secret\n")
    shutil.copytree(rootfs_tree, staging / "containers" / "c1", symlinks=True)
    disk = tmp_path / "disk.img"
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(staging), str(disk), "96M"], check=True)
    shutil.rmtree(staging)
    yield disk
    tbhost.unmount_below(tmp_path)
    tbhost.detach_loops_below(tmp_path)


def _fingerprint(folder: Path) -> dict[str, str]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in sorted(dirnames + filenames):
            p = Path(dirpath, name)
            st = p.lstat()
            content = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() and not p.is_symlink() else ""
            out[str(p.relative_to(folder))] = f"{st.st_mode:o} {st.st_size} {st.st_mtime_ns} {content}"
    return out


def _run_and_capture_monitor(runner: Runner, args: list[str]) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Runs `ctr run ARGS` and returns its result and the argv of the qemu it started."""
    cmd = [str(runner.daemon.bin_dir / "ctr"), "--address", runner.daemon.address, "--namespace", runner.ns,
           "run", "--runc-binary", UKRUN, "--runc-root", str(runner.runc_root), "--fifo-dir", str(runner.fifo_dir),
           *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=runner.daemon.env())
    argv: list[str] = []
    deadline = time.monotonic() + 120
    while not argv and proc.poll() is None and time.monotonic() < deadline:
        for pid in tbhost.processes_with_argument(str(runner.runc_root)):
            try:
                words = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
            except OSError:
                continue
            if "qemu-system" in words[0]:
                argv = words
        time.sleep(0.05)
    out, err = proc.communicate(timeout=180)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err), argv


def _annotation_flags() -> list[str]:
    flags = []
    for key, value in ANNOTATIONS.items():
        flags += ["--annotation", f"com.urunc.unikernel.{key}={value}"]
    return flags


def _assert_no_host_device(argv: list[str], forbidden: list[str]) -> None:
    assert argv, "no monitor was seen"
    joined = " ".join(argv)
    assert "-drive" not in argv and "/dev/" not in joined, argv
    for f in forbidden:
        assert f not in joined, (f, argv)


@pytest.fixture
def runner(daemon: ctd.Daemon, ns: str, tmp_path: Path) -> Iterator[Runner]:
    r = Runner(daemon, ns, tmp_path / "runc", daemon.dir.parent / "ukrun-state")
    yield r
    for line in r.ctr("task", "ls").stdout.splitlines()[1:]:
        r.ctr("task", "delete", "--force", line.split()[0])
    for line in r.ctr("containers", "ls", "-q").stdout.split():
        r.ctr("containers", "delete", line)


def test_a_bind_of_a_subfolder_of_a_foreign_disk_is_shared_never_handed_over(
    runner: Runner, tmp_path: Path, foreign_disk: Path
) -> None:
    disk_mount, rootfs = tmp_path / "disk", tmp_path / "bundle-rootfs"
    disk_mount.mkdir()
    rootfs.mkdir()
    host.mount(str(foreign_disk), disk_mount, "ext4", ["loop"])
    host.mount(str(disk_mount / "containers" / "c1"), rootfs, "bind", ["bind"])
    host.umount(disk_mount)  # the bind is now the device's only mount
    (loop,) = [d for d, b in host.loop_devices().items() if b == str(foreign_disk)]
    before = _fingerprint(rootfs)
    proc, argv = _run_and_capture_monitor(runner, ["--rootfs", *_annotation_flags(), str(rootfs), "h1",
                                                   "/bin/sh", "/app/run.sh"])
    assert proc.returncode == 5, proc.stdout + proc.stderr
    assert "guest root: app bin boot" in proc.stdout and "HOST-SECRET" not in proc.stdout, proc.stdout
    _assert_no_host_device(argv, [loop, str(foreign_disk)])
    assert any(f"path={rootfs}" in a for a in argv), argv
    assert _fingerprint(rootfs) == before
    assert host.mounts_at(rootfs), "the operator's bind mount must stay"
    runner.ctr("containers", "delete", "h1")
    runner.assert_clean("h1")


def test_a_foreign_disk_mounted_whole_is_shared_never_handed_over(
    runner: Runner, tmp_path: Path, foreign_disk: Path
) -> None:
    rootfs = tmp_path / "bundle-rootfs"
    rootfs.mkdir()
    host.mount(str(foreign_disk), rootfs, "ext4", ["loop"])
    (loop,) = [d for d, b in host.loop_devices().items() if b == str(foreign_disk)]
    before = _fingerprint(rootfs)
    proc, argv = _run_and_capture_monitor(runner, ["--rootfs", *_annotation_flags(), str(rootfs), "h2",
                                                   "/bin/sh", "/app/run.sh"])
    # The operator named this folder: the guest sees it (secret included) over 9p, never the device.
    assert proc.returncode == 5 and "HOST-SECRET.txt" in proc.stdout, proc.stdout + proc.stderr
    _assert_no_host_device(argv, [loop, str(foreign_disk)])
    assert _fingerprint(rootfs) == before
    runner.ctr("containers", "delete", "h2")
    runner.assert_clean("h2")


def test_a_plain_host_folder_boots_over_9p_and_stays_untouched(runner: Runner, tmp_path: Path,
                                                              rootfs_tree: Path) -> None:
    rootfs = tmp_path / "host-folder"
    shutil.copytree(rootfs_tree, rootfs, symlinks=True)
    before = _fingerprint(rootfs)
    proc, argv = _run_and_capture_monitor(runner, ["--rootfs", *_annotation_flags(), str(rootfs), "h3",
                                                   "/bin/sh", "/app/run.sh"])
    assert proc.returncode == 5 and "guest root: app bin boot" in proc.stdout, proc.stdout + proc.stderr
    _assert_no_host_device(argv, [])
    assert _fingerprint(rootfs) == before
    runner.ctr("containers", "delete", "h3")
    runner.assert_clean("h3")


def test_the_native_snapshotter_boots_over_9p(runner: Runner, image_dir: Path, tmp_path: Path) -> None:
    image = guest.linux_image(image_dir / "handoff", "ukrun/handoff:1", APP)
    runner.daemon.import_image(runner.ns, image, "native")
    native = Runner(runner.daemon, runner.ns, runner.runc_root, runner.state_root, snapshotter="native")
    proc, argv = _run_and_capture_monitor(native, ["--snapshotter", "native", "ukrun/handoff:1", "n1"])
    assert proc.returncode == 5 and "guest root: app bin boot" in proc.stdout, proc.stdout + proc.stderr
    _assert_no_host_device(argv, [])
    assert native.ctr("containers", "delete", "n1").returncode == 0
    native.assert_clean("n1")
