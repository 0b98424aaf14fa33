"""Placing a container's init in its cgroup, on cgroup v1 hierarchies and the v2 (unified) one, and emptying
and removing the cgroup at delete. What delete uses needs the standard library's basics alone (a bare delete
runs in the shim's ukrun, see runtime.hot); placing imports the mount table and pathlib when it runs."""

import posix

TYPE_CHECKING = False  # not typing's (see runtime.hot)
if TYPE_CHECKING:
    from pathlib import Path


def relative_path(cgroups_path: str, systemd: bool) -> str:
    """The spec's cgroupsPath as a path below each hierarchy; systemd's slice:prefix:name included."""
    if systemd and cgroups_path.count(":") == 2:
        slice_, prefix, name = cgroups_path.split(":")
        slice_ = slice_ or "system.slice"
        unit = f"{prefix}-{name}.scope" if prefix else f"{name}.scope"
        return f"/{slice_}/{unit}"
    return "/" + cgroups_path.strip("/")


def hierarchies() -> "list[Path]":
    """Mount points of cgroup hierarchies (v1 controllers and named ones, and v2)."""
    from pathlib import Path

    from ukrun import host

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
            from ukrun.errors import HostError

            raise HostError(f"cannot place the container in cgroup {target}: {exc}") from None
        made.append(str(target))
    return made


def remove(folders: list[str]) -> list[str]:
    """Removes the folders that are empty (or gone already); returns those that are not."""
    left = []
    for folder in folders:
        try:
            posix.rmdir(folder)
        except FileNotFoundError:
            continue
        except OSError:
            left.append(folder)
    return left


def kill_all(folders: list[str], sig: int) -> None:
    for folder in folders:
        for pid in _procs(folder):
            try:
                posix.kill(int(pid), sig)
            except ProcessLookupError:
                continue


def populated(folders: list[str]) -> bool:
    """Whether any process is still in one of the folders."""
    return any(_procs(folder) for folder in folders)


def _procs(folder: str) -> list[str]:
    try:
        with open(f"{folder}/cgroup.procs") as f:
            return f.read().split()
    except OSError:
        return []
