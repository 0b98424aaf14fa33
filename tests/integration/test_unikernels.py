"""Real unikernels through ctr, the stock shim and ukrun: Solo5 on spt and hvt.

They are built from source trees the user names by `scripts/build-unikernels` into $UKRUN_UNIKERNELS
(default /var/tmp/ukrun-unikernels); without them these tests skip, naming the command.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed import containerd as ctd
from testbed.unikernels import SOLO5, UNIKRAFT, need
from tests.integration.conftest import SNAPSHOTTER
from tests.integration.runner import Runner
from ukrun.image.build import Entry, build_unikernel_image
from ukrun.unikernel import UnikernelConfig

MONITORS = ("spt", "hvt")


def _image(runner: Runner, workdir: Path, test: str, monitor: str, mount_rootfs: bool, cmd: tuple[str, ...]) -> str:
    name = f"ukrun/solo5-{test}-{monitor}:1"
    config = UnikernelConfig("mirage", monitor, "/unikernel/kernel", mount_rootfs=mount_rootfs)
    tar = workdir / f"{test}-{monitor}.tar"
    build_unikernel_image(tar, name, config, need(SOLO5 / f"test_{test}.{monitor}"), cmd=cmd)
    runner.daemon.import_image(runner.ns, tar, SNAPSHOTTER)
    return name


@pytest.mark.parametrize("monitor", MONITORS)
def test_a_solo5_unikernel_runs_and_its_exit_code_comes_back(solo5: Runner, tmp_path: Path, monitor: str) -> None:
    image = _image(solo5, tmp_path, "hello", monitor, False, ("Hello_from_ukrun",))
    proc = solo5.run("h1", image=image, flags=("--rm",))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Hello, World" in proc.stdout and "Command line is: 'Hello_from_ukrun'" in proc.stdout, proc.stdout
    solo5.assert_clean("h1")
    abort = _image(solo5, tmp_path, "dumpcore", monitor, False, ())
    proc = solo5.run("a1", image=abort, flags=("--rm",))
    assert proc.returncode == 255 and "solo5_abort() called" in proc.stdout, proc.stdout + proc.stderr
    solo5.assert_clean("a1")


@pytest.mark.parametrize("monitor", MONITORS)
def test_a_solo5_unikernel_gets_its_containers_own_snapshot_as_its_block_device(
    solo5: Runner, tmp_path: Path, monitor: str
) -> None:
    # test_blk writes and reads back its `storage` device: the container's blockfile snapshot, raw.
    image = _image(solo5, tmp_path, "blk", monitor, True, ())
    # A container of the same image that never runs shows what the snapshot held before.
    assert solo5.ctr("containers", "create", "--snapshotter", SNAPSHOTTER, image, "ref").returncode == 0
    before = Path(solo5.snapshot_file("ref")).read_bytes()[:1 << 20]
    proc = solo5.run("b1", image=image)
    assert proc.returncode == 0 and "SUCCESS" in proc.stdout, proc.stdout + proc.stderr
    after = Path(solo5.snapshot_file("b1")).read_bytes()[:1 << 20]
    assert after != before, "what the unikernel wrote is not in the container's snapshot"
    solo5.ctr("task", "delete", "b1")
    for cid in ("b1", "ref"):
        assert solo5.ctr("containers", "delete", cid).returncode == 0
    solo5.assert_clean("b1")


def test_a_kernel_that_is_no_solo5_unikernel_is_refused_at_create_naming_the_fix(solo5: Runner, tmp_path: Path) -> None:
    # A Solo5 tender is an ELF executable with no Solo5 manifest: the very thing a wrong image would carry.
    config = UnikernelConfig("mirage", "spt", "/unikernel/kernel")
    tar = tmp_path / "not-solo5.tar"
    build_unikernel_image(tar, "ukrun/not-solo5:1", config, SOLO5 / "solo5-spt")
    solo5.daemon.import_image(solo5.ns, tar, SNAPSHOTTER)
    proc = solo5.run("x1", image="ukrun/not-solo5:1", flags=("--rm",))
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert ("the kernel /unikernel/kernel is not a Solo5 unikernel (no Solo5 manifest note), and monitor spt runs "
            "only Solo5 unikernels: use a kernel built for solo5-spt") in out, out
    solo5.ctr("containers", "delete", "x1")
    solo5.assert_clean("x1")


@pytest.fixture
def unikraft(runner_for_qemu: Runner) -> Runner:
    need(UNIKRAFT / "ukrun-hello_qemu-x86_64")
    return runner_for_qemu


@pytest.fixture
def runner_for_qemu(daemon: ctd.Daemon, ns: str, tmp_path: Path) -> Iterator[Runner]:
    r = Runner(daemon, ns, tmp_path / "runc", daemon.dir.parent / "ukrun-state")
    yield r
    for line in r.ctr("containers", "ls", "-q").stdout.split():
        r.ctr("task", "delete", "--force", line)
        r.ctr("containers", "delete", line)


def _unikraft_image(runner: Runner, workdir: Path, name: str, *, initrd: bool, mount_rootfs: bool,
                    cmd: tuple[str, ...]) -> str:
    config = UnikernelConfig("unikraft", "qemu", "/unikernel/kernel", initrd="/unikernel/rootfs.cpio" if initrd else "",
                             version="0.16.3", mount_rootfs=mount_rootfs)
    tar = workdir / f"{name.replace('/', '_').replace(':', '_')}.tar"
    base = [Entry("/greeting.txt", data=b"hello from the container's rootfs\n")]
    build_unikernel_image(tar, name, config, UNIKRAFT / "ukrun-hello_qemu-x86_64",
                          UNIKRAFT / "ukrun-hello-rootfs.cpio" if initrd else None, base=base, cmd=cmd)
    runner.daemon.import_image(runner.ns, tar, SNAPSHOTTER)
    return name


def test_a_unikraft_unikernel_boots_from_its_initrd_with_urunc_s_command_line(unikraft: Runner,
                                                                             tmp_path: Path) -> None:
    image = _unikraft_image(unikraft, tmp_path, "ukrun/uk-initrd:1", initrd=True, mount_rootfs=False,
                            cmd=("/hello.txt", "arg2"))
    proc = unikraft.run("u1", image=image, flags=("--rm", "--env", "GREETING=hi"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "argv[1]=/hello.txt" in out and "env GREETING=hi" in out and "hello from the initrd rootfs" in out, out
    unikraft.assert_clean("u1")
    crash = unikraft.run("u2", "/hello.txt", "abort", image=image, flags=("--rm",))
    assert crash.returncode == 1 and "Abnormal termination" in crash.stdout, crash.stdout + crash.stderr
    unikraft.assert_clean("u2")


def test_a_unikraft_unikernel_boots_from_its_containers_rootfs_over_9p(unikraft: Runner, tmp_path: Path) -> None:
    # On a block snapshotter too: Unikraft reads no block device, so the mounted folder is shared.
    image = _unikraft_image(unikraft, tmp_path, "ukrun/uk-9p:1", initrd=False, mount_rootfs=True,
                            cmd=("/greeting.txt",))
    proc = unikraft.run("u3", image=image, flags=("--rm",))
    assert proc.returncode == 0 and "hello from the container's rootfs" in proc.stdout, proc.stdout + proc.stderr
    unikraft.assert_clean("u3")


def test_a_container_read_in_place_is_deleted_with_the_standard_librarys_basics(solo5: Runner, tmp_path: Path) -> None:
    """It holds nothing but its processes, cgroups and state folder (runtime.hot.bare): the shim's ukrun deletes it
    reading no configuration and asking containerd nothing, so its delete marks no `released` phase, which the
    full delete (runtime.verbs) marks; and it leaves nothing."""
    import json

    image = _image(solo5, tmp_path, "hello", "hvt", False, ("bare",))
    proc = solo5.run("bd1", image=image, flags=("--rm",))
    assert proc.returncode == 0 and "Command line is: 'bare'" in proc.stdout, proc.stdout + proc.stderr
    marks = [json.loads(line) for line in (solo5.state_root / "timing.jsonl").read_text().splitlines()]
    assert [m["phase"] for m in marks if m["container"] == "bd1" and m["verb"] == "delete"] == [
        "start", "stopped", "done"]
    solo5.assert_clean("bd1")


def test_a_unikernel_whose_rootfs_never_goes_to_the_vm_is_read_in_place_with_no_view_or_label(
        solo5: Runner, tmp_path: Path) -> None:
    """No mountRootfs: the rootfs stays mounted until delete, and the kernel is read there (artifacts.source),
    as urunc reads it: no view is made or held, and containerd's record of the container gets no label."""
    from ukrun.artifacts.views import user_label
    from ukrun.containerd.client import Client

    image = _image(solo5, tmp_path, "hello", "hvt", False, ("in_place",))
    proc = solo5.run("ip1", image=image)  # no --rm: its record stays, to be read
    assert proc.returncode == 0 and "Command line is: 'in_place'" in proc.stdout, proc.stdout + proc.stderr
    assert solo5.views() == []
    with Client(solo5.daemon.address, solo5.ns) as c:
        (record,) = [r for r in c.list_containers() if r.id == "ip1"]
    assert user_label(SNAPSHOTTER) not in record.labels, record.labels
    assert solo5.ctr("containers", "delete", "ip1").returncode == 0  # ctr run deleted its task
    solo5.assert_clean("ip1")
