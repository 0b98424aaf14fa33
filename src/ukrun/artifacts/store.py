"""Artifact access: the kernel, initrd and urunc.json of a container, read in place from a view.

Modes:
  shared         one read-only view per (namespace, snapshotter, chain ID), mounted once under the
                 state root and counted per container; only the first container of an image pays.
  per-container  one view per container (the request as first written).
  copy           urunc's behaviour: the files are copied out of the container's rootfs.

Lifetime, so that no crash leaves what neither containerd's GC nor `ukrun gc` reclaims:
  * every user container carries `containerd.io/gc.ref.snapshot.<snapshotter>/ukrun-view = <view key>`,
    so containerd keeps the view exactly as long as one of its user containers exists;
  * between View and that label, an acquire lease with `containerd.io/gc.expire` holds the view, so a
    process killed in between leaves a view that expires by itself (or that `ukrun gc` removes at once);
  * a user is recorded on the host only after its label is set; the view is unmounted, then removed,
    then the last label goes, in that order (a devmapper device must not be removed while mounted).
The state root's layout and the view records are in artifacts.views; `ukrun gc` in artifacts.gc.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

from ukrun import crashpoints, digest, errors, host
from ukrun.artifacts import layers, paths
from ukrun.artifacts.gc import Collector
from ukrun.artifacts.source import MODES, Artifacts, Source, decide, in_place, read_config, what
from ukrun.artifacts.views import (
    ACQUIRE_LABEL,
    MODE_LABEL,
    ROOT_LABEL,
    VIEW_LABEL,
    ViewState,
    safe_name,
    user_label,
    view_id,
    view_key,
)
from ukrun.containerd.records import ContainerRecord
from ukrun.image.oci import ImageLayers
from ukrun.logs import log
from ukrun.unikernel import URUNC_JSON, UnikernelConfig, from_annotations

ACQUIRE_TTL_S = 600.0


class ArtifactStore(Collector):
    """Acquires and releases a container's artifacts under one state root, in one namespace."""

    # -- acquire ------------------------------------------------------------------------------------
    def acquire(self, container_id: str, *, mode: str = "shared", config: UnikernelConfig | None = None,
                rootfs: Path | None = None, record: ContainerRecord | None = None) -> Artifacts:
        """Artifacts of a container. `config` is its unikernel configuration when the caller has read it
        (create reads it once); else the spec's annotations in containerd, else the view's `/urunc.json`.
        `rootfs` is its mounted rootfs, for copy mode and the fallback; `record`, containerd's record of
        the container when the caller already has it."""
        if mode not in MODES:
            raise errors.ConfigError(f"unknown artifact mode {mode!r}; use one of {', '.join(MODES)}")
        safe_name(container_id, "container ID")
        spec_config = config
        try:
            record = record or self.client.get_container(container_id)
        except errors.ContainerdUnavailable as exc:
            if rootfs is None:
                raise
            reason = f"containerd is unreachable ({exc}): read in place from the rootfs folder"
            return in_place(container_id, self.namespace, spec_config or read_config(rootfs), rootfs, reason)
        if spec_config is None:
            spec_config = from_annotations(_spec_annotations(record.spec))
        decision = decide(mode, True, record)
        if decision.source is Source.IN_PLACE:
            if rootfs is None:
                raise errors.UkrunError(f"container {record.id!r} has no snapshot to view: give its rootfs folder")
            return in_place(container_id, self.namespace, spec_config or read_config(rootfs), rootfs, decision.reason)
        if decision.source is Source.COPY:
            return self._acquire_copy(container_id, spec_config, rootfs, record)._replace(reason=decision.reason)
        return self._acquire_view(record, mode, spec_config)._replace(reason=decision.reason)

    def _acquire_view(self, record: ContainerRecord, mode: str, spec_config: UnikernelConfig | None) -> Artifacts:
        if not record.snapshotter or not record.snapshot_key:
            raise errors.UkrunError(f"container {record.id!r} has no snapshot: create it from an image")
        top = self.client.stat_snapshot(record.snapshotter, record.snapshot_key).parent
        if not top:
            raise errors.UkrunError(f"container {record.id!r}'s snapshot has no committed parent to view")
        wanted = tuple(spec_config.artifact_paths()) if spec_config else (URUNC_JSON,)
        cache = self._chain_cache_path(record.snapshotter, top, wanted)
        choice = _load_choice(cache)
        if choice is None:
            choice = layers.choose(self.client, self._image_layers(record), top)
        art = self._open_view(record, mode, choice, spec_config)
        if art is None:  # the configuration names artifacts the marked layer does not hold
            choice = layers.Choice(top, (), "configuration names artifacts outside the marked layer: top chain")
            art = self._open_view(record, mode, choice, spec_config)
            assert art is not None
        _store_choice(cache, choice)
        return art

    def remember_choice(self, snapshotter: str, top: str, wanted: tuple[str, ...], choice: layers.Choice) -> None:
        """Keeps a chain choice where `acquire` looks first (`ukrun view warm` makes one before any container)."""
        _store_choice(self._chain_cache_path(snapshotter, top, wanted), choice)

    def _image_layers(self, record: ContainerRecord) -> ImageLayers | None:
        if not record.image:
            return None
        try:
            image = self.client.get_image(record.image)
            return layers.read_image_layers(self.client, image.target)
        except (errors.NotFound, errors.ImageError) as exc:
            log.info("image %s unreadable, using the top chain: %s", record.image, exc)
            return None

    def _chain_cache_path(self, snapshotter: str, top: str, wanted: tuple[str, ...]) -> Path:
        h = digest.hexdigest("\0".join((snapshotter, top, *wanted)).encode())[:32]
        return self.root / "chains" / self.namespace / f"{h}.json"

    def _open_view(self, record: ContainerRecord, mode: str, choice: layers.Choice,
                   spec_config: UnikernelConfig | None) -> Artifacts | None:
        key = view_key(mode, choice.chain_id, record.id)
        state = self._hold(record, key, choice.chain_id, mode)
        try:
            root = Path(state.mount_point)
            config = spec_config or read_config(root)
            resolved = {p: paths.resolve_file(root, p, what(config, p)) for p in config.artifact_paths()}
            if config.source == URUNC_JSON:
                resolved[URUNC_JSON] = paths.resolve_file(root, URUNC_JSON, "urunc.json")
            if choice.marked_paths and not all(
                p in choice.marked_paths and r.followed_links == 0 for p, r in resolved.items()
            ):
                self._release_view(record.id, state.id, keep=False)
                return None
        except BaseException:
            self._release_view(record.id, state.id, keep=False)
            raise
        return Artifacts(
            container=record.id,
            namespace=self.namespace,
            mode=mode,
            config=config,
            kernel=resolved[config.binary].path,
            initrd=resolved[config.initrd].path if config.initrd else None,
            urunc_json=resolved[URUNC_JSON].path if URUNC_JSON in resolved else None,
            block=resolved[config.block].path if config.block else None,
            snapshotter=record.snapshotter,
            view_key=key,
            view_id=state.id,
            chain_id=choice.chain_id,
            chain_reason=choice.reason,
            mount_point=root,
        )

    def _hold(self, record: ContainerRecord, key: str, parent: str, mode: str) -> ViewState:
        """Makes `record` a user of the view `key` of `parent`: created, taken over from idle, mounted and
        labelled as needed."""
        sn = record.snapshotter
        vid = view_id(self.namespace, sn, key)
        with self._lock(vid):
            state = self._load_view(vid)
            if state and record.id in state.users:
                return state
            if state and state.users and not self._view_exists(sn, key):
                log.warning("view %s vanished from containerd; making it again", key)
                self._teardown(vid, state, keep_lock=True)
                state = None
            if state and state.users:
                # Held by the other users' labels: this container's label is all it takes.
                self.client.update_container_labels(record.id, {user_label(sn): key})
            elif not (state and state.mounted and state.idle(time.time()) and self._take_over(record, state)):
                if state:  # what a crash left, or an idle view past its end: never handed over as it is
                    self._teardown(vid, state, keep_lock=True)
                state = self._create_and_label(record, vid, key, parent, mode)
            if not state.mounted:
                self._ensure_mounted(state)
            self._write_record(record.id, f"view:{vid}")
            crashpoints.point("acquire-before-user")
            (self._view_dir(vid) / "users" / record.id).touch()
            crashpoints.point("acquire-after-user")
            return state._replace(users=tuple(sorted({*state.users, record.id})), mounted=True,
                                  mount_point=str(self._view_dir(vid) / "rootfs"))

    @contextlib.contextmanager
    def _acquire_lease(self, vid: str) -> Iterator[str]:
        """A lease that holds a view from its View until a label or an idle lease does."""
        lease = self.client.create_lease(
            f"ukrun/acquire/{vid}/{os.urandom(6).hex()}", {ACQUIRE_LABEL: vid, ROOT_LABEL: self._root_id},
            expire_s=ACQUIRE_TTL_S,
        )
        try:
            yield lease.id
        finally:
            with contextlib.suppress(errors.ContainerdError):
                self.client.delete_lease(lease.id)

    def _make_view(self, sn: str, vid: str, key: str, parent: str, mode: str, lease: str) -> ViewState:
        try:
            labels = {VIEW_LABEL: vid, MODE_LABEL: mode, ROOT_LABEL: self._root_id}
            mounts = self.client.view(sn, key, parent, labels=labels, lease=lease)
        except errors.AlreadyExists:
            self.client.lease_add_snapshot(lease, sn, key)
            mounts = self.client.mounts(sn, key)
        crashpoints.point("acquire-after-view")
        state = ViewState(id=vid, namespace=self.namespace, snapshotter=sn, key=key, parent=parent, mode=mode,
                          mounts=tuple(m._asdict() for m in mounts))
        self._save_view(state)
        return state

    def _create_and_label(self, record: ContainerRecord, vid: str, key: str, parent: str, mode: str) -> ViewState:
        with self._acquire_lease(vid) as lease:
            state = self._make_view(record.snapshotter, vid, key, parent, mode, lease)
            self.client.update_container_labels(record.id, {user_label(record.snapshotter): key})
            crashpoints.point("acquire-after-label")
            return state

    def _ensure_mounted(self, state: ViewState) -> None:
        target = self._view_dir(state.id) / "rootfs"
        if host.is_mounted(target):
            return
        target.mkdir(parents=True, exist_ok=True)
        for m in state.mounts:
            opts = [o for o in m.get("options", []) if o != "rw"]
            if "ro" not in opts:
                opts.append("ro")
            host.mount(m["source"], target, m["type"], opts)
        crashpoints.point("acquire-after-mount")

    # -- copy mode ----------------------------------------------------------------------------------
    def _acquire_copy(self, container_id: str, spec_config: UnikernelConfig | None, rootfs: Path | None,
                      record: ContainerRecord | None) -> Artifacts:
        dest = self.root / "copies" / self.namespace / container_id
        self._write_record(container_id, "copy")
        with self._source_root(rootfs, record) as src:
            config = spec_config or read_config(src)
            import shutil  # not at the top: the shared path, every create's, never copies

            shutil.rmtree(dest, ignore_errors=True)
            dest.mkdir(parents=True)
            copied = 0
            out: dict[str, Path] = {}
            wanted = [*config.artifact_paths(), *([URUNC_JSON] if config.source == URUNC_JSON else [])]
            root_fd = paths.open_root(src)
            try:
                for image_path in wanted:
                    target = dest / image_path.lstrip("/").replace("/", "_")
                    copied += _copy(paths.open_file(root_fd, image_path, what(config, image_path)), target)
                    out[image_path] = target
            finally:
                os.close(root_fd)
        art = Artifacts(
            container=container_id,
            namespace=self.namespace,
            mode="copy",
            config=config,
            kernel=out[config.binary],
            initrd=out.get(config.initrd) if config.initrd else None,
            urunc_json=out.get(URUNC_JSON),
            block=out.get(config.block) if config.block else None,
            snapshotter=record.snapshotter if record else "",
            bytes_copied=copied,
        )
        return art

    @contextlib.contextmanager
    def _source_root(self, rootfs: Path | None, record: ContainerRecord | None) -> Iterator[Path]:
        """The container's rootfs: the given folder, or its snapshot mounted read-only for a moment."""
        if rootfs is not None:
            yield rootfs
            return
        if record is None or not record.snapshot_key:
            raise errors.UkrunError("copy mode needs the container's rootfs (--rootfs) or a container with a snapshot")
        mounts = self.client.mounts(record.snapshotter, record.snapshot_key)
        target = self.root / "tmp" / f"{self.namespace}-{record.id}"
        target.mkdir(parents=True, exist_ok=True)
        try:
            for m in mounts:
                host.mount(m.source, target, m.type, [*(o for o in m.options if o != "rw"), "ro"])
            yield target
        finally:
            host.unmount_all(target)
            target.rmdir()


def _copy(fd: int, target: Path) -> int:
    """Copies the open file `fd` (closed after) to `target`; the bytes copied."""
    total = 0
    try:
        with open(target, "wb") as out:
            while sent := os.sendfile(out.fileno(), fd, None, 1 << 30):
                total += sent
    finally:
        os.close(fd)
    return total


def _spec_annotations(spec: bytes) -> dict[str, str]:
    if not spec:
        return {}
    try:
        doc = json.loads(spec)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    ann = doc.get("annotations") if isinstance(doc, dict) else None
    return {str(k): str(v) for k, v in ann.items()} if isinstance(ann, dict) else {}


def _load_choice(path: Path) -> layers.Choice | None:
    try:
        data = json.loads(path.read_text())
        return layers.Choice(data["chain_id"], tuple(data["marked_paths"]), data["reason"])
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return None


def _store_choice(path: Path, choice: layers.Choice) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(choice._asdict()))
    os.replace(tmp, path)
