"""Linux images made the way urunc's tooling makes them, whose init is urunc's urunit (built from its public
source by scripts/build-unikernels, with a small guest kernel and a probe program that prints what it is
given), boot through ctr, the stock shim and ukrun: from the container's block rootfs, from the image's
initrd, from the rootfs folder over 9p and over virtio-fs, and from the image's own block file. The app gets
the argv, environment, uid, gid and working folder that urunc would give it, and finds nothing of ukrun
(/.ukrun) in its root. The images carry nothing of ukrun: no artifact mark, `/urunc.json` and annotations.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed import containerd as ctd
from testbed.unikernels import need_urunit
from tests.integration.conftest import SNAPSHOTTER, VIRTIOFSD
from tests.integration.runner import Runner
from ukrun import cpio
from ukrun.image.build import Entry, ImageBuilder
from ukrun.unikernel import URUNC_JSON, UnikernelConfig

pytestmark = pytest.mark.unikernels

ARGS = ("/urunit", "/app/probe", "first", "two words")  # urunit joins a quoted argument; it must come last
FLAGS = ("--rm", "--env", "GREETING=hello there", "--env", "EMPTY=", "--user", "1000:1001", "--cwd", "/work")
DIRS = ("/dev", "/proc", "/sys", "/tmp", "/work")


@pytest.fixture
def urunit_runner(daemon: ctd.Daemon, ns: str, tmp_path: Path) -> Iterator[Runner]:
    need_urunit()
    r = Runner(daemon, ns, tmp_path / "runc", daemon.dir.parent / "ukrun-state")
    yield r
    for line in r.ctr("containers", "ls", "-q").stdout.split():
        r.ctr("task", "delete", "--force", line)
        r.ctr("containers", "delete", line)


def _image(runner: Runner, workdir: Path, name: str, config: UnikernelConfig, payload: list[Entry],
           snapshotter: str = SNAPSHOTTER) -> str:
    """One layer, as urunc's tooling packs an image: the kernel, the payload, /urunc.json; annotations too."""
    _, _, kernel = need_urunit()
    builder = ImageBuilder(name, workdir / f"build-{name.replace('/', '_').replace(':', '_')}")
    builder.add_layer([Entry("/boot/kernel", source=kernel), *payload,
                       Entry(URUNC_JSON, data=config.urunc_json())])
    tar = workdir / f"{name.replace('/', '_').replace(':', '_')}.tar"
    builder.write(tar, config.annotations())
    runner.daemon.import_image(runner.ns, tar, snapshotter)
    return name


def _root_files() -> list[Entry]:
    urunit, probe, _ = need_urunit()
    return [*(Entry(d, directory=True, mode=0o755) for d in DIRS),
            Entry("/urunit", source=urunit, mode=0o755), Entry("/app/probe", source=probe, mode=0o755)]


def _check(proc: subprocess.CompletedProcess[str]) -> None:
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr
    lines = [line.removeprefix("ukrun-probe: ") for line in out.splitlines() if line.startswith("ukrun-probe: ")]
    assert lines[:3] == ["argv[0]=/app/probe", "argv[1]=first", "argv[2]=two words"], out[-3000:]
    env = {line.removeprefix("env ") for line in lines if line.startswith("env ")}
    assert {"GREETING=hello there", "EMPTY="} <= env, lines
    assert not [e for e in env if e.startswith(("URUNIT_", "ukrun."))], env  # urunit's own, not the app's
    assert "uid=1000 gid=1001" in lines and "cwd=/work" in lines, lines
    assert "/.ukrun absent" in lines and lines[-1] == "done", lines


def test_urunit_on_the_containers_block_rootfs(urunit_runner: Runner, tmp_path: Path) -> None:
    config = UnikernelConfig("linux", "qemu", "/boot/kernel", mount_rootfs=True)
    image = _image(urunit_runner, tmp_path, "ukrun/urunit-block:1", config, _root_files())
    _check(urunit_runner.run("ub1", *ARGS, image=image, flags=FLAGS))
    urunit_runner.assert_clean("ub1")


def test_urunit_on_an_initrd_root_reads_the_configuration_appended_to_it(urunit_runner: Runner,
                                                                        tmp_path: Path) -> None:
    urunit, probe, _ = need_urunit()
    initrd = tmp_path / "initrd.cpio"  # uncompressed newc, as urunc's tooling makes it
    initrd.write_bytes(cpio.archive({"/urunit": urunit.read_bytes(), "/app/probe": probe.read_bytes(),
                                     "/work/.keep": b""}, file_mode=0o755))
    config = UnikernelConfig("linux", "qemu", "/boot/kernel", initrd="/boot/initrd")
    image = _image(urunit_runner, tmp_path, "ukrun/urunit-initrd:1", config, [Entry("/boot/initrd", source=initrd)])
    _check(urunit_runner.run("ui1", *ARGS, image=image, flags=FLAGS))
    urunit_runner.assert_clean("ui1")


@pytest.mark.parametrize("share", ["9p", "virtiofs"])
def test_urunit_on_the_rootfs_folder(urunit_runner: Runner, tmp_path: Path, share: str) -> None:
    if share == "virtiofs" and not VIRTIOFSD.exists():
        pytest.fail(f"no virtiofsd at {VIRTIOFSD}: run scripts/setup")
    config = UnikernelConfig("linux", "qemu", "/boot/kernel", mount_rootfs=True)
    image = _image(urunit_runner, tmp_path, f"ukrun/urunit-{share}:1", config, _root_files(), "overlayfs")
    overlay = Runner(urunit_runner.daemon, urunit_runner.ns, urunit_runner.runc_root, urunit_runner.state_root,
                     snapshotter="overlayfs")
    cid = f"uf{share[0]}"
    _check(overlay.run(cid, *ARGS, image=image, flags=(*FLAGS, "--annotation", f"io.ukrun.rootfs.share={share}")))
    overlay.assert_clean(cid)


def test_urunit_on_the_images_own_block_file(urunit_runner: Runner, tmp_path: Path) -> None:
    # com.urunc.unikernel.block with blkMntPoint /: the image's ext4 file is the root device, opened in the
    # container's own rootfs (its copy: the artifact view is read-only and shared)
    tree = tmp_path / "tree"
    for entry in _root_files():
        target = tree / entry.path.lstrip("/")
        if entry.directory:
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            assert entry.source is not None
            target.write_bytes(entry.source.read_bytes())
            target.chmod(entry.mode)
    disk = tmp_path / "disk.ext4"
    subprocess.run(["mkfs.ext4", "-q", "-d", str(tree), str(disk), "16M"], check=True)
    config = UnikernelConfig("linux", "qemu", "/boot/kernel", block="/disk.ext4", block_mount_point="/")
    image = _image(urunit_runner, tmp_path, "ukrun/urunit-image-block:1", config, [Entry("/disk.ext4", source=disk)])
    _check(urunit_runner.run("uk1", *ARGS, image=image, flags=FLAGS[1:]))
    # the guest mounted it read-write: its ext4 superblock changed in the container's copy, not in the image
    after = urunit_runner.read_snapshot_bytes("uk1", "/disk.ext4", tmp_path)
    assert after[1024:2048] != disk.read_bytes()[1024:2048]
    assert urunit_runner.ctr("containers", "delete", "uk1").returncode == 0
    urunit_runner.assert_clean("uk1")

