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
State root layout:
  views/<id>/view.json, views/<id>/rootfs (mount point), views/<id>/users/<container>, views/<id>.lock
  containers/<namespace>/<container>        symlink to what a container holds: view:<id> or copy
  chains/<namespace>/<key>.json             cached chain choice per (top chain, artifact paths)
  copies/<namespace>/<container>/           copy mode only
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from ukrun import crashpoints, errors, host
from ukrun.artifacts import layers, paths
from ukrun.containerd.records import ContainerRecord, gc_ref_snapshot_label
from ukrun.image.oci import ImageLayers
from ukrun.logs import log
from ukrun.unikernel import URUNC_JSON, URUNC_JSON_LIMIT, UnikernelConfig, from_annotations, parse_urunc_json

if TYPE_CHECKING:
    from ukrun.containerd.client import Client


MODES = ("shared", "per-container", "copy")
VIEW_LABEL = "ukrun.io/view"
MODE_LABEL = "ukrun.io/mode"
ACQUIRE_LABEL = "ukrun.io/acquire"
ROOT_LABEL = "ukrun.io/state-root"  # on views and acquire leases: gc touches only its own root's
USER_LABEL_SUFFIX = "ukrun-view"
ACQUIRE_TTL_S = 600.0
def view_id(namespace: str, snapshotter: str, key: str) -> str:
    return hashlib.sha256(f"{namespace}\0{snapshotter}\0{key}".encode()).hexdigest()[:24]


def view_key(mode: str, chain_id: str, container_id: str) -> str:
    return f"ukrun/view/{chain_id}" if mode == "shared" else f"ukrun/view/{chain_id}/{container_id}"


def user_label(snapshotter: str) -> str:
    return gc_ref_snapshot_label(snapshotter, USER_LABEL_SUFFIX)


def _safe_name(value: str, what: str) -> str:
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


class Artifacts(NamedTuple):
    container: str
    namespace: str
    mode: str
    config: UnikernelConfig
    kernel: Path
    initrd: Path | None
    urunc_json: Path | None
    block: Path | None = None  # com.urunc.unikernel.block
    snapshotter: str = ""
    view_key: str = ""
    view_id: str = ""
    chain_id: str = ""
    chain_reason: str = ""
    mount_point: Path | None = None
    bytes_copied: int = 0

    def to_json(self) -> dict[str, Any]:
        out = self._asdict()
        out["config"] = self.config._asdict()
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in out.items()}


