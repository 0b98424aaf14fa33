"""The spec's bind mounts reach a VM guest (runtime.mountplan): files and folders are copied into its block
rootfs; a block volume (the root of a file system on a host block device) is unmounted and attached,
only when ukrun's configuration allows that device.

Through ctr, containerd's stock runc v2 shim and ukrun, the linux demo guest on blockfile reads the
copies and writes to the volume; the host then finds its file on the device. A device the configuration
does not name is refused at create, and the volume stays mounted and untouched.
"""

from __future__ import annotations

import gzip
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed import containerd as ctd
from testbed import guest
from testbed import host as tbhost
from testbed.reliability import Hostile, Report
from tests.integration.conftest import SNAPSHOTTER, remove_containers
from tests.integration.runner import Runner
from tests.integration.test_hostile import runtime_error
from ukrun import host
from ukrun.image.build import build_unikernel_image
from ukrun.runtime import state as st
from ukrun.unikernel import UnikernelConfig

INITRD_IMAGE = "ukrun/initrd-root:1"
# The initrd root's own init: prints the copied file and reports 3 (9 when the file is missing).
INITRD_INIT = """#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t devtmpfs dev /dev
/bin/busybox cat /app/conf
code=3; [ -f /app/conf ] || code=9
/bin/busybox printf "\\\\$(/bin/busybox printf %03o $code)" | /bin/busybox dd of=/dev/port bs=1 seek=244 count=1
/bin/busybox poweroff -f
"""


def _config(daemon: ctd.Daemon) -> Path:
    return daemon.dir.parent / "ukrun.toml"  # what the daemon fixture's shims read (conftest)


@pytest.fixture
def allow(daemon: ctd.Daemon) -> Iterator[list[str]]:
    """The block devices the test allows ([volumes] block_devices); the configuration is restored after."""
    path = _config(daemon)
    before = path.read_text()
    patterns: list[str] = []
    yield patterns
    path.write_text(before)


def _allow(daemon: ctd.Daemon, patterns: list[str]) -> None:
    quoted = ", ".join(f'"{p}"' for p in patterns)
    with open(_config(daemon), "a") as f:
        f.write(f"[volumes]\nblock_devices = [{quoted}]\n")


