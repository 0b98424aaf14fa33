"""`ukrun gc` for the artifacts: views whose users are gone (an idle view only once its end has passed),
folders without a record, and what a crash left in containerd (views, labels, acquire leases, idle leases
no record names) under this state root only (its `ukrun.io/state-root` label), never another root's.
"""

from __future__ import annotations

import contextlib
import os
import time

from ukrun import crashpoints, errors, host, tree
from ukrun.artifacts.idle import IdleViews
from ukrun.artifacts.views import ACQUIRE_LABEL, IDLE_LABEL, ROOT_LABEL, VIEW_LABEL, user_label, view_id


class Collector(IdleViews):
    def gc(self, *, dry_run: bool = False, idle: bool = False) -> list[str]:
        """Reclaims views whose users are gone, mounts with no view, ukrun leases and labels left by crashes;
        with `idle`, idle views too before their end."""
        actions: list[str] = []
        now = float("inf") if idle else time.time()
        base = self.root / "views"
        local = {d.name for d in base.iterdir() if d.is_dir()} if base.is_dir() else set()
        for vid in sorted(local):
            with self._lock(vid, wait=False) as got:
                if not got:
                    continue
                state = self._load_view(vid)
                d = self._view_dir(vid)
                if state is None:
                    actions.append(f"remove folder {d} (no view record)")
                    if not dry_run:
                        host.unmount_all(d / "rootfs")
                        tree.remove_tree(d)
                    continue
                if state.namespace != self.namespace:
                    continue
                for user in state.users:
                    if not self._container_exists(user):
                        actions.append(f"drop user {user} of view {state.key} (container gone)")
                        if not dry_run:
                            (d / "users" / user).unlink(missing_ok=True)
                if dry_run:
                    alive = [u for u in state.users if self._container_exists(u)]
                else:
                    alive = sorted(os.listdir(d / "users"))
                if not alive and state.idle(now):
                    continue  # bounded by its idle lease: for the next container, or collected after its end
                if not alive:
                    actions.append(f"remove view {state.key} ({state.snapshotter}) and its mount")
                    if not dry_run:
                        self._teardown(vid, state)
        crashpoints.point("gc-after-views")
        actions += self._gc_containerd(dry_run, now)
        if not dry_run:
            self._remove_stale_locks()
        return actions

    def _remove_stale_locks(self) -> None:
        base = self.root / "views"
        for lock in base.glob("*.lock") if base.is_dir() else []:
            vid = lock.name.removesuffix(".lock")
            if self._view_dir(vid).exists():
                continue
            with self._lock(vid, wait=False) as got:
                if got and not self._view_dir(vid).exists():
                    lock.unlink(missing_ok=True)

    def _view_exists(self, snapshotter: str, key: str) -> bool:
        try:
            self.client.stat_snapshot(snapshotter, key)
        except errors.NotFound:
            return False
        return True

    def _container_exists(self, container_id: str) -> bool:
        try:
            self.client.get_container(container_id)
        except errors.NotFound:
            return False
        return True

    def _gc_containerd(self, dry_run: bool, now: float) -> list[str]:
        actions = []
        c = self.client
        snapshotters = [p.id for p in c.plugins(["type==io.containerd.snapshotter.v1"]) if not p.init_error]
        for sn in snapshotters:
            owned: dict[str, str] = {}  # view key -> id, for the views this state root made
            for info in c.list_snapshots(sn, [f'labels."{VIEW_LABEL}"']):
                vid = info.labels.get(VIEW_LABEL, "")
                if not vid or info.labels.get(ROOT_LABEL) != self._root_id:
                    continue
                owned[info.name] = vid
                with self._lock(vid, wait=False) as got:
                    if not got:
                        continue
                    state = self._load_view(vid)
                    if state is None or not (state.users or state.idle(now)):
                        actions.append(f"remove view snapshot {info.name} ({sn}) with no user")
                        if not dry_run:
                            if state is not None:
                                self._teardown(vid, state)
                            with contextlib.suppress(errors.NotFound):
                                c.remove_snapshot(sn, info.name)
            for rec in c.list_containers([f'labels."{user_label(sn)}"']):
                key = rec.labels.get(user_label(sn), "")
                if key not in owned and self._view_exists(sn, key):
                    continue  # another state root's view: its users are recorded there
                vid = view_id(self.namespace, sn, key)
                with self._lock(vid, wait=False) as got:
                    if not got:
                        continue
                    state = self._load_view(vid)
                    if state is None or rec.id not in state.users:
                        actions.append(f"remove label {user_label(sn)} from container {rec.id} (not a user)")
                        if not dry_run:
                            with contextlib.suppress(errors.NotFound):
                                c.update_container_labels(rec.id, {user_label(sn): None})
        for lease in c.list_leases([f'labels."{IDLE_LABEL}"']):
            vid = lease.labels.get(IDLE_LABEL, "")
            if lease.labels.get(ROOT_LABEL) != self._root_id:
                continue
            with self._lock(vid or "-", wait=False) as got:
                state = self._load_view(vid) if got and vid else None
                if got and (state is None or state.idle_lease != lease.id):
                    actions.append(f"delete lease {lease.id} (no idle view names it)")
                    if not dry_run:
                        with contextlib.suppress(errors.NotFound):
                            c.delete_lease(lease.id)
        for lease in c.list_leases([f'labels."{ACQUIRE_LABEL}"']):
            if lease.labels.get(ROOT_LABEL) != self._root_id:
                continue
            with self._lock(lease.labels.get(ACQUIRE_LABEL, "") or "-", wait=False) as got:
                if got:
                    actions.append(f"delete lease {lease.id} (its acquire is over)")
                    if not dry_run:
                        with contextlib.suppress(errors.NotFound):
                            c.delete_lease(lease.id)
        return actions
