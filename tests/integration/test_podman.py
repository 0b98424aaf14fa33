"""Podman runs unikernel images with `podman --runtime ukrun run`: conmon calls ukrun directly, with no
containerd and no shim. The rootfs is Podman's overlay folder, shared over 9p, and the artifacts are read
in place from it. Podman's storage, network and engine state are private (testbed.podman); images come in
with `podman load`; output, exit codes, `podman ps`, `logs`, `stop` and `rm` behave; the networked guest
answers on its address in Podman's network and on a published port; a bad image gets ctr's error; no
state of ukrun's is left after."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed import guest, podman
from tests.integration.conftest import SNAPSHOTTER
from tests.integration.runner import UKRUN, Runner
from tests.integration.test_docker import BAD_SENTENCE, IMAGE, ask, engine_images, unikraft_image

UKRUN_ROOT = Path("/run/ukrun/runtime")  # ukrun's default: Podman passes it no --root


@pytest.fixture(scope="module")
def podman_images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return engine_images(tmp_path_factory.mktemp("podman-images"))


@pytest.fixture
def pm(tmp_path: Path, podman_images: dict[str, Path]) -> Iterator[podman.Podman]:
    p = podman.make(tmp_path / "podman", UKRUN)
    try:
        for tar in podman_images.values():
            loaded = p.podman("load", "-i", str(tar))
            assert loaded.returncode == 0, loaded.stderr
        yield p
    finally:
        podman.remove(p)


def _ids(p: podman.Podman) -> list[str]:
    return p.podman("ps", "-aq", "--no-trunc").stdout.split()


def _left(p: podman.Podman, ids: list[str]) -> list[str]:
    return [*podman.leftovers(p), *(f"ukrun state {c}" for c in ids if (UKRUN_ROOT / c).exists())]


def test_podman_runs_the_linux_guest_and_gives_back_its_output_and_exit_code(pm: podman.Podman) -> None:
    proc = pm.podman("--runtime", "ukrun", "run", "--name", "g1", "-e", "GREETING=hi", "--network", "none",
                     IMAGE, "/bin/sh", "/app/run.sh", "exit", "hello", "3")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "guest says hello, GREETING=hi" in proc.stdout, proc.stdout + proc.stderr
    assert "guest says hello, GREETING=hi" in pm.podman("logs", "g1").stdout
    ids = _ids(pm)
    assert pm.podman("ps", "-a", "--format", "{{.Status}}").stdout.startswith("Exited (3)")
    assert pm.podman("rm", "g1").returncode == 0
    assert _left(pm, ids) == []


def test_the_networked_guest_answers_in_podmans_network_and_on_a_published_port(pm: podman.Podman) -> None:
    proc = pm.podman("--runtime", UKRUN, "run", "-d", "--name", "n1", "-p", "127.0.0.1:8083:8080",
                     "localhost/ukrun/net:1", "/bin/sh", "/app/run.sh")
    assert proc.returncode == 0, proc.stderr
    ids = _ids(pm)
    address = pm.podman("inspect", "n1", "--format", "{{.NetworkSettings.IPAddress}}").stdout.strip()
    assert address.startswith("198.51.100."), address
    assert pm.podman("ps", "--format", "{{.Status}}").stdout.startswith("Up")
    for host, port in ((address, "8080"), ("127.0.0.1", "8083")):
        answer = ask(pm.inside, host, port)
        assert answer.strip() == f"guest kernel {guest.kernel_release()}", pm.podman("logs", "n1").stdout
    stopped = pm.podman("stop", "--time", "10", "n1")
    assert stopped.returncode == 0, stopped.stderr
    assert pm.podman("inspect", "n1", "--format", "{{.State.Status}}").stdout.strip() == "exited"
    assert pm.podman("rm", "n1").returncode == 0
    assert _left(pm, ids) == []


def test_a_bad_image_gets_the_error_it_gets_through_ctr(pm: podman.Podman, runner: Runner,
                                                        podman_images: dict[str, Path]) -> None:
    proc = pm.podman("--runtime", "ukrun", "run", "--rm", "--name", "b1", "--network", "none", "localhost/ukrun/bad:1")
    assert proc.returncode != 0 and BAD_SENTENCE in proc.stderr, proc.stderr
    assert _ids(pm) == []
    runner.daemon.import_image(runner.ns, podman_images["bad"], SNAPSHOTTER)
    through_ctr = runner.run("b1", image="localhost/ukrun/bad:1", flags=("--rm",))
    assert through_ctr.returncode != 0 and BAD_SENTENCE in through_ctr.stderr, through_ctr.stderr
    runner.ctr("containers", "delete", "b1")


def test_a_unikraft_unikernel_reads_its_rootfs_folder(pm: podman.Podman, tmp_path: Path) -> None:
    loaded = pm.podman("load", "-i", str(unikraft_image(tmp_path)))
    assert loaded.returncode == 0, loaded.stderr
    proc = pm.podman("--runtime", "ukrun", "run", "--name", "u1", "--network", "none", "localhost/ukrun/uk-9p:1")
    assert proc.returncode == 0 and "hello from the container's rootfs" in proc.stdout, proc.stdout + proc.stderr
    ids = _ids(pm)
    assert pm.podman("rm", "u1").returncode == 0
    assert _left(pm, ids) == []
