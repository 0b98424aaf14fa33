"""Docker runs unikernel images with `docker run --runtime ukrun`: a private dockerd (testbed.docker) on a
private containerd 2.x whose stock runc v2 shim runs ukrun, with Docker's classic image store (an
overlay2 folder rootfs, shared over 9p) and with its containerd image store on the blockfile snapshotter.
Images come in with `docker load`; output, exit codes, `docker ps`, `logs`, `stop` and `rm` behave; a
published port reaches the linux guest; a bad image gets ctr's error; nothing is left after."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from testbed import containerd as ctd
from testbed import docker, guest, images
from tests.integration.conftest import APP, SNAPSHOTTER, write_ukrun_config
from tests.integration.runner import UKRUN, Runner
from ukrun.image.build import Entry
from ukrun.unikernel import UnikernelConfig

IMAGE = "localhost/ukrun/guest:1"
NET_APP = """#!/bin/sh
echo "guest up"
while true; do echo "guest kernel $(/bin/busybox uname -r)" | /bin/busybox nc -l -p 8080; done
"""
BAD = UnikernelConfig("linux", "qemu", "/unikernel/kernel")
BAD_SENTENCE = "kernel '/unikernel/kernel' climbs above the image's root with '..'; refused"


def engine_images(work: Path) -> dict[str, Path]:
    """The images the Docker and Podman tests load: the linux guest, a networked one, and a bad one."""
    escape = [Entry("/unikernel/kernel", symlink="../../../../../../etc/hostname")]
    return {
        "guest": guest.linux_image(work / "guest", IMAGE, APP),
        "net": guest.linux_image(work / "net", "localhost/ukrun/net:1", NET_APP),
        "bad": images.raw_image(work / "bad", "localhost/ukrun/bad:1", [escape], BAD, cmd=("/app",)),
    }


@pytest.fixture(scope="module")
def docker_images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return engine_images(tmp_path_factory.mktemp("docker-images"))


@pytest.fixture(scope="module")
def containerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ctd.Daemon]:
    folder = tmp_path_factory.mktemp("docker-ctd")
    config = write_ukrun_config(folder / "ukrun.toml", folder / "ukrun-state")
    d = ctd.start("2", folder / "d", env={"UKRUN_CONFIG": str(config)})
    yield d
    ctd.stop(d.dir)


@pytest.fixture(params=[False, True], ids=["classic-store", "containerd-store"])
def dockerd(request: pytest.FixtureRequest, containerd: ctd.Daemon, tmp_path: Path,
            docker_images: dict[str, Path]) -> Iterator[docker.Dockerd]:
    d = docker.start(tmp_path / "dockerd", containerd, UKRUN, containerd_store=request.param)
    try:
        for tar in docker_images.values():
            loaded = d.docker("load", "-i", str(tar))
            assert loaded.returncode == 0, loaded.stderr
        yield d
        d.docker("rm", "--force", *d.docker("ps", "-aq").stdout.split())
        assert docker.leftovers(d) == []
        d.docker("image", "rm", "--force", IMAGE, "localhost/ukrun/net:1", "localhost/ukrun/bad:1")
    finally:
        docker.stop(d)
    state = containerd.dir.parent / "ukrun-state"
    views = [p for p in (state / "views").glob("*") if p.is_dir()]  # a view's folder, while it exists
    assert not views and not [p for p in (state / "copies").glob("*/*")], "a view or a copy stayed"


def ask(inside: Callable[..., subprocess.CompletedProcess[str]], host: str, port: str) -> str:
    """The guest's answer on `port`, polling (bounded) while it boots; a proxy may hold a connection open
    until the guest listens, so each try has its own time limit."""
    answer, deadline = "", time.monotonic() + 120
    while "guest kernel" not in answer and time.monotonic() < deadline:
        try:
            answer = inside("busybox", "nc", "-w", "2", host, port, timeout=5).stdout
        except subprocess.TimeoutExpired:
            continue
        time.sleep(0.5)
    return answer


def _run(d: docker.Dockerd, *args: str) -> list[str]:
    return ["run", "--pull", "never", "--runtime", "ukrun", *args]


def test_docker_runs_the_linux_guest_and_gives_back_its_output_and_exit_code(dockerd: docker.Dockerd) -> None:
    proc = dockerd.docker(*_run(dockerd, "--name", "g1", "-e", "GREETING=hi", "--network", "none", IMAGE,
                                "/bin/sh", "/app/run.sh", "exit", "hello", "3"))
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "guest says hello, GREETING=hi" in proc.stdout, proc.stdout + proc.stderr
    assert "guest says hello, GREETING=hi" in dockerd.docker("logs", "g1").stdout
    assert dockerd.docker("ps", "-a", "--filter", "name=g1", "--format", "{{.Status}}").stdout.startswith("Exited (3)")
    assert dockerd.docker("rm", "g1").returncode == 0
    assert docker.leftovers(dockerd) == []


def test_a_published_port_reaches_the_networked_guest_and_stop_ends_it(dockerd: docker.Dockerd) -> None:
    proc = dockerd.docker(*_run(dockerd, "-d", "--name", "n1", "-p", "8082:8080", "localhost/ukrun/net:1",
                                "/bin/sh", "/app/run.sh"))
    assert proc.returncode == 0, proc.stderr
    assert dockerd.docker("ps", "--filter", "name=n1", "--format", "{{.Status}}").stdout.startswith("Up")
    answer = ask(dockerd.inside, "127.0.0.1", "8082")
    assert answer.strip() == f"guest kernel {guest.kernel_release()}", dockerd.docker("logs", "n1").stdout
    # The classic store's overlay folder is shared; the containerd store's blockfile snapshot is handed over
    # (proven the container's own: runtime.facts.keyed_snapshot, runtime.handoff), its artifacts viewed.
    argv = " ".join(docker.monitor_argv(dockerd))
    snapshots = f"{dockerd.containerd.dir}/root/io.containerd.snapshotter.v1.blockfile/"
    if dockerd.containerd_store:
        assert f"file={snapshots}" in argv and "-fsdev" not in argv, argv
        assert "/views/" in argv.split("-kernel ")[1].split()[0], argv
    else:
        assert f"path={dockerd.dir}/root/overlay2/" in argv and snapshots not in argv, argv
    stopped = dockerd.docker("stop", "--time", "10", "n1")
    assert stopped.returncode == 0, stopped.stderr
    assert dockerd.docker("ps", "-a", "--filter", "name=n1", "--format", "{{.State}}").stdout.strip() == "exited"
    assert dockerd.docker("rm", "n1").returncode == 0
    assert docker.leftovers(dockerd) == []


def test_a_bad_image_gets_the_error_it_gets_through_ctr(dockerd: docker.Dockerd, tmp_path: Path,
                                                        docker_images: dict[str, Path]) -> None:
    proc = dockerd.docker(*_run(dockerd, "--rm", "--name", "b1", "--network", "none", "localhost/ukrun/bad:1"))
    assert proc.returncode != 0 and BAD_SENTENCE in proc.stderr, proc.stderr
    runner = Runner(dockerd.containerd, "bad", tmp_path / "runc", dockerd.containerd.dir.parent / "ukrun-state")
    dockerd.containerd.import_image("bad", docker_images["bad"], SNAPSHOTTER)
    through_ctr = runner.run("b1", image="localhost/ukrun/bad:1", flags=("--rm",))
    assert through_ctr.returncode != 0 and BAD_SENTENCE in through_ctr.stderr, through_ctr.stderr
    runner.ctr("containers", "delete", "b1")
    runner.ctr("images", "rm", "localhost/ukrun/bad:1")
    assert docker.leftovers(dockerd) == []


def unikraft_image(workdir: Path) -> Path:
    """Unikraft's hello (scripts/build-unikernels) reading a file of its container's rootfs over 9p."""
    from testbed.unikernels import UNIKRAFT, need
    from ukrun.image.build import build_unikernel_image

    kernel = need(UNIKRAFT / "ukrun-hello_qemu-x86_64")
    tar = workdir / "uk.tar"
    config = UnikernelConfig("unikraft", "qemu", "/unikernel/kernel", version="0.16.3", mount_rootfs=True)
    base = [Entry("/greeting.txt", data=b"hello from the container's rootfs\n")]
    build_unikernel_image(tar, "localhost/ukrun/uk-9p:1", config, kernel, None, base=base, cmd=("/greeting.txt",))
    return tar


def test_a_unikraft_unikernel_reads_its_rootfs_folder(dockerd: docker.Dockerd, tmp_path: Path) -> None:
    loaded = dockerd.docker("load", "-i", str(unikraft_image(tmp_path)))
    assert loaded.returncode == 0, loaded.stderr
    proc = dockerd.docker(*_run(dockerd, "--rm", "--network", "none", "localhost/ukrun/uk-9p:1"))
    assert proc.returncode == 0 and "hello from the container's rootfs" in proc.stdout, proc.stdout + proc.stderr
    dockerd.docker("image", "rm", "localhost/ukrun/uk-9p:1")
    assert docker.leftovers(dockerd) == []
