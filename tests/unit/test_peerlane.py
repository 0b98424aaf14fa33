"""The entry point a benchmark lane gives the shim (benchmarks.peer.lane_launcher): the lane's settings reach the
ukrun it runs, and a Python launcher is not wrapped in a shell, which would cost every call of that lane alone."""

import subprocess
import sys
from pathlib import Path

from benchmarks.peer import lane_launcher

SHOW = 'import os, sys\nprint(os.environ["UKRUN_CONFIG"], os.environ["UKRUN_HELPER"], *sys.argv[1:])\n'
ENV = {"UKRUN_CONFIG": "/lane/ukrun.toml", "UKRUN_HELPER": "/lane/h s.sock"}


def _run(tmp_path: Path, binary: Path) -> tuple[str, str]:
    entry = tmp_path / "entry"
    entry.write_text(lane_launcher(str(binary), ENV))
    entry.chmod(0o755)
    out = subprocess.run([str(entry), "state", "c1"], capture_output=True, text=True, check=True, env={}).stdout
    return out.strip(), entry.read_text().splitlines()[0]


def test_a_python_launcher_gets_the_settings_in_its_own_interpreter(tmp_path: Path) -> None:
    binary = tmp_path / "ukrun"
    binary.write_text(f"#!{sys.executable} -IS\n{SHOW}")
    out, first = _run(tmp_path, binary)
    assert out == "/lane/ukrun.toml /lane/h s.sock state c1"
    assert first == f"#!{sys.executable} -IS", "no shell in front"


def test_anything_else_is_run_through_sh_with_the_settings(tmp_path: Path) -> None:
    binary = tmp_path / "ukrun"
    binary.write_text('#!/bin/sh\necho "$UKRUN_CONFIG" "$UKRUN_HELPER" "$@"\n')
    binary.chmod(0o755)
    out, first = _run(tmp_path, binary)
    assert out == "/lane/ukrun.toml /lane/h s.sock state c1" and first == "#!/bin/sh"