@pytest.fixture
def volume(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A loop device over an ext4 file, mounted at a host folder holding one file; all undone after. The
    folder lies in a shared mount, as a kubelet's volumes do (its folder is rshared): a mount namespace made
    meanwhile (another container's) gets a copy that receives the unmount, even where the host's own
    mounts are private, as on some test machines."""
    image = tmp_path / "volume.img"
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image), "16M"], check=True, capture_output=True)
    device = subprocess.run(["losetup", "--find", "--show", str(image)], check=True, capture_output=True,
                            text=True).stdout.strip()
    stage = tmp_path / "stage"
    folder = stage / "volume"
    stage.mkdir()
    try:
        host.mount("tmpfs", stage, "tmpfs", ["size=1m"])
        subprocess.run(["mount", "--make-shared", str(stage)], check=True)
        folder.mkdir()
        host.mount(device, folder, "ext4", [])
        (folder / "before.txt").write_text("on the volume before\n")
        yield device, folder
    finally:
        tbhost.unmount_below(tmp_path)
        tbhost.detach_loops_below(tmp_path)
        assert not [d for d, b in host.loop_devices().items() if b == str(image)], "the loop device stayed"


@pytest.fixture
def mounts_runner(runner: Runner) -> Iterator[Runner]:
    yield runner
    remove_containers(runner)


def test_bind_mounted_files_and_folders_appear_in_the_guests_block_rootfs(mounts_runner: Runner,
                                                                           tmp_path: Path) -> None:
    conf = tmp_path / "app.conf"
    conf.write_text("setting=from-the-host\n")
    secret = tmp_path / "secret"  # shaped like a Kubernetes secret volume: data behind ..data links
    (secret / "..2026_11_28").mkdir(parents=True)
    (secret / "..2026_11_28" / "token").write_text("s3cret\n")
    (secret / "..data").symlink_to("..2026_11_28")
    (secret / "token").symlink_to("..data/token")
    (secret / "escape").symlink_to("/etc/hostname")  # resolved inside the folder: not copied
    script = ("cat /app/conf /run/secret/token; [ -e /run/secret/escape ] && echo ESCAPED; "
              "echo done; exit 3")
    proc = mounts_runner.run(
        "m1", "/bin/busybox", "sh", "-c", script,
        flags=("--mount", f"type=bind,src={conf},dst=/app/conf,options=rbind:ro",
               "--mount", f"type=bind,src={secret},dst=/run/secret,options=rbind:ro"))
    assert proc.returncode == 3, (proc.returncode, proc.stdout, proc.stderr)
    assert "setting=from-the-host\ns3cret\n" in proc.stdout.replace("\r", ""), proc.stdout
    assert "ESCAPED" not in proc.stdout
    assert conf.read_text() == "setting=from-the-host\n"  # the host's files are left as they were
    assert mounts_runner.ctr("containers", "delete", "m1").returncode == 0
    mounts_runner.assert_clean("m1")


def test_an_allowed_block_volume_is_handed_to_the_guest(mounts_runner: Runner, volume: tuple[str, Path],
                                                         allow: list[str], tmp_path: Path) -> None:
    device, folder = volume
    _allow(mounts_runner.daemon, [device.replace("loop", "loo?")])  # a glob naming it
    script = "cat /data/before.txt; echo written-by-the-guest > /data/guest.txt; exit 4"
    proc = mounts_runner.run("v1", "/bin/busybox", "sh", "-c", script,
                             flags=("--mount", f"type=bind,src={folder},dst=/data,options=rbind:rw"))
    assert proc.returncode == 4, (proc.returncode, proc.stdout, proc.stderr)
    assert "on the volume before" in proc.stdout, proc.stdout
    assert mounts_runner.ctr("containers", "delete", "v1").returncode == 0
    mounts_runner.assert_clean("v1")
    assert not host.mounts_at(folder), "ukrun remounted the volume: that is its owner's job"
    look = tmp_path / "look"
    look.mkdir()
    host.mount(device, look, "ext4", ["ro"])
    try:
        assert (look / "guest.txt").read_text() == "written-by-the-guest\n"
    finally:
        host.umount(look)


def test_a_block_volume_the_configuration_does_not_name_is_refused(mounts_runner: Runner,
                                                                   volume: tuple[str, Path],
                                                                   allow: list[str]) -> None:
    device, folder = volume
    _allow(mounts_runner.daemon, ["/dev/mapper/vol-*"])
    proc = mounts_runner.run("v2", "/bin/busybox", "sh", "-c", "echo hi > /data/guest.txt",
                             flags=("--mount", f"type=bind,src={folder},dst=/data,options=rbind:rw"))
    assert proc.returncode != 0
    assert (f"block volume {device} (mounted at {folder}, the spec's mount at /data) is not allowed"
            in proc.stderr), proc.stderr
    assert "[volumes] block_devices" in proc.stderr
    (entry,) = host.mounts_at(folder)  # still mounted, as it was
    assert entry.source == device
    assert sorted(p.name for p in folder.iterdir()) == ["before.txt", "lost+found"]
    assert (folder / "before.txt").read_text() == "on the volume before\n"
    assert not mounts_runner.monitors()


@pytest.fixture(scope="module")
def initrd_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A linux image whose root is its gzip-compressed initrd (mountRootfs unset); its init is /init."""
    work = tmp_path_factory.mktemp("initrd-root")
    plain = guest.build_initramfs(work / "initrd.cpio", (), INITRD_INIT)
    packed = work / "initrd.img"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    config = UnikernelConfig("linux", "qemu", "/boot/vmlinuz", initrd="/boot/initrd.img")
    out = work / "initrd-root.tar"
    build_unikernel_image(out, INITRD_IMAGE, config, guest.kernel(), packed, cmd=("/init",))
    return out


def test_a_linux_initrd_root_unpacks_the_files_appended_to_its_initrd(mounts_runner: Runner, initrd_image: Path,
                                                                      tmp_path: Path) -> None:
    mounts_runner.daemon.import_image(mounts_runner.ns, initrd_image, SNAPSHOTTER)
    conf = tmp_path / "app.conf"
    conf.write_text("from-an-appended-archive\n")
    proc = mounts_runner.run("i1", "/init", image=INITRD_IMAGE,
                             flags=("--mount", f"type=bind,src={conf},dst=/app/conf,options=rbind:ro"))
    assert "from-an-appended-archive" in proc.stdout, (proc.stdout, proc.stderr)
    assert proc.returncode == 3, (proc.returncode, proc.stderr)
    assert mounts_runner.ctr("containers", "delete", "i1").returncode == 0
    mounts_runner.assert_clean("i1")


def test_a_device_that_backs_a_ukrun_view_is_refused_even_when_allowed(mounts_runner: Runner,
                                                                       allow: list[str]) -> None:
    _allow(mounts_runner.daemon, ["/dev/loop*"])  # an operator's pattern too wide: the rule still holds
    assert mounts_runner.run("s1", "/bin/sh", "/app/run.sh", "sleep", flags=("--detach",)).returncode == 0
    mounts_runner.wait_status("s1", "RUNNING")
    (view,) = mounts_runner.views()
    point = str(view["mount_point"])
    (entry,) = host.mounts_at(point)
    proc = mounts_runner.run("v3", "/bin/busybox", "true", flags=("--mount", f"type=bind,src={point},dst=/data"))
    assert proc.returncode != 0
    assert f"block volume {entry.source} (mounted at {point}, the spec's mount at /data) backs blockfile " \
           "snapshot" in proc.stderr, proc.stderr
    assert host.mounts_at(point) == [entry]  # the view stays mounted, and its container runs on
    assert mounts_runner.task_status("s1") == "RUNNING"


def test_create_records_the_volume_it_unmounted_and_delete_leaves_it_unmounted(mounts_runner: Runner,
                                                                             volume: tuple[str, Path],
                                                                             allow: list[str]) -> None:
    device, folder = volume
    _allow(mounts_runner.daemon, [device])
    proc = mounts_runner.run("v4", "/bin/sh", "/app/run.sh", "sleep", flags=(
        "--detach", "--mount", f"type=bind,src={folder},dst=/data,options=rbind:rw"))
    assert proc.returncode == 0, proc.stderr
    mounts_runner.wait_status("v4", "RUNNING")
    record = st.load(mounts_runner.runc_root / mounts_runner.ns, "v4")
    assert record.volumes == [[device, str(folder)]]
    (qemu,) = mounts_runner.monitors()
    assert f"file={device},format=raw,if=none,id=vol0".encode() in Path(f"/proc/{qemu}/cmdline").read_bytes()
    assert not host.mounts_at(folder)
    assert mounts_runner.ctr("task", "kill", "-s", "SIGKILL", "v4").returncode == 0
    mounts_runner.wait_status("v4", "STOPPED")
    assert mounts_runner.ctr("task", "delete", "v4").returncode == 0
    assert mounts_runner.ctr("containers", "delete", "v4").returncode == 0
    mounts_runner.assert_clean("v4")
    assert not host.mounts_at(folder)  # the orchestrator remounts it, not ukrun


def _refused_in_time(runner: Runner, cid: str, folder: Path) -> tuple[str, float]:
    start = time.monotonic()
    proc = runner.run(cid, "/bin/busybox", "sh", "-c", "echo hi > /data/guest.txt",
                      flags=("--mount", f"type=bind,src={folder},dst=/data,options=rbind:rw"))
    elapsed = time.monotonic() - start
    assert proc.returncode != 0, proc.stdout
    assert not runner.monitors()
    return proc.stderr, elapsed


def _row(stderr: str, device: str, folder: Path) -> str:
    """ukrun's sentence for the reliability table, without this run's device, folder and process IDs."""
    sentence = runtime_error(stderr).replace(device, "/dev/loopN").replace(str(folder), "<volume folder>")
    return re.sub(r"PID \d+", "PID <n>", sentence)


def _left_as_it_was(device: str, folder: Path) -> None:
    (entry,) = host.mounts_at(folder)  # mounted, as it was
    assert entry.source == device and entry.fstype == "ext4" and entry.options.startswith("rw")
    assert sorted(p.name for p in folder.iterdir()) == ["before.txt", "lost+found"]
    assert (folder / "before.txt").read_text() == "on the volume before\n"


@pytest.mark.reliability("hostile")
def test_a_volume_mounted_in_another_namespace_is_refused_and_left_mounted(mounts_runner: Runner,
                                                                           volume: tuple[str, Path],
                                                                           allow: list[str], report: Report) -> None:
    device, folder = volume
    _allow(mounts_runner.daemon, [device])
    other = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sleep", "600"])
    try:
        assert ctd.wait_for(lambda: any(m.mount_point == str(folder) for m in host.mountinfo(str(other.pid))))
        stderr, elapsed = _refused_in_time(mounts_runner, "v5", folder)
        assert f"block volume {device} (mounted at {folder}) is also mounted in another mount namespace (" in stderr
        assert f"PID {other.pid} (sleep) at {folder}" in stderr  # others may be named too: a busy host's
        assert "which its unmount here would not reach; it is left mounted" in stderr, stderr
        assert elapsed < 15, f"the refusal took {elapsed:.1f} s"
        _left_as_it_was(device, folder)
    finally:
        other.kill()
        other.wait()
    mounts_runner.ctr("containers", "delete", "v5")
    mounts_runner.assert_clean("v5")
    report.hostile.append(Hostile("volume-also-mounted-in-another-namespace", "ctr", mounts_runner.daemon.version,
                                  _row(stderr, device, folder)))


@pytest.mark.reliability("hostile")
def test_a_volume_still_claimed_after_its_unmount_is_mounted_again(mounts_runner: Runner, volume: tuple[str, Path],
                                                                    allow: list[str], tmp_path: Path,
                                                                    report: Report) -> None:
    device, folder = volume
    _allow(mounts_runner.daemon, [device])
    # The same file system mounted again, then detached while a folder of it stays open: no mount table
    # shows it, and it keeps the device claimed.
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    host.mount(device, hidden, "ext4", [])
    held = os.open(hidden, os.O_RDONLY | os.O_DIRECTORY)
    try:
        subprocess.run(["umount", "--lazy", str(hidden)], check=True)
        stderr, elapsed = _refused_in_time(mounts_runner, "v6", folder)
        assert (f"block volume {device} was still in use after its unmount from {folder} (held open, or mounted "
                "where no mount table shows it, such as a lazily unmounted file system still in use), so it is "
                "mounted there again") in stderr, stderr
        assert elapsed < 15, f"the refusal took {elapsed:.1f} s"
        _left_as_it_was(device, folder)
    finally:
        os.close(held)
    mounts_runner.ctr("containers", "delete", "v6")
    mounts_runner.assert_clean("v6")
    report.hostile.append(Hostile("volume-still-claimed-after-its-unmount", "ctr", mounts_runner.daemon.version,
                                  _row(stderr, device, folder)))
