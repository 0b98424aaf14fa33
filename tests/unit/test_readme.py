"""The README's configuration is the configuration the tests use."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed import containerd as ctd
from testbed import cri

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.mark.parametrize("version", ctd.VERSIONS)
def test_the_readme_shows_the_runtime_handler_the_cri_tests_configure(version: str) -> None:
    assert cri.handler(version, "/usr/local/bin/ukrun") in README.read_text()
