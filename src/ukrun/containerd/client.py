"""A small typed client for the parts of containerd's gRPC API that ukrun uses.

It knows nothing of unikernels. Importing it loads grpc and the stubs (~200 ms), so callers import it
only on the paths that really talk to containerd.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

import grpc
from google.protobuf import empty_pb2, field_mask_pb2

from ukrun import errors
from ukrun.containerd.proto import (
    containers_pb2,
    containers_pb2_grpc,
    content_pb2,
    content_pb2_grpc,
    images_pb2,
    images_pb2_grpc,
    leases_pb2,
    leases_pb2_grpc,
    namespaces_pb2,
    namespaces_pb2_grpc,
    snapshots_pb2,
    snapshots_pb2_grpc,
    system_pb2,
    system_pb2_grpc,
    version_pb2_grpc,
)
from ukrun.containerd.records import (
    GC_EXPIRE_LABEL,
    ContainerRecord,
    Descriptor,
    ImageRecord,
    Lease,
    Mount,
    PluginInfo,
    SnapshotInfo,
    SnapshotKind,
    snapshot_resource_type,
)

MAX_MESSAGE = 16 * 1024 * 1024
ADDRESS_HINT = "set CONTAINERD_ADDRESS, --address, or 'address' under [containerd] in ukrun's config.toml"


def socket_path(address: str) -> str:
    return address.removeprefix("unix://")


class Client:
    """One connection to one containerd, in one namespace."""

    def __init__(self, address: str, namespace: str, *, timeout: float = 10.0) -> None:
        self.address = socket_path(address)
        self.namespace = namespace
        self.timeout = timeout
        self._check_socket()
        self._channel = grpc.insecure_channel(
            f"unix://{self.address}",
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE),
                ("grpc.max_send_message_length", MAX_MESSAGE),
            ],
        )
        self._snapshots = snapshots_pb2_grpc.SnapshotsStub(self._channel)
        self._leases = leases_pb2_grpc.LeasesStub(self._channel)
        self._containers = containers_pb2_grpc.ContainersStub(self._channel)
        self._images = images_pb2_grpc.ImagesStub(self._channel)
        self._content = content_pb2_grpc.ContentStub(self._channel)
        self._introspection = system_pb2_grpc.IntrospectionStub(self._channel)
        self._version = version_pb2_grpc.VersionStub(self._channel)
        self._namespaces = namespaces_pb2_grpc.NamespacesStub(self._channel)

    def _check_socket(self) -> None:
        try:
            mode = os.stat(self.address).st_mode
        except FileNotFoundError:
            raise errors.ContainerdUnavailable(
                f"no containerd socket at {self.address}: is containerd running? Otherwise {ADDRESS_HINT}"
            ) from None
        except PermissionError:
            raise errors.ContainerdUnavailable(
                f"no permission to reach the containerd socket {self.address}: run ukrun as root"
            ) from None
        if not stat.S_ISSOCK(mode):
            raise errors.ContainerdUnavailable(f"{self.address} is not a socket; {ADDRESS_HINT}")

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing -----------------------------------------------------------------------------------
    def _metadata(self, lease: str | None = None, namespaced: bool = True) -> list[tuple[str, str]]:
        md = [("containerd-namespace", self.namespace)] if namespaced else []
        if lease:
            md.append(("containerd-lease", lease))
        return md

    def _fail(self, exc: grpc.RpcError, what: str) -> NoReturn:
        code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
        detail = (exc.details() if isinstance(exc, grpc.Call) else None) or str(exc)
        where = f"containerd at {self.address}"
        if code == grpc.StatusCode.UNAVAILABLE:
            raise errors.ContainerdUnavailable(
                f"cannot reach {where} ({detail}): is it running, and is it containerd? {ADDRESS_HINT}"
            ) from None
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            raise errors.ContainerdUnavailable(
                f"{where} did not answer {what} within {self.timeout:g} s: is it containerd, and healthy? "
                f"{ADDRESS_HINT}"
            ) from None
        if code == grpc.StatusCode.UNIMPLEMENTED:
            raise errors.ContainerdUnavailable(
                f"{where} does not implement {what} ({detail}): is this socket really containerd's? "
                f"{ADDRESS_HINT}"
            ) from None
        if code == grpc.StatusCode.NOT_FOUND:
            raise errors.NotFound(f"{what}: not found in namespace {self.namespace!r} ({detail})") from None
        if code == grpc.StatusCode.ALREADY_EXISTS:
            raise errors.AlreadyExists(f"{what}: already exists ({detail})") from None
        if code == grpc.StatusCode.FAILED_PRECONDITION:
            raise errors.FailedPrecondition(f"{what}: {detail}") from None
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            if "snapshotter not loaded" in detail:
                name = detail.split("snapshotter not loaded:", 1)[1].split(":", 1)[0].strip()
                raise errors.SnapshotterNotLoaded(
                    f"{where} has no snapshotter {name!r} loaded: enable it in containerd's config "
                    f"(`ctr plugins ls` shows why it was skipped)"
                ) from None
            raise errors.InvalidArgument(f"{what}: {detail}") from None
        raise errors.ContainerdError(f"{what} failed at {where}: {code.name if code else '?'}: {detail}")

    def _unary(self, method: Any, request: Any, what: str, *, lease: str | None = None,
               namespaced: bool = True) -> Any:
        try:
            return method(request, timeout=self.timeout, metadata=self._metadata(lease, namespaced))
        except grpc.RpcError as exc:
            self._fail(exc, what)

    # -- introspection ------------------------------------------------------------------------------
    def version(self) -> tuple[str, str]:
        resp = self._unary(self._version.Version, empty_pb2.Empty(), "Version", namespaced=False)
        return resp.version, resp.revision

    def plugins(self, filters: Sequence[str] = ()) -> list[PluginInfo]:
        req = system_pb2.PluginsRequest(filters=list(filters))
        resp = self._unary(self._introspection.Plugins, req, "Introspection.Plugins", namespaced=False)
        return [
            PluginInfo(type=p.type, id=p.id, init_error=p.init_err.message if p.HasField("init_err") else "")
            for p in resp.plugins
        ]

    def namespaces(self) -> list[str]:
        resp = self._unary(self._namespaces.List, namespaces_pb2.ListNamespacesRequest(), "Namespaces.List",
                           namespaced=False)
        return [n.name for n in resp.namespaces]

    def namespace_exists(self) -> bool:
        return self.namespace in self.namespaces()

    def require_namespace(self) -> None:
        if not self.namespace_exists():
            raise errors.NamespaceMissing(
                f"namespace {self.namespace!r} does not exist on containerd at {self.address}: "
                f"set CONTAINERD_NAMESPACE or --namespace (the shim passes the container's namespace)"
            )

    # -- containers ---------------------------------------------------------------------------------
    def get_container(self, container_id: str) -> ContainerRecord:
        req = containers_pb2.GetContainerRequest(id=container_id)
        try:
            c = self._unary(self._containers.Get, req, f"container {container_id!r}").container
        except errors.NotFound:
            self.require_namespace()
            raise errors.NotFound(
                f"container {container_id!r} does not exist in namespace {self.namespace!r} "
                f"of containerd at {self.address}"
            ) from None
        return _container(c)

    def list_containers(self, filters: Sequence[str] = ()) -> list[ContainerRecord]:
        req = containers_pb2.ListContainersRequest(filters=list(filters))
        return [_container(c) for c in self._unary(self._containers.List, req, "Containers.List").containers]

    def update_container_labels(self, container_id: str, labels: Mapping[str, str | None]) -> None:
        """Sets (value) or removes (None) the given labels; other labels stay as they are."""
        container = containers_pb2.Container(
            id=container_id, labels={k: v for k, v in labels.items() if v is not None}
        )
        mask = field_mask_pb2.FieldMask(paths=[f"labels.{k}" for k in labels])
        req = containers_pb2.UpdateContainerRequest(container=container, update_mask=mask)
        self._unary(self._containers.Update, req, f"update of container {container_id!r}")

    # -- snapshots ----------------------------------------------------------------------------------
    def stat_snapshot(self, snapshotter: str, key: str) -> SnapshotInfo:
        req = snapshots_pb2.StatSnapshotRequest(snapshotter=snapshotter, key=key)
        return _info(self._unary(self._snapshots.Stat, req, f"snapshot {key!r} ({snapshotter})").info)

    def view(self, snapshotter: str, key: str, parent: str, *, labels: Mapping[str, str] | None = None,
             lease: str | None = None) -> list[Mount]:
        req = snapshots_pb2.ViewSnapshotRequest(
            snapshotter=snapshotter, key=key, parent=parent, labels=dict(labels or {})
        )
        resp = self._unary(self._snapshots.View, req, f"view {key!r} of {parent} ({snapshotter})", lease=lease)
        return [_mount(m) for m in resp.mounts]

    def mounts(self, snapshotter: str, key: str) -> list[Mount]:
        req = snapshots_pb2.MountsRequest(snapshotter=snapshotter, key=key)
        resp = self._unary(self._snapshots.Mounts, req, f"mounts of snapshot {key!r} ({snapshotter})")
        return [_mount(m) for m in resp.mounts]

    def remove_snapshot(self, snapshotter: str, key: str) -> None:
        req = snapshots_pb2.RemoveSnapshotRequest(snapshotter=snapshotter, key=key)
        self._unary(self._snapshots.Remove, req, f"removal of snapshot {key!r} ({snapshotter})")

    def list_snapshots(self, snapshotter: str, filters: Sequence[str] = ()) -> list[SnapshotInfo]:
        req = snapshots_pb2.ListSnapshotsRequest(snapshotter=snapshotter, filters=list(filters))
        out: list[SnapshotInfo] = []
        try:
            for resp in self._snapshots.List(req, timeout=self.timeout, metadata=self._metadata()):
                out.extend(_info(i) for i in resp.info)
        except grpc.RpcError as exc:
            self._fail(exc, f"list of {snapshotter} snapshots")
        return out

    # -- leases -------------------------------------------------------------------------------------
    def create_lease(self, lease_id: str, labels: Mapping[str, str] | None = None,
                     expire: timedelta | None = None) -> Lease:
        all_labels = dict(labels or {})
        if expire is not None:
            until = datetime.now(UTC) + expire
            all_labels[GC_EXPIRE_LABEL] = until.strftime("%Y-%m-%dT%H:%M:%SZ")
        req = leases_pb2.CreateRequest(id=lease_id, labels=all_labels)
        lease = self._unary(self._leases.Create, req, f"lease {lease_id!r}").lease
        return Lease(id=lease.id, labels=dict(lease.labels))

    def delete_lease(self, lease_id: str, *, sync: bool = False) -> None:
        req = leases_pb2.DeleteRequest(id=lease_id, sync=sync)
        self._unary(self._leases.Delete, req, f"deletion of lease {lease_id!r}")

    def list_leases(self, filters: Sequence[str] = ()) -> list[Lease]:
        req = leases_pb2.ListRequest(filters=list(filters))
        resp = self._unary(self._leases.List, req, "Leases.List")
        return [Lease(id=le.id, labels=dict(le.labels)) for le in resp.leases]

    def lease_add_snapshot(self, lease_id: str, snapshotter: str, key: str) -> None:
        res = leases_pb2.Resource(id=key, type=snapshot_resource_type(snapshotter))
        req = leases_pb2.AddResourceRequest(id=lease_id, resource=res)
        self._unary(self._leases.AddResource, req, f"adding snapshot {key!r} to lease {lease_id!r}")

    # -- images and content -------------------------------------------------------------------------
    def get_image(self, name: str) -> ImageRecord:
        req = images_pb2.GetImageRequest(name=name)
        img = self._unary(self._images.Get, req, f"image {name!r}").image
        return ImageRecord(name=img.name, target=_descriptor(img.target), labels=dict(img.labels))

    def read_blob(self, digest: str, *, limit: int) -> bytes:
        """The whole blob, refusing one larger than `limit` bytes before reading it."""
        info = self._unary(
            self._content.Info, content_pb2.InfoRequest(digest=digest), f"content {digest}"
        ).info
        if info.size > limit:
            raise errors.ImageError(f"content {digest} is {info.size} bytes, over the {limit}-byte limit")
        return b"".join(self.stream_blob(digest))

    def stream_blob(self, digest: str) -> Iterator[bytes]:
        req = content_pb2.ReadContentRequest(digest=digest)
        try:
            for resp in self._content.Read(req, timeout=max(self.timeout, 300), metadata=self._metadata()):
                yield resp.data
        except grpc.RpcError as exc:
            self._fail(exc, f"read of content {digest}")


def _mount(m: Any) -> Mount:
    return Mount(type=m.type, source=m.source, options=tuple(m.options), target=m.target)


def _info(i: Any) -> SnapshotInfo:
    return SnapshotInfo(name=i.name, parent=i.parent, kind=SnapshotKind(i.kind), labels=dict(i.labels))


def _descriptor(d: Any) -> Descriptor:
    return Descriptor(media_type=d.media_type, digest=d.digest, size=d.size, annotations=dict(d.annotations))


def _container(c: Any) -> ContainerRecord:
    return ContainerRecord(
        id=c.id,
        image=c.image,
        snapshotter=c.snapshotter,
        snapshot_key=c.snapshot_key,
        labels=dict(c.labels),
        spec=c.spec.value if c.HasField("spec") else b"",
    )
