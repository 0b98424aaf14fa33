"""The README's configuration is the configuration the tests use."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from testbed import containerd as ctd
from testbed import cri, docker, podman

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.mark.parametrize("version", ctd.VERSIONS)
def test_the_readme_shows_the_runtime_handler_the_cri_tests_configure(version: str) -> None:
    assert cri.handler(version, "/usr/local/bin/ukrun") in README.read_text()


@pytest.mark.parametrize("containerd_store", [False, True], ids=["classic-store", "containerd-store"])
def test_the_readme_shows_the_daemon_json_the_docker_tests_configure(containerd_store: bool) -> None:
    shown = json.dumps(docker.daemon_json("/usr/local/bin/ukrun", containerd_store), indent=2)
    assert f"```json\n{shown}\n```" in README.read_text()


def test_the_readme_shows_the_runtime_entry_the_podman_tests_configure() -> None:
    assert f"```toml\n{podman.runtimes('/usr/local/bin/ukrun')}```" in README.read_text()
