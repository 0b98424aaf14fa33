"""`ukrun view warm IMAGE`: the shared view a container of the image would use, made and mounted before the first
container (after a pull, say), and left idle (artifacts.idle) for it to take over with no View and no mount.

The view is the one `create` would choose (artifacts.layers: the marked layer's chain when no later layer
touches it and the configuration names no artifact outside it, else the top chain), and that choice is kept
where `create` looks for it, so the first container does not read the image's layers either. What must stay
true: a warmed view is bounded like any idle view (its lease's `containerd.io/gc.expire`), and its
artifacts resolve inside it exactly as `create` would resolve them, or nothing is left warm.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from ukrun import crashpoints, errors
from ukrun.artifacts import layers, paths
from ukrun.artifacts.views import ViewState, view_id, view_key
from ukrun.unikernel import URUNC_JSON, URUNC_JSON_LIMIT, UnikernelConfig, from_image, parse_urunc_json

if TYPE_CHECKING:
    from ukrun.artifacts.store import ArtifactStore


def warm(store: ArtifactStore, image: str, snapshotter: str) -> tuple[ViewState, layers.Choice] | None:
    """Warms the view of `image` on `snapshotter`; returns it (idle, or in use) and the chain it views. None: the
    image does not set mountRootfs, so its containers read their artifacts in place and use no view."""
    if store.idle_s <= 0:
        raise errors.ConfigError("[artifacts] idle is 0: a warmed view would be released at once; set it to the "
                                 "seconds a view may wait for its first container")
    client = store.client
    try:
        found = layers.read_image_layers(client, client.get_image(image).target)
    except errors.NotFound:
        raise errors.UkrunError(f"image {image} does not exist in namespace {store.namespace}: pull or import it "
                                "first") from None
    if not found.layers:
        raise errors.ImageError(f"image {image} has no layers to view")
    top = found.layers[-1].chain_id
    try:
        client.stat_snapshot(snapshotter, top)
    except errors.NotFound:
        raise errors.UkrunError(f"image {image} is not unpacked for snapshotter {snapshotter}: unpack it there "
                                f"(ctr image pull/import --snapshotter {snapshotter}) or name the snapshotter its "
                                "containers use (--snapshotter)") from None
    choice = layers.choose(client, found, top)
    state = _warm_chain(store, snapshotter, choice.chain_id)
    config = _config(Path(state.mount_point), found.annotations, found.labels, image)
    if not config.mount_rootfs:  # artifacts.source: such a rootfs stays mounted, read in place
        _drop(store, state)
        return None
    if not _inside(Path(state.mount_point), config, choice):
        _drop(store, state)
        choice = layers.Choice(top, (), "configuration names artifacts outside the marked layer: top chain")
        state = _warm_chain(store, snapshotter, top)
        _inside(Path(state.mount_point), config, choice)
    store.remember_choice(snapshotter, top, tuple(config.artifact_paths()), choice)
    return state, choice


def _warm_chain(store: ArtifactStore, sn: str, chain: str) -> ViewState:
    key = view_key("shared", chain, "")
    vid = view_id(store.namespace, sn, key)
    with store._lock(vid):
        state = store._load_view(vid)
        usable = state and (state.users or (state.mounted and state.idle(time.time())))
        # In use, it goes idle with its last user; idle, it gets a new end.
        if state and usable and store._view_exists(sn, key) and (state.users or store._go_idle(state)):
            return _reload(store, vid)
        if state:
            store._teardown(vid, state, keep_lock=True)
        with store._acquire_lease(vid) as lease:
            state = store._make_view(sn, vid, key, chain, "shared", lease)
            store._ensure_mounted(state)
            crashpoints.point("warm-after-view")
            if not store._go_idle(_reload(store, vid)):
                store._teardown(vid, state, keep_lock=True)
                raise errors.ContainerdUnavailable(f"view {key} could not be kept idle: containerd is unreachable")
    return _reload(store, vid)


def _reload(store: ArtifactStore, vid: str) -> ViewState:
    state = store._load_view(vid)
    assert state is not None
    return state


def _drop(store: ArtifactStore, state: ViewState) -> None:
    """Tears down a view this call warmed in vain, unless a container uses it meanwhile."""
    with store._lock(state.id):
        now = store._load_view(state.id)
        if now is not None and not now.users:
            store._teardown(state.id, now)


def _config(root: Path, annotations: Mapping[str, str], labels: Mapping[str, str], image: str) -> UnikernelConfig:
    """The configuration `create` would read: the image's /urunc.json, else its annotations and labels."""
    root_fd = paths.open_root(root)
    try:
        fd = paths.open_file(root_fd, URUNC_JSON, "urunc.json")
    except errors.UnsafePath:
        raise
    except errors.ImageError:
        config = from_image(annotations, labels)
        if config is None:
            raise errors.ImageError(f"image {image} is not a unikernel image: no /urunc.json and no "
                                    "com.urunc.unikernel.* annotations or labels") from None
        return config
    finally:
        os.close(root_fd)
    return parse_urunc_json(paths.read_limited(fd, URUNC_JSON_LIMIT, "urunc.json"))


def _inside(root: Path, config: UnikernelConfig, choice: layers.Choice) -> bool:
    """Whether every artifact resolves inside the view (raising as `create` would when one does not), and,
    for a marked layer, lies among its marked paths with no link followed."""
    wanted = [*config.artifact_paths(), *([URUNC_JSON] if config.source == URUNC_JSON else [])]
    resolved = {p: paths.resolve_file(root, p, "artifact") for p in wanted}
    return not choice.marked_paths or all(p in choice.marked_paths and r.followed_links == 0
                                          for p, r in resolved.items())
