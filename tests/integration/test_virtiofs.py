"""A folder rootfs over virtio-fs, through ctr, the stock shim and ukrun: the linux demo guest boots from
an overlayfs snapshot served by a per-container virtiofsd (the one scripts/setup puts in the cache),
reads the image's files and writes one that lands in the container's rootfs folder; the daemon lives in
the container's cgroup and goes with the VM, and the VM with it; delete leaves no virtiofsd, socket or
mount.
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
from pathlib import Path

import pytest

from testbed import containerd as ctd
from testbed import host as tbhost
from testbed.reliability import Hostile, Report
from tests.integration.conftest import VIRTIOFSD, write_ukrun_config
from tests.integration.runner import Runner
from ukrun import host
from ukrun.containerd.client import Client

VIRTIOFS = ("--annotation", "io.ukrun.rootfs.share=virtiofs")
# Shows how the root is mounted, reads a file of the image, writes one into the rootfs.
SCRIPT = ("grep ' / ' /proc/mounts; head -n1 /app/run.sh; echo written-by-the-guest > /guest-file; exit 5")


@pytest.fixture
def overlay(runner: Runner, guest_image: Path) -> Runner:
    if not VIRTIOFSD.exists():
        pytest.fail(f"no virtiofsd at {VIRTIOFSD}: run scripts/setup")
    runner.daemon.import_image(runner.ns, guest_image, "overlayfs")
    return Runner(runner.daemon, runner.ns, runner.runc_root, runner.state_root, snapshotter="overlayfs")


def test_a_guest_boots_from_a_folder_rootfs_over_virtiofs(overlay: Runner, tmp_path: Path) -> None:
    proc = overlay.run("v1", "/bin/sh", "-c", SCRIPT, flags=VIRTIOFS)
    assert proc.returncode == 5, proc.stdout[-3000:] + proc.stderr
    assert "fs0 / virtiofs rw" in proc.stdout, proc.stdout[-3000:]
    assert "#!/bin/sh" in proc.stdout  # the image's /app/run.sh, read over virtio-fs
    out = proc.stdout + proc.stderr  # a clean end says nothing of virtiofsd, and no host path
    assert "virtiofsd" not in out and str(overlay.runc_root) not in out, out[-3000:]
    assert overlay.read_snapshot("v1", "/guest-file", tmp_path) == "written-by-the-guest\n"
    assert overlay.ctr("containers", "delete", "v1").returncode == 0
    overlay.assert_clean("v1")


def test_virtiofsd_runs_in_the_container_and_goes_with_it(overlay: Runner) -> None:
    proc = overlay.run("v2", "/bin/sh", "/app/run.sh", "sleep", flags=("--detach", *VIRTIOFS))
    assert proc.returncode == 0, proc.stderr
    overlay.wait_status("v2", "RUNNING")
    state = overlay.runc_root / overlay.ns / "v2"
    # RUNNING once `start` opened the init's FIFO; the init then starts virtiofsd, then the monitor.
    # qemu names the socket in the state folder; virtiofsd the rootfs, in the daemon's folder.
    assert ctd.wait_for(lambda: bool(tbhost.virtiofsd_processes(overlay.daemon.dir)
                                     and tbhost.qemu_processes(overlay.runc_root)), timeout=30)
    daemons = tbhost.virtiofsd_processes(overlay.daemon.dir)
    groups = [g for g in Path("/sys/fs/cgroup").glob(f"*/{overlay.ns}/v2") if g.is_dir()]
    in_group = {int(p) for g in groups for p in (g / "cgroup.procs").read_text().split()}
    assert set(daemons) <= in_group, (daemons, in_group)
    assert (state / "virtiofs.sock").is_socket()
    for pid in daemons:  # the container's own rootfs folder, and only that
        shared = [a for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a.startswith(b"--shared-dir=")]
        assert len(shared) == 1 and shared[0].endswith(f"/{overlay.ns}/v2/rootfs".encode()), shared
    overlay.ctr("task", "kill", "-s", "SIGKILL", "v2")
    overlay.wait_status("v2", "STOPPED")
    assert overlay.ctr("task", "delete", "v2").returncode == 0
    assert overlay.ctr("containers", "delete", "v2").returncode == 0
    assert not state.exists(), "the socket's state folder stayed"
    assert not [m for m in host.mountinfo() if "/v2/" in m.mount_point or m.mount_point.endswith("/v2")]
    overlay.assert_clean("v2")
    assert not tbhost.qemu_processes(overlay.runc_root)


def test_a_bad_share_choice_fails_at_create(overlay: Runner) -> None:
    proc = overlay.run("v3", "/bin/sh", "/app/run.sh", "exit", "x", "0",
                       flags=("--rm", "--annotation", "io.ukrun.rootfs.share=nfs"))
    assert proc.returncode != 0 and "is not one of auto, 9p, virtiofs" in proc.stderr, proc.stderr
    overlay.ctr("containers", "delete", "v3")
    overlay.assert_clean("v3")


def test_a_missing_virtiofsd_fails_at_create_naming_the_fix(daemon: ctd.Daemon, ns: str, tmp_path: Path,
                                                            guest_image: Path) -> None:
    config = write_ukrun_config(tmp_path / "ukrun.toml", tmp_path / "state", virtiofsd=Path("/nonexistent/virtiofsd"))
    private = ctd.start(daemon.version, tmp_path / "d", env={"UKRUN_CONFIG": str(config)})
    try:
        r = Runner(private, ns, tmp_path / "runc", tmp_path / "state", snapshotter="overlayfs")
        private.import_image(ns, guest_image, "overlayfs")
        proc = r.run("v4", "/bin/sh", "/app/run.sh", "exit", "x", "0", flags=("--rm", *VIRTIOFS))
        assert proc.returncode != 0
        assert ("[extra_binaries.virtiofsd] path '/nonexistent/virtiofsd' is not an executable file: install "
                "virtiofsd there") in proc.stderr, proc.stderr
        r.ctr("containers", "delete", "v4")
        r.assert_clean("v4")
    finally:
        ctd.stop(private.dir)


def test_a_virtiofsd_that_dies_takes_the_vm_with_it(overlay: Runner) -> None:
    # Once the guest runs from its virtio-fs root (it wrote /booted there), qemu would keep a VM whose
    # root is gone: the init must end it.
    boot = "echo up > /booted; exec /bin/busybox sleep 600"
    proc = overlay.run("v5", "/bin/sh", "-c", boot, flags=("--detach", *VIRTIOFS))
    assert proc.returncode == 0, proc.stderr
    shared: list[Path] = []  # the folder virtiofsd serves, read in the same look that finds the daemon

    def serving() -> bool:
        for pid in tbhost.virtiofsd_processes(overlay.daemon.dir):
            with contextlib.suppress(OSError):  # a process between exec's, or gone: look again
                args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                shared.extend(Path(a.split(b"=", 1)[1].decode()) for a in args if a.startswith(b"--shared-dir="))
        return bool(shared)

    assert ctd.wait_for(serving, timeout=30), "no virtiofsd served the container's rootfs"
    rootfs = shared[0]
    assert ctd.wait_for(lambda: (rootfs / "booted").exists(), timeout=60), "the guest never booted"
    for pid in tbhost.virtiofsd_processes(overlay.daemon.dir):  # this test's container's, and only those
        with contextlib.suppress(ProcessLookupError):  # the sandboxed child dies with its parent
            os.kill(pid, signal.SIGKILL)
    overlay.wait_status("v5", "STOPPED", timeout=30)
    assert not tbhost.qemu_processes(overlay.runc_root), "the VM outlived its virtiofsd"
    assert overlay.ctr("task", "delete", "v5").returncode == 0
    assert overlay.ctr("containers", "delete", "v5").returncode == 0
    overlay.assert_clean("v5")


# Tries to make set-ID files and device nodes in its root, which virtiofsd writes into the host's folder (few
# words: the kernel takes at most 32 arguments for init).
PRIVILEGED = ("b=/bin/busybox;$b touch /u /g;$b chmod u+s /u;echo u$?;$b chmod g+s /g;echo g$?;"
              "$b mknod /k b 7 0;echo k$?;$b mknod /c c 1 3;echo c$?")


def _host_modes(runner: Runner, cid: str, names: tuple[str, ...], workdir: Path) -> dict[str, int]:
    """The modes of files in the container's rootfs folder, as the host has them (0: absent)."""
    target = workdir / f"look-{cid}"
    target.mkdir()
    with Client(runner.daemon.address, runner.ns) as c:
        mounts = c.mounts(runner.snapshotter, cid)
    for m in mounts:
        host.mount(m.source, target, m.type, [*m.options, "ro"])
    try:
        return {n: (target / n).lstat().st_mode if (target / n).is_symlink() or (target / n).exists() else 0
                for n in names}
    finally:
        host.unmount_all(target)


