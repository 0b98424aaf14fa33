"""`ukrun plan --bundle DIR --json`: what create would do, printed without doing it, for a bundle written
by hand as urunc's tooling writes it and for one whose rootfs is a containerd snapshot."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

from testbed import containerd as ctd
from testbed import host as tbhost
from tests.integration.conftest import SNAPSHOTTER, write_ukrun_config
from tests.integration.runner import IMAGE, UKRUN, Runner
from ukrun import host

URUNC_KEYS = {"unikernelType": "unikraft", "hypervisor": "qemu", "binary": "/unikernel/app",
              "initrd": "/unikernel/rootfs.cpio", "unikernelVersion": "0.17.0"}


def _plan(bundle: Path, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([UKRUN, *extra, "plan", "--bundle", str(bundle), "--json"], capture_output=True,
                          text=True, env=env, timeout=60)


def test_a_hand_written_urunc_bundle(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    (bundle / "rootfs" / "unikernel").mkdir(parents=True)
    (bundle / "rootfs" / "unikernel" / "app").write_bytes(b"kernel")
    (bundle / "rootfs" / "unikernel" / "rootfs.cpio").write_bytes(b"cpio")
    urunc = {f"com.urunc.unikernel.{k}": base64.b64encode(v.encode()).decode() for k, v in URUNC_KEYS.items()}
    (bundle / "rootfs" / "urunc.json").write_text(json.dumps(urunc))
    spec = {"ociVersion": "1.0.2", "root": {"path": "rootfs"},
            "process": {"args": ["/hello.txt"], "env": ["A=1"], "cwd": "/"}}
    (bundle / "config.json").write_text(json.dumps(spec))
    before = sorted(str(p) for p in bundle.rglob("*"))
    config = write_ukrun_config(tmp_path / "ukrun.toml", tmp_path / "state")
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "UKRUN_CONFIG": str(config),
           "CONTAINERD_ADDRESS": str(tmp_path / "no-containerd.sock")}
    proc = _plan(bundle, env, "--root", str(tmp_path / "runtime"))
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert plan["guest"] == "unikraft" and plan["monitor"] == "qemu" and plan["root"]["mode"] == "initrd"
    assert plan["cmdline"] == 'Unikraft env.vars=[ A=1 ] vfs.fstab=[ "initrd0:/:extract:::" ] -- /hello.txt'
    assert plan["argv"][plan["argv"].index("-kernel") + 1] == str(bundle / "rootfs" / "unikernel" / "app")
    assert plan["initrds"] == [str(bundle / "rootfs" / "unikernel" / "rootfs.cpio")]
    assert plan["exit_decoding"] == "unikraft"
    assert sorted(str(p) for p in bundle.rglob("*")) == before and not (tmp_path / "runtime").exists()
    bad = dict(URUNC_KEYS, hypervisor="spt")
    (bundle / "rootfs" / "urunc.json").write_text(json.dumps(
        {f"com.urunc.unikernel.{k}": base64.b64encode(v.encode()).decode() for k, v in bad.items()}))
    refused = _plan(bundle, env)
    assert refused.returncode == 1
    assert "a unikraft guest does not run on spt; it runs on qemu, firecracker" in refused.stderr, refused.stderr


def test_a_bundle_on_a_containerd_snapshot_is_proven_before_it_is_planned_as_a_block_device(
    daemon: ctd.Daemon, ns: str, tmp_path: Path, guest_image: Path,
) -> None:
    runner = Runner(daemon, ns, tmp_path / "runc", tmp_path / "state")
    daemon.import_image(ns, guest_image, SNAPSHOTTER)
    assert runner.ctr("containers", "create", "--snapshotter", SNAPSHOTTER, IMAGE, "p1").returncode == 0
    bundle = tmp_path / "p1"
    (bundle / "rootfs").mkdir(parents=True)
    backing = runner.snapshot_file("p1")
    host.mount(backing, bundle / "rootfs", "ext4", ["loop"])
    spec = {"ociVersion": "1.0.2", "root": {"path": "rootfs"},
            "process": {"args": ["/bin/sh", "/app/run.sh"], "env": [], "cwd": "/"}}
    (bundle / "config.json").write_text(json.dumps(spec))
    env = {**daemon.env(), "NAMESPACE": ns,
           "UKRUN_CONFIG": str(write_ukrun_config(tmp_path / "ukrun.toml", tmp_path / "state"))}
    try:
        proc = _plan(bundle, env)
        assert proc.returncode == 0, proc.stderr
        plan = json.loads(proc.stdout)
        assert plan["root"]["mode"] == "block" and plan["root"]["device"] == backing
        assert "is backed by the container's snapshot file" in plan["root"]["rule"]
        assert host.mounts_at(bundle / "rootfs"), "plan must not unmount anything"
        # The same rootfs planned for another container ID is not that container's snapshot: a folder.
        text = subprocess.run([UKRUN, "plan", "--bundle", str(bundle), "--id", "someone-else"], capture_output=True,
                              text=True, env=env, timeout=60)
        assert text.returncode == 0 and "root       9p" in text.stdout, text.stdout + text.stderr
    finally:
        tbhost.unmount_below(bundle)
    runner.ctr("containers", "delete", "p1")
    runner.assert_clean("p1")
