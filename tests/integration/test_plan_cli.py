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


def test_a_solo5_bundle_is_planned_from_its_kernels_own_manifest(tmp_path: Path) -> None:
    from testbed.unikernels import SOLO5, need

    bundle = tmp_path / "bundle"
    (bundle / "rootfs" / "unikernel").mkdir(parents=True)
    kernel = bundle / "rootfs" / "unikernel" / "kernel"
    kernel.write_bytes(need(SOLO5 / "test_net.spt").read_bytes())
    annotations = {"com.urunc.unikernel.unikernelType": "mirage", "com.urunc.unikernel.hypervisor": "spt",
                   "com.urunc.unikernel.binary": "/unikernel/kernel"}
    spec = {"ociVersion": "1.0.2", "root": {"path": "rootfs"}, "annotations": annotations,
            "process": {"args": ["verbose"], "env": [], "cwd": "/"}}
    (bundle / "config.json").write_text(json.dumps(spec))
    config = write_ukrun_config(tmp_path / "ukrun.toml", tmp_path / "state")
    with open(config, "a") as f:
        f.write(f'[monitors.spt]\npath = "{SOLO5 / "solo5-spt"}"\n')
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "UKRUN_CONFIG": str(config),
           "CONTAINERD_ADDRESS": str(tmp_path / "no-containerd.sock")}
    # test_net declares `service0`, and this bundle has no network namespace: the tender would refuse it.
    refused = _plan(bundle, env)
    assert refused.returncode == 1
    assert "the unikernel's Solo5 manifest declares net device service0, but the container has no network" \
        in refused.stderr, refused.stderr
    kernel.write_bytes(need(SOLO5 / "test_hello.spt").read_bytes())
    proc = _plan(bundle, env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["argv"] == [str(SOLO5 / "solo5-spt"), "--mem=256", "--", str(kernel), "verbose"]
    kernel.write_bytes((SOLO5 / "solo5-spt").read_bytes())
    wrong = _plan(bundle, env)
    assert wrong.returncode == 1
    assert "the kernel /unikernel/kernel is not a Solo5 unikernel (no Solo5 manifest note)" in wrong.stderr, \
        wrong.stderr


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


def _bundle(tmp_path: Path, keys: dict[str, str], files: dict[str, bytes], args: list[str]) -> Path:
    bundle = tmp_path / "bundle"
    for path, data in files.items():
        (bundle / "rootfs" / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (bundle / "rootfs" / path.lstrip("/")).write_bytes(data)
    urunc = {f"com.urunc.unikernel.{k}": base64.b64encode(v.encode()).decode() for k, v in keys.items()}
    (bundle / "rootfs" / "urunc.json").write_text(json.dumps(urunc))
    spec = {"ociVersion": "1.0.2", "root": {"path": "rootfs"}, "process": {"args": args, "env": ["A=1"], "cwd": "/"}}
    (bundle / "config.json").write_text(json.dumps(spec))
    return bundle


def test_urunc_v081_bundles_urunit_in_an_initrd_root_and_freebsd_from_its_block(tmp_path: Path) -> None:
    config = write_ukrun_config(tmp_path / "ukrun.toml", tmp_path / "state")
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "UKRUN_CONFIG": str(config),
           "URUNC_CONFIG_FILE": str(tmp_path / "no-urunc.toml"), "CONTAINERD_ADDRESS": str(tmp_path / "none.sock")}
    linux = _bundle(tmp_path / "l", {"unikernelType": "linux", "hypervisor": "qemu", "binary": "/boot/kernel",
                                     "initrd": "/boot/initrd"},
                    {"/boot/kernel": b"kernel", "/boot/initrd": b"070701"}, ["/urunit", "/app", "a b"])
    proc = _plan(linux, env, "--root", str(tmp_path / "runtime"))
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert plan["root"]["mode"] == "initrd" and plan["guest_files"]["files"] == {}
    assert plan["cmdline"].endswith("URUNIT_CONFIG=/urunit.conf quiet loglevel=3 rdinit=/urunit -- /app 'a b'")
    assert plan["joined_initrd"]["image"] == str(linux / "rootfs" / "boot" / "initrd")
    assert plan["joined_initrd"]["appended_bytes"] > 0 and len(plan["initrds"]) == 1
    freebsd = _bundle(tmp_path / "f", {"unikernelType": "freebsd", "hypervisor": "qemu", "binary": "/boot/kernel",
                                       "block": "/freebsd.ufs", "blkMntPoint": "/"},
                      {"/boot/kernel": b"kernel", "/freebsd.ufs": b"ufs"}, ["/sbin/init"])
    proc = _plan(freebsd, env, "--root", str(tmp_path / "runtime"))
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert plan["root"]["mode"] == "image-block"
    assert plan["cmdline"] == "vfs.root.mountfrom=ufs:/dev/vtbd0 init_path=/sbin/init"
    assert plan["argv"][plan["argv"].index("-M") + 1] == "microvm,acpi=on,pic=on,pit=on,rtc=on"
    assert plan["blocks"] == [{"id": "rootfs", "path": str(freebsd / "rootfs" / "freebsd.ufs"), "read_only": False}]
    assert not (tmp_path / "runtime").exists()