@pytest.mark.reliability("hostile")
def test_the_guest_makes_no_set_id_file_or_device_node_in_the_host_folder(overlay: Runner, tmp_path: Path,
                                                                          report: Report) -> None:
    proc = overlay.run("v6", "/bin/sh", "-c", PRIVILEGED, flags=VIRTIOFS)
    out = proc.stdout.replace("\r", "")
    assert proc.returncode == 0, out[-3000:] + proc.stderr
    for attempt in ("u", "g", "k", "c"):
        assert f"\n{attempt}1\n" in out, out[-3000:]  # refused in the guest
    modes = _host_modes(overlay, "v6", ("u", "g", "k", "c"), tmp_path)
    assert modes["u"] and not modes["u"] & stat.S_ISUID, oct(modes["u"])
    assert modes["g"] and not modes["g"] & stat.S_ISGID, oct(modes["g"])
    assert modes["k"] == 0 and modes["c"] == 0, modes
    assert "virtiofsd" not in out + proc.stderr
    assert overlay.ctr("containers", "delete", "v6").returncode == 0
    overlay.assert_clean("v6")
    report.hostile.append(Hostile("virtiofs-guest-makes-set-id-files-and-device-nodes", "ctr", overlay.daemon.version,
                                  "(no error: the guest's chmod u+s, chmod g+s and mknod b/c fail with EPERM; the "
                                  "host's folder holds no set-ID bit and no device node)"))