class ArtifactStore:
    """Acquires and releases a container's artifacts under one state root, in one namespace."""

    def __init__(self, root: Path, namespace: str, connect: Callable[[], Client]) -> None:
        self.root = root
        self.namespace = _safe_name(namespace, "namespace")
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
        return self.root / "containers" / self.namespace / _safe_name(container_id, "container ID")

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

    # -- acquire ------------------------------------------------------------------------------------
    def acquire(self, container_id: str, *, mode: str = "shared", config: UnikernelConfig | None = None,
                rootfs: Path | None = None, record: ContainerRecord | None = None) -> Artifacts:
        """Artifacts of a container. `config` is its unikernel configuration when the caller has read it
        (create reads it once); else the spec's annotations in containerd, else the view's `/urunc.json`.
        `rootfs` is its mounted rootfs, for copy mode and the fallback; `record`, containerd's record of
        the container when the caller already has it."""
        if mode not in MODES:
            raise errors.ConfigError(f"unknown artifact mode {mode!r}; use one of {', '.join(MODES)}")
        _safe_name(container_id, "container ID")
        spec_config = config
        try:
            record = record or self.client.get_container(container_id)
        except errors.ContainerdUnavailable as exc:
            if rootfs is None:
                raise
            log.warning("containerd unreachable, copying the artifacts out of %s instead: %s", rootfs, exc)
            return self._acquire_copy(container_id, spec_config, rootfs, None)
        if spec_config is None:
            spec_config = from_annotations(_spec_annotations(record.spec))
        if mode == "copy":
            return self._acquire_copy(container_id, spec_config, rootfs, record)
        if not record.snapshot_key and rootfs is not None:
            log.info("container %s has no snapshot to view (a rootfs of its own): copying its artifacts", record.id)
            return self._acquire_copy(container_id, spec_config, rootfs, record)
        return self._acquire_view(record, mode, spec_config)

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
        h = hashlib.sha256("\0".join((snapshotter, top, *wanted)).encode()).hexdigest()[:32]
        return self.root / "chains" / self.namespace / f"{h}.json"

    def _open_view(self, record: ContainerRecord, mode: str, choice: layers.Choice,
                   spec_config: UnikernelConfig | None) -> Artifacts | None:
        key = view_key(mode, choice.chain_id, record.id)
        state = self._hold(record, key, choice.chain_id, mode)
        try:
            root = Path(state.mount_point)
            config = spec_config or _read_config(root)
            resolved = {p: paths.resolve_file(root, p, _what(config, p)) for p in config.artifact_paths()}
            if config.source == URUNC_JSON:
                resolved[URUNC_JSON] = paths.resolve_file(root, URUNC_JSON, "urunc.json")
            if choice.marked_paths and not all(
                p in choice.marked_paths and r.followed_links == 0 for p, r in resolved.items()
            ):
                self._release_view(record.id, state.id)
                return None
        except BaseException:
            self._release_view(record.id, state.id)
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
        """Makes `record` a user of the view `key` of `parent`: created, mounted and labelled as needed."""
        sn = record.snapshotter
        vid = view_id(self.namespace, sn, key)
        with self._lock(vid):
            state = self._load_view(vid)
            if state and record.id in state.users:
                return state
            if state and state.users:
                try:
                    self.client.stat_snapshot(sn, key)
                except errors.NotFound:
                    log.warning("view %s vanished from containerd; making it again", key)
                    self._teardown(vid, state)
                    state = None
            if state and state.users:
                # Held by the other users' labels: this container's label is all it takes.
                self.client.update_container_labels(record.id, {user_label(sn): key})
            else:
                state = self._create_and_label(record, vid, key, parent, mode)
            self._ensure_mounted(state)
            self._write_record(record.id, f"view:{vid}")
            crashpoints.point("acquire-before-user")
            (self._view_dir(vid) / "users" / record.id).touch()
            crashpoints.point("acquire-after-user")
            loaded = self._load_view(vid)
            assert loaded is not None
            return loaded

    def _create_and_label(self, record: ContainerRecord, vid: str, key: str, parent: str, mode: str) -> ViewState:
        sn = record.snapshotter
        lease = self.client.create_lease(
            f"ukrun/acquire/{vid}/{os.urandom(6).hex()}", {ACQUIRE_LABEL: vid, ROOT_LABEL: self._root_id},
            expire_s=ACQUIRE_TTL_S,
        )
        try:
            try:
                labels = {VIEW_LABEL: vid, MODE_LABEL: mode, ROOT_LABEL: self._root_id}
                mounts = self.client.view(sn, key, parent, labels=labels, lease=lease.id)
            except errors.AlreadyExists:
                self.client.lease_add_snapshot(lease.id, sn, key)
                mounts = self.client.mounts(sn, key)
            crashpoints.point("acquire-after-view")
            state = ViewState(
                id=vid, namespace=self.namespace, snapshotter=sn, key=key, parent=parent, mode=mode,
                mounts=tuple(m._asdict() for m in mounts),
            )
            self._save_view(state)
            self.client.update_container_labels(record.id, {user_label(sn): key})
            crashpoints.point("acquire-after-label")
            return state
        finally:
            with contextlib.suppress(errors.ContainerdError):
                self.client.delete_lease(lease.id)

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
            config = spec_config or _read_config(src)
            import shutil  # not at the top: the shared path, every create's, never copies

            shutil.rmtree(dest, ignore_errors=True)
            dest.mkdir(parents=True)
            copied = 0
            out: dict[str, Path] = {}
            wanted = [*config.artifact_paths(), *([URUNC_JSON] if config.source == URUNC_JSON else [])]
            for image_path in wanted:
                res = paths.resolve_file(src, image_path, _what(config, image_path))
                target = dest / image_path.lstrip("/").replace("/", "_")
                shutil.copyfile(res.path, target)
                copied += target.stat().st_size
                out[image_path] = target
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

    # -- release ------------------------------------------------------------------------------------
    def release(self, container_id: str) -> bool:
        """Releases what `acquire` gave the container. Idempotent; False when there was nothing."""
        path = self._record_path(container_id)
        try:
            held = os.readlink(path)
        except FileNotFoundError:
            return False
        if held.startswith("view:"):
            self._release_view(container_id, held.removeprefix("view:"))
        else:
            import shutil

            shutil.rmtree(self.root / "copies" / self.namespace / container_id, ignore_errors=True)
        path.unlink(missing_ok=True)
        return True

    def _release_view(self, container_id: str, vid: str) -> None:
        with self._lock(vid):
            state = self._load_view(vid)
            if state is None:
                return
            (self._view_dir(vid) / "users" / container_id).unlink(missing_ok=True)
            crashpoints.point("release-after-unuse")
            if not [u for u in state.users if u != container_id]:
                self._teardown(vid, state)
            with self._unless_unreachable(f"the label of container {container_id}"):
                self.client.update_container_labels(container_id, {user_label(state.snapshotter): None})

    def _teardown(self, vid: str, state: ViewState) -> None:
        """Unmount, then remove the view, then its folder. Caller holds the view's lock."""
        target = self._view_dir(vid) / "rootfs"
        host.unmount_all(target)
        crashpoints.point("release-after-unmount")
        with self._unless_unreachable(f"view {state.key}"):
            self.client.remove_snapshot(state.snapshotter, state.key)
        crashpoints.point("release-after-remove")
        import shutil

        shutil.rmtree(self._view_dir(vid), ignore_errors=True)
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

    def gc(self, *, dry_run: bool = False) -> list[str]:
        """Reclaims views whose users are gone, mounts with no view, ukrun leases and labels left by crashes."""
        actions: list[str] = []
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
                        import shutil

                        shutil.rmtree(d, ignore_errors=True)
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
                if not alive:
                    actions.append(f"remove view {state.key} ({state.snapshotter}) and its mount")
                    if not dry_run:
                        self._teardown(vid, state)
        crashpoints.point("gc-after-views")
        actions += self._gc_containerd(dry_run)
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

    def _gc_containerd(self, dry_run: bool) -> list[str]:
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
                    if state is None or not state.users:
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


def _what(config: UnikernelConfig, image_path: str) -> str:
    if image_path == config.binary:
        return "kernel"
    if image_path == config.initrd:
        return "initrd"
    if image_path == config.block:
        return "block image"
    return "file"


def _read_config(root: Path) -> UnikernelConfig:
    try:
        res = paths.resolve_file(root, URUNC_JSON, "urunc.json")
    except errors.UnsafePath:
        raise
    except errors.ImageError as exc:
        raise errors.ImageError(
            f"no unikernel configuration: the spec has no com.urunc.unikernel.* annotations and {exc}"
        ) from None
    return parse_urunc_json(paths.read_limited(res.path, URUNC_JSON_LIMIT, "urunc.json"))


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

