"""Host clean-up used by the test bed: only what lives below a folder the test bed made."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from ukrun import host


def processes_with_argument(argument: str) -> list[int]:
    """PIDs whose command line contains `argument` exactly (e.g. a private socket path)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(argument.encode() in a for a in args):
            pids.append(int(entry.name))
    return pids


def qemu_processes(folder: Path) -> list[int]:
    """qemu processes whose command line names something below `folder` (a daemon's snapshots)."""
    return _named_processes(folder, b"qemu-system")


def virtiofsd_processes(folder: Path) -> list[int]:
    """virtiofsd processes whose command line names something below `folder` (a daemon's rootfs); run
    directly or by a loader, a program named virtiofsd is among their arguments."""
    return _named_processes(folder, b"virtiofsd", whole=True)


def _named_processes(folder: Path, name: bytes, whole: bool = False) -> list[int]:
    out = []
    for pid in processes_with_argument(str(folder)):
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(os.path.basename(a) == name if whole else name in a for a in args):
            out.append(pid)
    return out


def terminate(pid: int, timeout: float = 10.0, sig: signal.Signals = signal.SIGTERM) -> None:
    """`sig`, then SIGKILL after `timeout`; reaps it when it is our child."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return
        time.sleep(0.02)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    while _alive(pid):
        time.sleep(0.02)


def _alive(pid: int) -> bool:
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    except ChildProcessError:
        pass
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def unmount_below(folder: Path) -> list[str]:
    """Unmounts every mount point at or below `folder`, deepest first."""
    root = str(folder.resolve())
    done = []
    for _ in range(5):
        points = sorted(
            {m.mount_point for m in host.mountinfo() if m.mount_point == root or m.mount_point.startswith(root + "/")},
            key=len,
            reverse=True,
        )
        if not points:
            break
        for point in points:
            try:
                host.umount(point)
                done.append(point)
            except Exception:
                continue
    return done


def detach_loops_below(folder: Path) -> list[str]:
    root = str(folder.resolve())
    done = []
    for dev, backing in host.loop_devices().items():
        if backing.startswith(root + "/"):
            try:
                host.detach_loop(dev)
                done.append(dev)
            except Exception:
                continue
    return done
