"""Everything ukrun does to the host's mounts and loop devices, behind a few small functions."""

from __future__ import annotations

import os
from pathlib import Path

from ukrun.errors import HostError
from ukrun.mounttable import unescape
from ukrun.tuples import NamedTuple


class MountEntry(NamedTuple):
    mount_id: int
    device: str  # major:minor
    root: str
    mount_point: str
    fstype: str
    source: str
    options: str
    propagation: str = "private"  # shared, slave (master), or private
    parent_id: int = 0
    peer: int = 0  # its peer group (shared:N), 0 when not shared
    master: int = 0  # the peer group it is a slave of (master:N), 0 when none
    super_options: str = ""  # the file system's own options (after the separator)


def parse_mountinfo(text: str) -> list[MountEntry]:
    entries = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        f = left.split()
        r = right.split()
        tags = dict(t.split(":", 1) for t in f[6:] if ":" in t)
        propagation = "shared" if "shared" in tags else ("slave" if "master" in tags else "private")
        entries.append(
            MountEntry(
                mount_id=int(f[0]),
                device=f[2],
                root=unescape(f[3]),
                mount_point=unescape(f[4]),
                fstype=r[0],
                source=unescape(r[1]) if len(r) > 1 else "",
                options=f[5],
                propagation=propagation,
                parent_id=int(f[1]),
                peer=int(tags.get("shared", 0)),
                master=int(tags.get("master", 0)),
                super_options=r[2] if len(r) > 2 else "",
            )
        )
    return entries


def mountinfo(pid: str = "self") -> list[MountEntry]:
    return parse_mountinfo(Path(f"/proc/{pid}/mountinfo").read_text())


def mount_of(path: str | Path) -> MountEntry | None:
    """The mount that holds `path` (the longest mount point that is a prefix of it)."""
    target = os.path.realpath(path)
    best = None
    for m in mountinfo():
        if (target == m.mount_point or target.startswith(m.mount_point.rstrip("/") + "/")) and (
            best is None or len(m.mount_point) >= len(best.mount_point)
        ):
            best = m
    return best


def is_mounted(path: str | Path) -> bool:
    """Whether something is mounted at `path`. Unlike os.path.ismount, this sees a bind mount of a folder
    of the same filesystem (same device number on both sides)."""
    return bool(mounts_at(path))


def unmount_all(path: str | Path) -> None:
    """Unmounts every mount stacked at `path`."""
    while is_mounted(path):
        umount(path)


def mounts_at(path: str | Path) -> list[MountEntry]:
    target = os.path.realpath(path)
    return [m for m in mountinfo() if m.mount_point == target]


def mount(source: str, target: str | Path, fstype: str, options: list[str]) -> None:
    """Mounts with util-linux mount, which sets up (and autoclears) a loop device for `loop`."""
    cmd = ["mount"]
    if fstype and fstype not in ("bind", "rbind"):
        cmd += ["-t", fstype]
    if options:
        cmd += ["-o", ",".join(options)]
    cmd += [source, str(target)]
    import subprocess

    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise HostError(f"mount of {source} ({fstype or 'bind'}) at {target} failed: {proc.stderr.strip()}")


def umount(target: str | Path) -> None:
    """umount(2) itself: util-linux's umount would add a fork and exec (about 10 ms on `create`) and
    nothing else, since a loop device that `mount` set up clears itself when its filesystem goes."""
    from ukrun import libc

    if libc.function("umount2")(os.fsencode(target), 0) != 0:
        err = libc.errno()
        raise HostError(
            f"cannot unmount {target}: {os.strerror(err)}; find who still uses it with `fuser -vm {target}`"
        )


def loop_devices() -> dict[str, str]:
    """Attached loop devices: /dev/loopN -> backing file."""
    out = {}
    for backing in Path("/sys/block").glob("loop*/loop/backing_file"):
        dev = "/dev/" + backing.parent.parent.name
        try:
            out[dev] = backing.read_text().strip()
        except OSError:
            continue
    return out


def detach_loop(device: str) -> None:
    import subprocess

    proc = subprocess.run(["losetup", "-d", device], capture_output=True, text=True)
    if proc.returncode != 0:
        raise HostError(f"cannot detach {device}: {proc.stderr.strip()}")
