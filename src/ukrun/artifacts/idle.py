"""Warm views: a shared view outlives its last user for `[artifacts] idle` seconds, mounted, so that the next
container of the image takes it over with no View and no mount. Sequential runs of one image (a job, a
function, a CI step) are the commonest pattern, and without this each paid the first container's cost.

Lifetime, so that an idle view is bounded even if ukrun never runs again:
  * when the last user leaves, a new lease with `containerd.io/gc.expire` (the end of the idle time) takes
    the view before that user's label goes; the view's record then names the lease and its end, and the
    previous idle lease, if any, is deleted. When the previous lease still holds the view for nine tenths
    of the idle time (back-to-back runs), it is kept instead: three requests fewer on every delete;
  * a container takes an idle view over by setting its own label, then asking containerd whether the view
    still exists (the label now holds it): a view whose lease ended and that containerd's GC took is torn
    down and made again, never handed over;
  * every release, and `ukrun gc`, tear down idle views whose end has passed; `ukrun gc` also deletes idle
    leases that no record names (a crash between the lease and the record);
  * with ukrun gone, containerd's GC removes the lease, then the view, at the lease's end; the host mount
    stays until ukrun next releases a view or collects (or the machine restarts).
Releasing lives here too (the last user's release is where a view goes idle), apart from acquiring: `delete`
imports no more than it needs. What must stay true: all of this happens under the view's lock; only shared
views go idle (a per-container view has no next user); an idle view is never handed over past its end.
"""

from __future__ import annotations

import json
import math
import os
import time

from ukrun import crashpoints, errors, tree
from ukrun.artifacts.views import IDLE_LABEL, ROOT_LABEL, ViewBook, ViewState, user_label
from ukrun.containerd.records import ContainerRecord
from ukrun.logs import log

RENEW = 0.9  # a view stays idle for at least this share of `[artifacts] idle` after its last user


class IdleViews(ViewBook):
    # -- release ------------------------------------------------------------------------------------
    def release(self, container_id: str) -> bool:
        """Releases what `acquire` gave the container. Idempotent; False when there was nothing. (Here, not
        beside acquire: `delete` imports no more than releasing needs.)"""
        path = self._record_path(container_id)
        try:
            held = os.readlink(path)
        except FileNotFoundError:
            return False
        if held.startswith("view:"):
            self._release_view(container_id, held.removeprefix("view:"))
        else:
            tree.remove_tree(self.root / "copies" / self.namespace / container_id)
        path.unlink(missing_ok=True)
        return True

    def _release_view(self, container_id: str, vid: str, *, keep: bool = True) -> None:
        """`keep`: the view may stay idle for a next container (not after an acquire that found it useless)."""
        with self._lock(vid):
            state = self._load_view(vid)
            if state is None:
                return
            (self._view_dir(vid) / "users" / container_id).unlink(missing_ok=True)
            crashpoints.point("release-after-unuse")
            others = tuple(u for u in state.users if u != container_id)
            if not others and not (keep and self._go_idle(state._replace(users=others))):
                self._teardown(vid, state)
            with self._unless_unreachable(f"the label of container {container_id}"):
                self.client.update_container_labels(container_id, {user_label(state.snapshotter): None})
        self.sweep_idle()

    # -- idle views ---------------------------------------------------------------------------------
    def _go_idle(self, state: ViewState) -> bool:
        """Its last user gone (the caller holds the lock; `state.users` no longer names that user): True when a
        fresh idle lease now holds the view, False when it must be torn down instead."""
        if self.idle_s <= 0 or state.mode != "shared" or not state.mounted:
            return False
        now = time.time()
        if state.idle_lease and state.idle_until >= now + RENEW * self.idle_s:
            return True  # the lease of its last idle time holds it long enough: three requests spared
        until = float(math.floor(now + self.idle_s))  # the lease label's resolution: whole seconds
        try:
            lease = self.client.create_lease(f"ukrun/idle/{state.id}/{os.urandom(6).hex()}",
                                             {IDLE_LABEL: state.id, ROOT_LABEL: self._root_id}, expire_at=until)
            crashpoints.point("idle-after-lease")
            self.client.lease_add_snapshot(lease.id, state.snapshotter, state.key)
        except errors.ContainerdUnavailable as exc:
            log.warning("containerd unreachable, view %s is released instead of kept idle: %s", state.key, exc)
            return False
        crashpoints.point("idle-after-hold")
        self._save_view(state._replace(idle_lease=lease.id, idle_until=until))
        if state.idle_lease:
            with self._unless_unreachable(f"lease {state.idle_lease}"):
                self.client.delete_lease(state.idle_lease)
        return True

    def _take_over(self, record: ContainerRecord, state: ViewState) -> bool:
        """Makes `record` the user of an idle view (the caller holds the lock): its label, then containerd's
        word that the view still exists, which that label now holds. False: containerd no longer has it."""
        sn = record.snapshotter
        self.client.update_container_labels(record.id, {user_label(sn): state.key})
        crashpoints.point("acquire-after-takeover")
        try:
            self.client.stat_snapshot(sn, state.key)
        except errors.NotFound:
            log.warning("idle view %s is gone from containerd (its lease ended); making it again", state.key)
            return False
        return True

    def sweep_idle(self, now: float | None = None) -> list[str]:
        """Tears down the idle views of this namespace whose end has passed (those nobody else holds)."""
        now = time.time() if now is None else now
        done = []
        base = self.root / "views"
        for d in sorted(base.iterdir()) if base.is_dir() else []:
            if not _ended(d / "view.json", self.namespace, now):
                continue
            with self._lock(d.name, wait=False) as got:
                state = self._load_view(d.name) if got else None
                if state is None or state.users or state.idle_until <= 0 or state.idle_until > now:
                    continue
                self._teardown(d.name, state)
                done.append(f"remove idle view {state.key} ({state.snapshotter}), idle since its end passed")
        return done


def _ended(record: os.PathLike[str], namespace: str, now: float) -> bool:
    """A cheap look at a view's record, before its lock is taken: an idle end that has passed."""
    try:
        with open(record) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return False
    until = data.get("idle_until", 0) if isinstance(data, dict) else 0
    return data.get("namespace") == namespace and isinstance(until, (int, float)) and 0 < until <= now
