"""A block volume's handoff to the VM: unmounted from the host only when nothing else mounts it, and
mounted again when its device is still claimed after the unmount.

A file system mounted in another mount namespace keeps its device busy after the host's unmount, and a
VM writing to a device that something still mounts corrupts it. A mount namespace starts as a copy of the
one it was made from; a copy goes with the host's unmount only when the unmount propagates to it: its
parent mount is a peer or a slave (at any depth) of the source's parent mount, it sits at the same place
in that file system, and nothing is mounted on it (the kernel's propagate_umount). Any other copy is
another user, and `create` refuses the volume before it unmounts anything (`alone`). What still claims
the device after the unmount (an `O_EXCL` open fails: a lazily detached mount still in use, a process
holding the device exclusively, a namespace made meanwhile) gets the volume mounted again where it was,
with the same file system and options, in the same namespace, before `create` refuses it (`hand_over`).

What must stay true: a refused volume is left mounted, or mounted again, as it was found; the VM gets the
device only once nothing claims it. Only the unmount and the remount change anything; the rest reads /proc.
"""

from __future__ import annotations

import os
import posixpath
import time
from collections.abc import Iterable

from ukrun import host
from ukrun.errors import HostError, VolumeBusy
from ukrun.runtime.rootfs import claimed, mount_namespace, unmount_in

# Where the host's mounts are private, a mount namespace being made copies all of them for a moment (a
# container runtime's init before its pivot_root, `ip netns exec`): copies are given this long to go,
# before the unmount (another user) and after it (the device still claimed), each.
WAIT = 5.0


def alone(device: str, source: str, owner_pid: int, wait: float = WAIT) -> host.MountEntry:
    """The volume's mount at `source` in the owner's (the shim's) mount namespace. VolumeBusy, with nothing
    changed, when another mount namespace keeps its file system mounted where the unmount would not reach."""
    deadline = time.monotonic() + wait
    while True:
        owner = host.mountinfo(str(owner_pid))
        entry = next((m for m in reversed(owner) if m.mount_point == source), None)
        if entry is None:
            raise HostError(f"block volume {device} is no longer mounted at {source}: mount it there again, or "
                            "drop the spec's mount")
        users = [f"PID {pid} ({_name(pid)}) at {m.mount_point}"
                 for pid, m in staying(owner, entry, _other_namespaces(owner_pid))]
        if not users:
            return entry
        if time.monotonic() > deadline:
            raise VolumeBusy(f"block volume {device} (mounted at {source}) is also mounted in another mount "
                             f"namespace ({', '.join(users)}), which its unmount here would not reach; it is left "
                             "mounted: a VM must be the device's only user, so unmount it there or end that "
                             "process first")
        time.sleep(0.1)


def staying(owner: list[host.MountEntry], source: host.MountEntry,
            others: dict[int, list[host.MountEntry]]) -> list[tuple[int, host.MountEntry]]:
    """The mounts of `source`'s file system in other namespaces (by a PID in each) that an unmount of `source`
    leaves in place."""
    parent = next((m for m in owner if m.mount_id == source.parent_id), None)
    if parent is None:
        return [(pid, m) for pid, table in others.items() for m in table if m.device == source.device]
    everything = [m for table in (owner, *others.values()) for m in table]
    reach = {parent.peer} - {0}
    while grown := {m.peer for m in everything if m.master in reach and m.peer} - reach:
        reach |= grown
    place = _place(source, parent)
    out = []
    for pid, table in others.items():
        by_id = {m.mount_id: m for m in table}
        for m in table:
            if m.device != source.device:
                continue
            above = by_id.get(m.parent_id)
            goes = (above is not None and (above.peer in reach or above.master in reach)
                    and _place(m, above) == place and not any(c.parent_id == m.mount_id for c in table))
            if not goes:
                out.append((pid, m))
    return out


def _place(mount: host.MountEntry, parent: host.MountEntry) -> tuple[str, str]:
    """Where a mount sits: its parent's file system and the folder in it."""
    return parent.device, posixpath.normpath(posixpath.join(parent.root, posixpath.relpath(mount.mount_point,
                                                                                           parent.mount_point)))


def _other_namespaces(owner_pid: int) -> dict[int, list[host.MountEntry]]:
    """The mount table of every mount namespace but the owner's and ukrun's own, read through one of its
    processes."""
    skip = {mount_namespace("self"), mount_namespace(owner_pid)}
    seen: dict[str, int] = {}
    tables: dict[int, list[host.MountEntry]] = {}
    for pid in _pids():
        ns = mount_namespace(pid)
        if not ns or ns in skip or ns in seen:
            continue
        try:
            tables[pid] = host.mountinfo(str(pid))
        except OSError:
            continue  # gone meanwhile: another process of its namespace is read
        seen[ns] = pid
    return tables


def _pids() -> Iterable[int]:
    return (int(name) for name in os.listdir("/proc") if name.isdigit())


def _name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "gone"


def hand_over(entry: host.MountEntry, device: str, owner_pid: int, wait: float = WAIT) -> None:
    """Unmounts the volume `alone` found (in the owner's namespace) and waits until nothing claims its
    device; if something still does, mounts it again as it was and raises VolumeBusy."""
    unmount_in(entry.mount_point, owner_pid)
    deadline = time.monotonic() + wait
    while claimed(device, gone_ok=False):
        if time.monotonic() > deadline:
            _mount_again(entry, device, owner_pid)
            raise VolumeBusy(f"block volume {device} was still in use after its unmount from {entry.mount_point} "
                             "(held open, or mounted where no mount table shows it, such as a lazily unmounted "
                             "file system still in use), so it is mounted there again: a VM must be the device's "
                             f"only user; find its user with `fuser -vm {device}`")
        time.sleep(0.02)


def _mount_again(entry: host.MountEntry, device: str, owner_pid: int) -> None:
    options = list(dict.fromkeys(o for o in (*entry.options.split(","), *entry.super_options.split(",")) if o))
    command = ["mount", "-t", entry.fstype, "-o", ",".join(options), entry.source, entry.mount_point]
    if mount_namespace(owner_pid) != mount_namespace("self"):
        command = ["nsenter", f"--mount=/proc/{owner_pid}/ns/mnt", *command]
    import subprocess

    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        raise HostError(f"block volume {device} was still in use after its unmount from {entry.mount_point}, and "
                        f"mounting it there again failed ({proc.stderr.strip()}): mount it yourself, and find its "
                        f"other user with `fuser -vm {device}`")
