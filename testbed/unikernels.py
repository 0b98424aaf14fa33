"""Where the test unikernels are: built by scripts/build-unikernels from source trees the user names,
outside the checkout. Tests that need them skip, naming the command, when they are absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

BUILT = Path(os.environ.get("UKRUN_UNIKERNELS", "/var/tmp/ukrun-unikernels"))
SOLO5 = BUILT / "solo5"
UNIKRAFT = BUILT / "unikraft"


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is absent: build the test unikernels with scripts/build-unikernels "
                    "(UKRUN_SOLO5_SRC, UKRUN_UNIKRAFT_SRC: source trees you name; see its header)")
    return path


URUNIT = BUILT / "urunit"
LINUX = BUILT / "linux"


def need_urunit() -> tuple[Path, Path, Path]:
    """urunit, the probe program and the guest kernel; skips, naming the fix, when any is absent or when
    the urunit built reads no configuration file (v0.1.0: urunc's Linux images since v0.7 need its main)."""
    urunit, probe, kernel = need(URUNIT / "urunit"), need(URUNIT / "ukrun-probe"), need(LINUX / "bzImage")
    manifest = (BUILT / "MANIFEST").read_text() if (BUILT / "MANIFEST").exists() else ""
    if "urunit/urunit init linux urunit" in manifest and "config=yes" not in manifest:
        pytest.skip(f"{urunit} reads no configuration file (urunit v0.1.0): rebuild it with scripts/build-unikernels "
                    "and UKRUN_URUNIT_REV set to a revision of urunit's main branch from 2025-08 or later")
    return urunit, probe, kernel
