"""Plain records the containerd client returns. Importing this module costs nothing (no gRPC)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum


class SnapshotKind(IntEnum):
    UNKNOWN = 0
    VIEW = 1
    ACTIVE = 2
    COMMITTED = 3


@dataclass(frozen=True)
class Mount:
    type: str
    source: str
    options: tuple[str, ...] = ()
    target: str = ""


@dataclass(frozen=True)
class SnapshotInfo:
    name: str
    parent: str
    kind: SnapshotKind
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ContainerRecord:
    id: str
    image: str
    snapshotter: str
    snapshot_key: str
    labels: dict[str, str] = field(default_factory=dict)
    spec: bytes = b""


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ImageRecord:
    name: str
    target: Descriptor
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Lease:
    id: str
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PluginInfo:
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
