"""The views under a state root: their records, locks and teardown, shared by acquire/release (store)
and collection (gc).

State root layout:
  views/<id>/view.json, views/<id>/rootfs (mount point), views/<id>/users/<container>, views/<id>.lock
  containers/<namespace>/<container>        symlink to what a container holds: view:<id> or copy
  chains/<namespace>/<key>.json             cached chain choice per (top chain, artifact paths)
  copies/<namespace>/<container>/           copy mode only
What must stay true: a view's record, users and mount change only under its lock; a user is recorded
only after its label is set; teardown unmounts, then removes the view, then its idle lease, then its
folder. An idle view (artifacts.idle) is one with no user whose record names an idle lease and its end.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ukrun import crashpoints, digest, errors, host, tree
from ukrun.containerd.records import gc_ref_snapshot_label
from ukrun.logs import log
from ukrun.tuples import NamedTuple

if TYPE_CHECKING:
    from ukrun.containerd.client import Client

VIEW_LABEL = "ukrun.io/view"
MODE_LABEL = "ukrun.io/mode"
ACQUIRE_LABEL = "ukrun.io/acquire"
IDLE_LABEL = "ukrun.io/idle"
ROOT_LABEL = "ukrun.io/state-root"  # on views and ukrun's leases: gc touches only its own root's
USER_LABEL_SUFFIX = "ukrun-view"


def view_id(namespace: str, snapshotter: str, key: str) -> str:
    return digest.hexdigest(f"{namespace}\0{snapshotter}\0{key}".encode())[:24]


def view_key(mode: str, chain_id: str, container_id: str) -> str:
    return f"ukrun/view/{chain_id}" if mode == "shared" else f"ukrun/view/{chain_id}/{container_id}"


def user_label(snapshotter: str) -> str:
    return gc_ref_snapshot_label(snapshotter, USER_LABEL_SUFFIX)


def safe_name(value: str, what: str) -> str:
    if not value or "/" in value or value in (".", "..") or "\0" in value:
        raise errors.UkrunError(f"{what} {value!r} cannot name a file; use letters, digits, '.', '_' or '-'")
    return value


class ViewState(NamedTuple):
    id: str
    namespace: str
    snapshotter: str
    key: str
    parent: str
    mode: str
    mounts: tuple[dict[str, Any], ...] = ()
    mount_point: str = ""
    users: tuple[str, ...] = ()
    mounted: bool = False
    idle_lease: str = ""  # the lease that holds the view while no container uses it (artifacts.idle)
    idle_until: float = 0.0  # when that lease expires (seconds since the epoch); 0: not idle

    def idle(self, now: float) -> bool:
        """Whether the view waits, unused, for a next container, its lease still holding it."""
        return not self.users and self.idle_until > now


class ViewBook:
    """The views and container records under one state root, in one namespace, and their locks."""

    def __init__(self, root: Path, namespace: str, connect: Callable[[], Client], idle_s: float = 0.0) -> None:
        self.root = root
        self.namespace = safe_name(namespace, "namespace")
        self.idle_s = idle_s  # how long a shared view outlives its last user (artifacts.idle); 0: not at all
        self._connect = connect
        self._client: Client | None = None

    @property
    def _root_id(self) -> str:
        return str(self.root.resolve())

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = self._connect()
        return self._client

    # -- paths and locks ----------------------------------------------------------------------------
    def _view_dir(self, vid: str) -> Path:
        return self.root / "views" / vid

    def _record_path(self, container_id: str) -> Path:
        return self.root / "containers" / self.namespace / safe_name(container_id, "container ID")

    @contextlib.contextmanager
    def _lock(self, vid: str, *, wait: bool = True) -> Iterator[bool]:
        """Exclusive lock on one view; yields False when `wait` is off and someone else holds it."""
        path = self.root / "views" / f"{vid}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                os.close(fd)
                yield False
                return
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the file was removed by the holder we waited for: lock the new one
        try:
            yield True
        finally:
            os.close(fd)

    # -- records ------------------------------------------------------------------------------------
    def _load_view(self, vid: str) -> ViewState | None:
        d = self._view_dir(vid)
        try:
            data = json.loads((d / "view.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        users = d / "users"
        return ViewState(**{**data, "mounts": tuple(data.get("mounts", ()))})._replace(
            users=tuple(sorted(os.listdir(users))) if users.is_dir() else (),
            mount_point=str(d / "rootfs"), mounted=host.is_mounted(d / "rootfs"))

    def _save_view(self, state: ViewState) -> None:
        d = self._view_dir(state.id)
        (d / "users").mkdir(parents=True, exist_ok=True)
        data = {k: v for k, v in state._asdict().items() if k not in ("users", "mount_point", "mounted")}
        tmp = d / "view.json.tmp"
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, d / "view.json")

    def _write_record(self, container_id: str, held: str) -> None:
        """Records what the container holds as a symlink, `view:<id>` or `copy`: it costs an inode, no data.
        Written before the hold is taken, so that a crash at any later step leaves a record that `release`
        follows; releasing what was not taken yet is a no-op."""
        path = self._record_path(container_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        os.symlink(held, tmp)
        os.replace(tmp, path)

    def _teardown(self, vid: str, state: ViewState, *, keep_lock: bool = False) -> None:
        """Unmount, then remove the view, then its idle lease, then its folder. Caller holds the view's lock;
        with `keep_lock` it goes on making the view again under it, so the lock file stays."""
        target = self._view_dir(vid) / "rootfs"
        host.unmount_all(target)
        crashpoints.point("release-after-unmount")
        with self._unless_unreachable(f"view {state.key}"):
            self.client.remove_snapshot(state.snapshotter, state.key)
        crashpoints.point("release-after-remove")
        if state.idle_lease:
            with self._unless_unreachable(f"lease {state.idle_lease}"):
                self.client.delete_lease(state.idle_lease)
        tree.remove_tree(self._view_dir(vid))
        if not keep_lock:
            (self.root / "views" / f"{vid}.lock").unlink(missing_ok=True)

    @contextlib.contextmanager
    def _unless_unreachable(self, what: str) -> Iterator[None]:
        """Releasing must not wedge on a containerd that is down. What it could not remove there stays held
        only by a label on a container record: containerd's GC takes it with that record, `ukrun gc` sooner."""
        try:
            yield
        except errors.NotFound:
            pass
        except errors.ContainerdUnavailable as exc:
            log.warning("containerd unreachable, %s left to its GC or `ukrun gc`: %s", what, exc)

    # -- listing and garbage collection -------------------------------------------------------------
    def views(self) -> list[ViewState]:
        base = self.root / "views"
        out = []
        for d in sorted(base.iterdir()) if base.is_dir() else []:
            if d.is_dir():
                state = self._load_view(d.name)
                if state and state.namespace == self.namespace:
                    out.append(state)
        return out
