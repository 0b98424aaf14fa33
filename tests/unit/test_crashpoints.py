"""Named crash points (ukrun.crashpoints) read the environment as os.environ leaves it: a helper's worker takes
its caller's environment through os.environ after it started, and the points read posix's."""

import subprocess
import sys
from pathlib import Path

import ukrun

SRC = str(Path(ukrun.__file__).parent.parent)


def _reach(step: str, setup: str) -> int:
    """Imports the points first, as a helper does, then sets the environment as its worker does."""
    code = f"import os, sys\nsys.path.insert(0, {SRC!r})\nfrom ukrun import crashpoints\n{setup}\n"
    code += f"crashpoints.point({step!r})"
    return subprocess.run([sys.executable, "-I", "-c", code], env={}, check=False).returncode


def test_a_point_named_in_the_environment_kills_the_process_there() -> None:
    assert _reach("create-before-save", "os.environ['UKRUN_CRASH_AT'] = 'create-before-save'") == -9
    assert _reach("create-before-save", "os.environ['UKRUN_CRASH_AT'] = 'another'") == 0
    assert _reach("create-before-save", "") == 0


def test_an_armed_point_fires_once(tmp_path: Path) -> None:
    arm = tmp_path / "arm"
    arm.write_text("start-before-release\n")
    setup = f"os.environ['UKRUN_CRASH_ARM'] = {str(arm)!r}"
    assert _reach("kill-before-signal", setup) == 0 and arm.exists()
    assert _reach("start-before-release", setup) == -9 and not arm.exists()
    assert _reach("start-before-release", setup) == 0
