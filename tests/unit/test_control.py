"""update's decisions on cgroup files (v1 controllers and v2) and its memory rule; the exec agent's build
and its place in images built by `ukrun build`."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from testbed.images import Layout
from ukrun.errors import UkrunError
from ukrun.image.build import EXEC_AGENT, build_from_spec
from ukrun.runtime import control
from ukrun.runtime import state as st


def _folder(tmp_path: Path, name: str, files: tuple[str, ...]) -> str:
    folder = tmp_path / name
    folder.mkdir()
    for f in files:
        (folder / f).write_text("0\n")
    return str(folder)


def test_cpu_and_pids_limits_go_to_the_files_each_hierarchy_has(tmp_path: Path) -> None:
    cpu = _folder(tmp_path, "cpu", ("cpu.cfs_period_us", "cpu.cfs_quota_us", "cpu.shares"))
    pids = _folder(tmp_path, "pids", ("pids.max",))
    v2 = _folder(tmp_path, "v2", ("cpu.max", "cpu.weight", "pids.max", "cpuset.cpus"))
    res = {"cpu": {"shares": 1024, "quota": 50000, "period": 100000, "cpus": "0"}, "pids": {"limit": 99},
           "memory": {"limit": 0}, "devices": [{"allow": False, "access": "rwm"}]}
    assert control.cgroup_writes(res, [cpu, pids, v2]) == [
        (cpu, "cpu.cfs_period_us", "100000"), (cpu, "cpu.cfs_quota_us", "50000"), (cpu, "cpu.shares", "1024"),
        (pids, "pids.max", "99"),
        (v2, "cpu.max", "50000 100000"), (v2, "cpu.weight", "39"), (v2, "cpuset.cpus", "0"), (v2, "pids.max", "99"),
    ]
    unlimited = {"cpu": {"quota": -1}, "pids": {"limit": -1}}
    assert control.cgroup_writes(unlimited, [cpu, v2]) == [
        (cpu, "cpu.cfs_quota_us", "-1"), (v2, "cpu.max", "max 100000"), (v2, "pids.max", "max")]
    assert control.cgroup_writes({"cpu": {"cpus": ""}, "hugepageLimits": []}, [cpu, v2]) == []


def _record(tmp_path: Path, cgroups: list[str]) -> str:
    root = tmp_path / "root"
    (root / "c1").mkdir(parents=True)
    st.save(root, st.ContainerState(id="c1", bundle="/b", pid=os.getpid(), pid_start=st.process_start(os.getpid()),
                                    cgroups=cgroups, memory_mib=256, memory_limit=0))
    return str(root)


def test_a_guests_memory_is_kept_and_a_new_limit_refused_naming_the_fix(tmp_path: Path) -> None:
    cpu = _folder(tmp_path, "cpu", ("cpu.cfs_period_us", "cpu.cfs_quota_us"))
    root = _record(tmp_path, [cpu])
    sames: list[dict[str, object]] = [{"memory": {"limit": 256 << 20}}, {"memory": {"limit": 0}}, {"memory": {}}]
    for same in sames:
        control.update(root, "c1", {**same, "cpu": {"quota": 20000, "period": 100000}})
    assert Path(cpu, "cpu.cfs_quota_us").read_text() == "20000"
    with pytest.raises(UkrunError, match=r"container c1's guest has 256 MiB of memory, fixed when its VM started: a "
                                         r"running guest cannot be resized to 512 MiB here; create the container "
                                         r"again with the new limit"):
        control.update(root, "c1", {"memory": {"limit": 512 << 20}, "cpu": {"quota": 30000}})
    assert Path(cpu, "cpu.cfs_quota_us").read_text() == "20000"  # nothing applied


def test_pause_freezes_the_cgroup_and_state_says_paused(tmp_path: Path) -> None:
    freezer = _folder(tmp_path, "freezer", ())
    Path(freezer, "freezer.state").write_text("THAWED")
    root = _record(tmp_path, [freezer])
    # a fake freezer file reads back what was written: the kernel's would say FREEZING, then FROZEN
    control.freeze(root, "c1", True)
    assert Path(freezer, "freezer.state").read_text() == "FROZEN"
    assert st.status(root, st.load(root, "c1")) == "paused"
    with pytest.raises(UkrunError, match="container c1 is already paused"):
        control.freeze(root, "c1", True)
    control.freeze(root, "c1", False)
    assert st.status(root, st.load(root, "c1")) == "running"


def test_ukrun_build_puts_the_exec_agent_in_a_linux_image_unless_told_not_to(tmp_path: Path) -> None:
    if not EXEC_AGENT.is_file():
        pytest.skip(f"{EXEC_AGENT} is not built: run scripts/setup")
    (tmp_path / "vmlinuz").write_bytes(b"K")
    spec = 'name = "x/l:1"\n[unikernel]\ntype = "linux"\nhypervisor = "qemu"\nkernel = "vmlinuz"\nmount_rootfs = true\n'
    for extra, present in (("", True), ("exec_agent = false\n", False)):
        (tmp_path / "spec.toml").write_text(spec + extra)
        build_from_spec(tmp_path / "spec.toml", tmp_path / "o.tar")
        layout = Layout(tmp_path / "o.tar")
        with tarfile.open(fileobj=io.BytesIO(layout.layer_blobs()[0])) as t:
            members = {m.name: m for m in t.getmembers()}
        assert (".ukrun/exec-agent" in members) is present
        if present:
            assert members[".ukrun/exec-agent"].mode == 0o755


def test_the_exec_agent_builds_to_the_same_bytes(tmp_path: Path) -> None:
    if shutil.which("musl-gcc") is None or not EXEC_AGENT.is_file():
        pytest.skip("musl-gcc or the built agent is missing: run scripts/setup")
    setup = (Path(__file__).resolve().parents[2] / "scripts" / "setup").read_text().replace("\\\n", " ")
    line = next(line for line in setup.splitlines() if "musl-gcc" in line and "exec-agent.tmp" in line)
    flags, sources = line.split("musl-gcc", 1)[1].split("&&")[0].split("-o exec-agent.tmp")
    for name in (*sources.split(), "exec-agent.h"):
        shutil.copy(EXEC_AGENT.parent / name, tmp_path / name)
    subprocess.run(["musl-gcc", *flags.split(), "-o", "again", *sources.split()], cwd=tmp_path, check=True)
    digest = hashlib.sha256((tmp_path / "again").read_bytes()).hexdigest()
    assert digest == hashlib.sha256(EXEC_AGENT.read_bytes()).hexdigest()
