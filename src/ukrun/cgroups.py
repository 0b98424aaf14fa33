"""Placing a container's init in its cgroup, on cgroup v1 hierarchies and the v2 (unified) one."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from ukrun import host
from ukrun.errors import HostError


def relative_path(cgroups_path: str, systemd: bool) -> str:
    """The spec's cgroupsPath as a path below each hierarchy; systemd's slice:prefix:name included."""
    if systemd and cgroups_path.count(":") == 2:
        slice_, prefix, name = cgroups_path.split(":")
        slice_ = slice_ or "system.slice"
        unit = f"{prefix}-{name}.scope" if prefix else f"{name}.scope"
        return f"/{slice_}/{unit}"
    return "/" + cgroups_path.strip("/")


def hierarchies() -> list[Path]:
    """Mount points of cgroup hierarchies (v1 controllers and named ones, and v2)."""
    seen: dict[str, Path] = {}
    for m in host.mountinfo():
        if m.fstype in ("cgroup", "cgroup2") and m.root == "/":
            seen.setdefault(m.mount_point, Path(m.mount_point))
    return list(seen.values())


def join(pid: int, cgroups_path: str, systemd: bool = False) -> list[str]:
    """Creates the container's cgroup in every hierarchy and moves `pid` into it; returns the folders."""
    if not cgroups_path:
        return []
    rel = relative_path(cgroups_path, systemd).lstrip("/")
    made = []
    for base in hierarchies():
        target = base / rel
        try:
            target.mkdir(parents=True, exist_ok=True)
            (target / "cgroup.procs").write_text(str(pid))
        except OSError as exc:
            if base.name == "unified" or not (base / "cgroup.procs").exists():
                continue  # a v2 mount beside v1 controllers may refuse processes; v1 placement suffices
            raise HostError(f"cannot place the container in cgroup {target}: {exc}") from None
        made.append(str(target))
    return made


def remove(folders: list[str]) -> None:
    for folder in folders:
        with contextlib.suppress(OSError):
            os.rmdir(folder)


def kill_all(folders: list[str], sig: int) -> None:
    for folder in folders:
        try:
            pids = Path(folder, "cgroup.procs").read_text().split()
        except OSError:
            continue
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), sig)


def populated(folders: list[str]) -> bool:
    """Whether any process is still in one of the folders."""
    for folder in folders:
        try:
            if Path(folder, "cgroup.procs").read_text().strip():
                return True
        except OSError:
            continue
    return False
