"""Fixtures for the tests that run inside the devmapper guest (`make test-devmapper`) on a real thin pool."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed import containerd as ctd
from testbed import devmapper
from testbed.unikernels import SOLO5
from tests.integration.conftest import write_ukrun_config

IN_GUEST = os.environ.get("UKRUN_DM_GUEST") == "1"
REPO = Path(__file__).resolve().parents[2]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/devmapper" in str(item.fspath):
            item.add_marker(pytest.mark.devmapper)
            if not IN_GUEST:
                item.add_marker(pytest.mark.skip(reason="runs inside the devmapper guest: make test-devmapper"))


@pytest.fixture(scope="session")
def pool() -> str:
    return os.environ.get("UKRUN_DM_POOL", "containerd-pool")


@pytest.fixture(scope="session", params=ctd.VERSIONS, ids=[f"containerd-{v}" for v in ctd.VERSIONS])
def dm_daemon(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
              pool: str) -> Iterator[ctd.Daemon]:
    """containerd with the devmapper snapshotter on a fresh pool; qemu is replaced by testbed/checker.py,
    solo5-spt is the real one."""
    devmapper.reset_pool(pool)
    folder = tmp_path_factory.mktemp(f"dm{request.param}")
    checker = folder / "checker"
    checker.write_text(f'#!/bin/sh\nexec {sys.executable} {REPO / "testbed" / "checker.py"} "$@"\n')
    checker.chmod(0o755)
    config = write_ukrun_config(folder / "ukrun.toml", folder / "ukrun-state", path=str(checker))
    with open(config, "a") as f:  # Solo5's spt needs no KVM: it runs in this guest for real, when built
        f.write(f'[monitors.spt]\npath = "{SOLO5 / "solo5-spt"}"\ndefault_memory_mb = 32\n')
    d = ctd.start(request.param, folder / "d", env={"UKRUN_CONFIG": str(config)}, devmapper_pool=pool)
    yield d
    ctd.stop(d.dir)
