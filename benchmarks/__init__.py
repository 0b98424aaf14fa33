"""ukrun's benchmarks (`make bench`); see benchmarks.report."""

from __future__ import annotations

import compileall
from pathlib import Path


def compile_ukrun() -> None:
    """Writes ukrun's bytecode before a benchmark times it, as an installed package has it (pip compiles at
    install): an environment that writes none (PYTHONDONTWRITEBYTECODE) would time a compile of every module
    at every call, which no user pays."""
    import ukrun

    compileall.compile_dir(str(Path(ukrun.__file__).parent), quiet=1)
