"""A container's processes and cgroups at delete (runtime.hot.stop), on this host's real cgroup hierarchies: the
init killed, what else is in the cgroups killed too, and the cgroups removed, whether or not the init is gone."""

import contextlib
import os
import subprocess
import threading
import uuid
from collections.abc import Iterator

import pytest

from ukrun import cgroups
from ukrun.runtime import hot
from ukrun.runtime import state as st

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="cgroups are made and joined as root")


@pytest.fixture
def sleeper() -> Iterator[tuple[subprocess.Popen[bytes], list[str]]]:
    """A process in cgroups of its own, made as create makes them and joined where the hierarchy takes it (as
    the init joins them: a new v1 cpuset has no CPUs yet), reaped the moment it dies, as the shim reaps."""
    name = f"ukrun-test-{uuid.uuid4().hex[:8]}"
    folders = []
    proc = subprocess.Popen(["sleep", "60"])
    threading.Thread(target=proc.wait, daemon=True).start()
    try:
        for base in cgroups.hierarchies():
            (base / name).mkdir()
            folders.append(str(base / name))
            with contextlib.suppress(OSError):
                (base / name / "cgroup.procs").write_text(str(proc.pid))
        assert cgroups.populated(folders)
        yield proc, folders
    finally:
        proc.kill()
        proc.wait()
        for folder in folders:
            with contextlib.suppress(FileNotFoundError):
                os.rmdir(folder)


def test_the_init_is_killed_and_its_cgroups_removed(sleeper: tuple[subprocess.Popen[bytes], list[str]]) -> None:
    proc, folders = sleeper
    assert folders
    hot.stop(st.ContainerState(id="c1", bundle="/b", pid=proc.pid, pid_start=st.process_start(proc.pid),
                               cgroups=folders))
    assert proc.wait(5) == -9
    assert not any(os.path.exists(f) for f in folders)


def test_what_the_cgroups_hold_is_killed_when_the_init_is_gone(
        sleeper: tuple[subprocess.Popen[bytes], list[str]]) -> None:
    """A create killed before it saved the init's PID leaves only the cgroups to find the init by."""
    proc, folders = sleeper
    hot.stop(st.ContainerState(id="c1", bundle="/b", cgroups=folders))
    assert proc.wait(5) == -9
    assert not any(os.path.exists(f) for f in folders)


def test_empty_cgroups_of_an_init_gone_are_removed(sleeper: tuple[subprocess.Popen[bytes], list[str]]) -> None:
    proc, folders = sleeper
    proc.kill()
    proc.wait()
    hot.stop(st.ContainerState(id="c1", bundle="/b", cgroups=folders))
    assert not any(os.path.exists(f) for f in folders)
    hot.stop(st.ContainerState(id="c1", bundle="/b", cgroups=folders))  # again: nothing to do, no error
