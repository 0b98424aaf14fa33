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
