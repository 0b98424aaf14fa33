"""Plain records the containerd client returns. Importing this module costs nothing (no gRPC).

They are typed named tuples, not dataclasses: `create` imports them on every call, and a frozen
dataclass costs about half a millisecond of code generation at import, a named tuple a tenth of that.
Mappings default to one shared empty mapping that cannot be changed."""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum
from types import MappingProxyType

from ukrun.tuples import NamedTuple

EMPTY: Mapping[str, str] = MappingProxyType({})


class SnapshotKind(IntEnum):
    UNKNOWN = 0
    VIEW = 1
    ACTIVE = 2
    COMMITTED = 3


class Mount(NamedTuple):
    type: str
    source: str
    options: tuple[str, ...] = ()
    target: str = ""


class SnapshotInfo(NamedTuple):
    name: str
    parent: str
    kind: SnapshotKind
    labels: Mapping[str, str] = EMPTY


class ContainerRecord(NamedTuple):
    id: str
    image: str
    snapshotter: str
    snapshot_key: str
    labels: Mapping[str, str] = EMPTY
    spec: bytes = b""


class Descriptor(NamedTuple):
    media_type: str
    digest: str
    size: int
    annotations: Mapping[str, str] = EMPTY


class ImageRecord(NamedTuple):
    name: str
    target: Descriptor
    labels: Mapping[str, str] = EMPTY


class Lease(NamedTuple):
    id: str
    labels: Mapping[str, str] = EMPTY


class PluginInfo(NamedTuple):
    type: str
    id: str
    init_error: str = ""


def snapshot_resource_type(snapshotter: str) -> str:
    """The lease resource type containerd uses for a snapshot of `snapshotter`."""
    return f"snapshots/{snapshotter}"


def gc_ref_snapshot_label(snapshotter: str, suffix: str = "") -> str:
    """Label key that makes its holder keep a snapshot alive through containerd's GC."""
    key = f"containerd.io/gc.ref.snapshot.{snapshotter}"
    return f"{key}/{suffix}" if suffix else key


GC_EXPIRE_LABEL = "containerd.io/gc.expire"
