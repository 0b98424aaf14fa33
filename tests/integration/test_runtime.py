"""End to end: ctr -> containerd -> the stock runc v2 shim -> ukrun -> qemu booting a real Linux guest."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from testbed import containerd as ctd
from testbed import guest, images
from testbed import host as tbhost
from tests.integration.conftest import APP, SNAPSHOTTER, write_ukrun_config
from tests.integration.runner import IMAGE, UKRUN, Runner
from ukrun import host
from ukrun.image.build import Entry
from ukrun.unikernel import UnikernelConfig


def test_a_unikernel_runs_to_completion_from_its_block_rootfs(runner: Runner, tmp_path: Path) -> None:
    proc = runner.run("c1", "/bin/sh", "/app/run.sh", "exit", "hello", "7", flags=("--env", "GREETING=hi"))
    assert "guest says hello, GREETING=hi" in proc.stdout, proc.stderr
    assert proc.returncode == 7, (proc.returncode, proc.stderr)
    # The VM booted from the container's own rootfs: what it wrote is in the container's snapshot.
    assert runner.read_snapshot("c1", "/guest-file", tmp_path) == "hello\n"
    assert runner.ctr("containers", "delete", "c1").returncode == 0
    runner.assert_clean("c1")
    timing = [json.loads(line) for line in (runner.state_root / "timing.jsonl").read_text().splitlines()]
    phases = {t["phase"] for t in timing if t["container"] == "c1" and t["verb"] == "create"}
    assert {"artifacts", "rootfs-handoff", "launcher", "done"} <= phases


def test_two_running_guests_share_one_view_and_stop_on_kill(runner: Runner) -> None:
    for cid in ("s1", "s2"):
        proc = runner.run(cid, "/bin/sh", "/app/run.sh", "sleep", flags=("--detach",))
        assert proc.returncode == 0, proc.stderr
    for cid in ("s1", "s2"):
        runner.wait_status(cid, "RUNNING")
    # While the VMs run, no rootfs is mounted on the host and no loop device holds its file.
    bundle_root = runner.daemon.dir / "state" / "io.containerd.runtime.v2.task" / runner.ns
    for cid in ("s1", "s2"):
        assert not host.mounts_at(bundle_root / cid / "rootfs")
        backing = runner.snapshot_file(cid)
        assert backing not in host.loop_devices().values()
    (view,) = runner.views()
    assert sorted(view["users"]) == ["s1", "s2"]  # type: ignore[call-overload]
    # The monitor runs in the spec's cgroup (ctr's cgroupsPath is /<namespace>/<id>).
    disk = runner.snapshot_file("s1").encode()
    qemu = [p for p in runner.monitors() if disk in Path(f"/proc/{p}/cmdline").read_bytes()]
    assert len(qemu) == 1
    cgroups = Path(f"/proc/{qemu[0]}/cgroup").read_text()
    assert any(line.split(":")[1] == "memory" and line.endswith(f"/{runner.ns}/s1") for line in cgroups.splitlines())
    assert not list((runner.state_root / "copies" / runner.ns).glob("*"))  # no artifact byte was copied
    for cid in ("s1", "s2"):
        assert runner.ctr("task", "kill", cid).returncode == 0  # SIGTERM reaches qemu through the init
    for cid in ("s1", "s2"):
        runner.wait_status(cid, "STOPPED")
        assert runner.ctr("task", "delete", cid).returncode == 0
        assert runner.ctr("containers", "delete", cid).returncode == 0
    for cid in ("s1", "s2"):
        runner.assert_clean(cid)
        assert not Path(f"/sys/fs/cgroup/memory/{runner.ns}/{cid}").exists()


def test_a_terminal_goes_through_the_console_socket(runner: Runner) -> None:
    # `script` gives ctr a pty, so `ctr run -t` asks the runtime for a terminal over --console-socket.
    command = " ".join([str(runner.daemon.bin_dir / "ctr"), "--address", runner.daemon.address, "--namespace",
                        runner.ns, "run", "-t", "--rm", "--fifo-dir", str(runner.fifo_dir),
                        "--snapshotter", SNAPSHOTTER, "--runc-binary", UKRUN,
                        "--runc-root", str(runner.runc_root), IMAGE, "t1", "/bin/sh", "/app/run.sh",
                        "exit", "tty", "4"])
    proc = subprocess.run(["script", "-qec", command, "/dev/null"], capture_output=True, text=True, timeout=180,
                          env=runner.daemon.env())
    assert "guest says tty" in proc.stdout, proc.stdout + proc.stderr
    assert proc.returncode == 4
    runner.assert_clean("t1")


def test_copy_mode_by_annotation_and_run_rm_leave_nothing(runner: Runner) -> None:
    proc = runner.run("cp1", "/bin/sh", "/app/run.sh", "exit", "copied", "0",
                      flags=("--rm", "--annotation", "io.ukrun.artifacts.mode=copy"))
    assert proc.returncode == 0 and "guest says copied" in proc.stdout, proc.stderr
    runner.assert_clean("cp1")
    assert not any((runner.state_root / "copies").rglob("cp1"))


def test_a_plain_linux_image_runs_through_runc(runner: Runner, image_dir: Path) -> None:
    tar = images.raw_image(image_dir, "ukrun/plain-busybox:1", [[
        Entry("/bin/busybox", source=Path("/bin/busybox"), mode=0o755), Entry("/bin/sh", symlink="busybox"),
    ]])
    runner.daemon.import_image(runner.ns, tar, "overlayfs")
    proc = runner.ctr("run", "--rm", "--fifo-dir", str(runner.fifo_dir), "--snapshotter", "overlayfs",
                      "--runc-binary", UKRUN,
                      "--runc-root", str(runner.runc_root), "ukrun/plain-busybox:1", "p1",
                      "/bin/sh", "-c", "echo plain container; exit 3")
    assert proc.stdout.strip() == "plain container" and proc.returncode == 3, proc.stderr


def _broken_image(runner: Runner, image_dir: Path, name: str, config: UnikernelConfig) -> str:
    initrd = image_dir / "guest" / "initrd.img"
    tar = images.raw_image(image_dir, name, [[Entry("/boot/vmlinuz", source=guest.kernel()),
                                              Entry("/boot/initrd.img", source=initrd)]], config)
    runner.daemon.import_image(runner.ns, tar, SNAPSHOTTER)
    return name


@pytest.mark.parametrize(
    ("binary", "hypervisor", "message"),
    [("/boot/missing", "qemu", "kernel '/boot/missing' does not exist in the image"),
     ("/boot/vmlinuz", "firecracker", "monitor firecracker: binary 'firecracker' is not installed")],
)
def test_broken_images_fail_at_create_with_the_reason(runner: Runner, image_dir: Path, binary: str,
                                                      hypervisor: str, message: str) -> None:
    config = UnikernelConfig("linux", hypervisor, binary, initrd="/boot/initrd.img", mount_rootfs=True)
    image = _broken_image(runner, image_dir, f"ukrun/broken-{hypervisor}-{len(binary)}:1", config)
    proc = runner.run("b1", "/bin/sh", image=image, flags=("--rm",))
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr
    runner.ctr("containers", "delete", "b1")
    runner.assert_clean("b1")


def test_missing_monitor_binary_fails_at_create(daemon: ctd.Daemon, ns: str, tmp_path: Path, guest_image: Path) -> None:
    config = write_ukrun_config(tmp_path / "ukrun.toml", tmp_path / "state", path="/nonexistent/qemu-system-x86_64")
    private = ctd.start("2", tmp_path / "d", env={"UKRUN_CONFIG": str(config)})
    try:
        r = Runner(private, ns, tmp_path / "runc", tmp_path / "state")
        private.import_image(ns, guest_image, SNAPSHOTTER)
        proc = r.run("m1", "/bin/sh", flags=("--rm",))
        assert proc.returncode != 0
        assert "binary '/nonexistent/qemu-system-x86_64' is not installed" in proc.stderr, proc.stderr
        r.ctr("containers", "delete", "m1")
        r.assert_clean("m1")
    finally:
        ctd.stop(private.dir)


def test_a_rootfs_mounted_elsewhere_is_refused(daemon: ctd.Daemon, ns: str, tmp_path: Path, guest_image: Path,
                                              image_dir: Path) -> None:
    # A node whose `runc` is ukrun: every container goes through it, unikernel or not.
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "runc").symlink_to(UKRUN)
    config = write_ukrun_config(tmp_path / "ukrun.toml", tmp_path / "state")
    env = {"UKRUN_CONFIG": str(config), "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"}
    private = ctd.start(daemon.version, tmp_path / "d", env=env)
    try:
        r = Runner(private, ns, Path("/run/containerd/runc") / ns, tmp_path / "state")
        private.import_image(ns, guest_image, SNAPSHOTTER)
        created = r.ctr("containers", "create", "--snapshotter", SNAPSHOTTER, IMAGE, "busy", "/bin/sh", "/app/run.sh")
        assert created.returncode == 0, created.stderr
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        host.mount(r.snapshot_file("busy"), elsewhere, "ext4", ["loop"])
        try:
            proc = r.ctr("task", "start", "--fifo-dir", str(r.fifo_dir), "busy")
            assert proc.returncode != 0
            assert "is also mounted" in proc.stderr and "unmount it there first" in proc.stderr, proc.stderr
        finally:
            host.umount(elsewhere)
        r.ctr("task", "delete", "busy")
        assert r.ctr("containers", "delete", "busy").returncode == 0
        r.assert_clean("busy")
        # The same node runs a plain container through the real runc.
        plain = images.raw_image(image_dir, "ukrun/plain-busybox:1", [[
            Entry("/bin/busybox", source=Path("/bin/busybox"), mode=0o755), Entry("/bin/sh", symlink="busybox"),
        ]])
        private.import_image(ns, plain, "overlayfs")
        proc = r.ctr("run", "--rm", "--fifo-dir", str(r.fifo_dir), "--snapshotter", "overlayfs",
                     "ukrun/plain-busybox:1", "p2",
                     "/bin/sh", "-c", "echo via runc")
        assert proc.stdout.strip() == "via runc" and proc.returncode == 0, proc.stderr
    finally:
        ctd.stop(private.dir)
        shutil.rmtree(Path("/run/containerd/runc") / ns, ignore_errors=True)  # the namespace is this test's
        shutil.rmtree(r.fifo_dir, ignore_errors=True)  # the runner's, beside it


def test_a_guest_does_not_hold_other_containers_mounts(runner: Runner, tmp_path: Path) -> None:
    # Another container's rootfs, mounted by its shim under the task root while this guest starts (a
    # concurrent create): the guest's new mount namespace must not keep a copy of it, or that container's
    # handoff finds its device still in use and its loop device outlives the unmount.
    assert runner.ctr("containers", "create", "--snapshotter", SNAPSHOTTER, IMAGE, "other").returncode == 0
    other = runner.daemon.dir / "state" / "io.containerd.runtime.v2.task" / runner.ns / "other" / "rootfs"
    other.mkdir(parents=True)
    (other.parent / "config.json").write_text("{}")  # a bundle, as the shim lays it out
    backing = runner.snapshot_file("other")
    host.mount(backing, other, "ext4", ["loop"])
    try:
        assert runner.run("g1", "/bin/sh", "/app/run.sh", "sleep", flags=("--detach",)).returncode == 0
        runner.wait_status("g1", "RUNNING")
    finally:
        host.umount(other)
    assert ctd.wait_for(lambda: backing not in host.loop_devices().values(), timeout=5), (
        "the guest's mount namespace still holds the other container's rootfs"
    )
    runner.ctr("task", "kill", "-s", "SIGKILL", "g1")
    runner.wait_status("g1", "STOPPED")
    runner.ctr("task", "delete", "g1")
    for cid in ("g1", "other"):
        runner.ctr("containers", "delete", cid)
    shutil.rmtree(other.parent, ignore_errors=True)
    runner.assert_clean("g1")


def test_a_guest_boots_from_a_folder_rootfs_over_9p(runner: Runner, guest_image: Path, tmp_path: Path) -> None:
    # overlayfs gives no block device: the rootfs folder is shared with the guest over virtio-9p.
    runner.daemon.import_image(runner.ns, guest_image, "overlayfs")
    overlay = Runner(runner.daemon, runner.ns, runner.runc_root, runner.state_root, snapshotter="overlayfs")
    proc = overlay.run("o1", "/bin/sh", "/app/run.sh", "exit", "ninep", "6")
    assert "guest says ninep" in proc.stdout and proc.returncode == 6, proc.stdout + proc.stderr
    assert overlay.read_snapshot("o1", "/guest-file", tmp_path) == "ninep\n"
    assert overlay.ctr("containers", "delete", "o1").returncode == 0
    overlay.assert_clean("o1")


def test_a_guest_kernel_panic_fails_the_container(runner: Runner) -> None:
    proc = runner.run("p1", "/bin/sh", "/app/run.sh", "panic", flags=("--rm",))
    assert proc.returncode == 1, (proc.returncode, proc.stdout[-2000:])  # not 0, as a reboot would give
    runner.assert_clean("p1")


def _launchers(runc_root: Path) -> list[int]:
    return [p for p in tbhost.processes_with_argument(str(runc_root))
            if b"ukrun.launcher" in Path(f"/proc/{p}/cmdline").read_bytes()]


def test_a_create_killed_before_saving_its_init_leaves_nothing_through_the_shim(
    daemon: ctd.Daemon, ns: str, tmp_path: Path, guest_image: Path
) -> None:
    # Every create of this daemon's shims is killed after spawning the init, before saving its PID.
    config = write_ukrun_config(tmp_path / "ukrun.toml", tmp_path / "state")
    private = ctd.start(daemon.version, tmp_path / "d",
                        env={"UKRUN_CONFIG": str(config), "UKRUN_CRASH_AT": "create-before-save"})
    try:
        r = Runner(private, ns, tmp_path / "runc", tmp_path / "state")
        private.import_image(ns, guest_image, SNAPSHOTTER)
        for attempt in range(2):  # the second create of the same ID is not blocked by the first
            proc = r.run("k1", "/bin/sh", "/app/run.sh", "sleep", flags=("--rm",))
            assert proc.returncode != 0 and "already exists" not in proc.stderr, (attempt, proc.stderr)
            assert ctd.wait_for(lambda: not _launchers(r.runc_root), timeout=10), "the init was orphaned"
            assert not (r.runc_root / ns / "k1").exists()
            assert not Path(f"/sys/fs/cgroup/memory/{ns}/k1").exists()
            r.ctr("containers", "delete", "k1")
            r.assert_clean("k1")
    finally:
        ctd.stop(private.dir)


def test_gc_reclaims_a_create_killed_before_saving_its_init(runner: Runner, tmp_path: Path) -> None:
    # A create whose delete never comes (its shim died too): `ukrun gc` finds and removes what it made.
    assert runner.ctr("containers", "create", "--snapshotter", SNAPSHOTTER, IMAGE, "k2").returncode == 0
    bundle = tmp_path / "bundle"
    (bundle / "rootfs").mkdir(parents=True)
    backing = runner.snapshot_file("k2")
    host.mount(backing, bundle / "rootfs", "ext4", ["loop"])
    spec = {"ociVersion": "1.0.2", "root": {"path": "rootfs"},
            "process": {"args": ["/bin/sh", "/app/run.sh", "sleep"], "env": [], "cwd": "/"},
            "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}], "cgroupsPath": f"/{runner.ns}/k2"}}
    (bundle / "config.json").write_text(json.dumps(spec))
    env = {**runner.daemon.env(), "NAMESPACE": runner.ns, "UKRUN_CRASH_AT": "create-before-save",
           "UKRUN_CONFIG": str(write_ukrun_config(tmp_path / "ukrun.toml", runner.state_root))}
    base = [UKRUN, "--root", str(runner.runc_root)]
    try:
        proc = subprocess.run([*base, "create", "--bundle", str(bundle), "k2"], env=env, capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == -9, proc.stderr
        env.pop("UKRUN_CRASH_AT")
        assert (runner.runc_root / "k2").exists() and [v for v in runner.views() if "k2" in v["users"]]  # type: ignore[operator]
        out = subprocess.run([*base, "--state-root", str(runner.state_root), "gc"], env=env, capture_output=True,
                             text=True, timeout=60)
        assert "remove container k2" in out.stdout, out.stdout + out.stderr
        assert ctd.wait_for(lambda: not _launchers(runner.runc_root), timeout=10), "the init was orphaned"
        assert not (runner.runc_root / "k2").exists()
        assert not Path(f"/sys/fs/cgroup/memory/{runner.ns}/k2").exists()
        assert not [v for v in runner.views() if "k2" in v["users"]]  # type: ignore[operator]
    finally:
        tbhost.unmount_below(bundle)
    runner.ctr("containers", "delete", "k2")
    runner.assert_clean("k2")


def test_an_image_whose_urunc_json_links_to_a_host_file_is_refused(runner: Runner, image_dir: Path) -> None:
    tar = images.raw_image(image_dir, "ukrun/link-urunc:1", [[
        Entry("/bin/busybox", source=Path("/bin/busybox"), mode=0o755), Entry("/bin/sh", symlink="busybox"),
        Entry("/urunc.json", symlink="/etc/os-release"),
    ]])
    runner.daemon.import_image(runner.ns, tar, SNAPSHOTTER)
    proc = runner.run("l1", "/bin/sh", "-c", "echo ran as a plain container", image="ukrun/link-urunc:1",
                      flags=("--rm",))
    assert proc.returncode != 0 and "ran as a plain container" not in proc.stdout, proc.stdout
    assert "urunc.json '/urunc.json' does not exist in the image" in proc.stderr, proc.stderr
    runner.ctr("containers", "delete", "l1")
    runner.assert_clean("l1")


def test_a_guest_boots_from_an_erofs_snapshot_over_9p(runner: Runner, guest_image: Path, tmp_path: Path) -> None:
    # erofs (containerd 2.1+): the container's rootfs is an overlay over erofs layers, a folder.
    if runner.daemon.version == "1.7":
        pytest.skip("containerd 1.7 has no erofs snapshotter")
    runner.daemon.import_image(runner.ns, guest_image, "erofs")
    erofs = Runner(runner.daemon, runner.ns, runner.runc_root, runner.state_root, snapshotter="erofs")
    proc = erofs.run("e1", "/bin/sh", "/app/run.sh", "exit", "erofs", "4")
    assert "guest says erofs" in proc.stdout and proc.returncode == 4, proc.stdout + proc.stderr
    assert erofs.read_snapshot("e1", "/guest-file", tmp_path) == "erofs\n"
    assert erofs.ctr("containers", "delete", "e1").returncode == 0
    erofs.assert_clean("e1")


def test_an_image_that_carries_its_configuration_only_in_its_manifest_and_labels(runner: Runner,
                                                                                 image_dir: Path) -> None:
    # No com.urunc.unikernel.* in the spec, no /urunc.json: ukrun reads the image's own (as urunc's shim).
    initrd = image_dir / "guest" / "initrd.img"
    config = UnikernelConfig("linux", "qemu", "/boot/vmlinuz", initrd="/boot/initrd.img", mount_rootfs=True)
    base = [Entry("/bin/busybox", source=Path("/bin/busybox"), mode=0o755), Entry("/bin/sh", symlink="busybox"),
            *(Entry(d, directory=True, mode=0o755) for d in ("/proc", "/dev", "/sys", "/tmp", "/etc")),
            Entry("/app/run.sh", data=APP.encode(), mode=0o755),
            Entry("/boot/vmlinuz", source=guest.kernel()), Entry("/boot/initrd.img", source=initrd)]
    tar = images.raw_image(image_dir, "ukrun/labels-only:1", [base], annotations=config.annotations())
    runner.daemon.import_image(runner.ns, tar, SNAPSHOTTER)
    proc = runner.run("lab1", "/bin/sh", "/app/run.sh", "exit", "labels", "3", image="ukrun/labels-only:1",
                      flags=("--rm",))
    assert "guest says labels" in proc.stdout and proc.returncode == 3, proc.stdout + proc.stderr
    runner.assert_clean("lab1")
