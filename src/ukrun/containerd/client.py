"""A small typed client for the parts of containerd's gRPC API that ukrun uses.

It knows nothing of unikernels. It speaks gRPC itself (ukrun.containerd.h2, .hpack, .wire, with the
messages of .api generated from the .proto files): no grpcio, no protobuf, no threads, a few ms to import.
Callers still import it only on the paths that really talk to containerd. Every failed call becomes a
ukrun error in one place, `_fail`.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import NoReturn, TypeVar

from ukrun import errors
from ukrun.containerd import api, wire
from ukrun.containerd.h2 import Connection
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
from ukrun.containerd.status import RpcError, Status

Req = TypeVar("Req", bound=wire.Message)
Resp = TypeVar("Resp", bound=wire.Message)
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
        self._conn = Connection(self.address)

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
        self._conn.close()

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

    def _fail(self, exc: RpcError, what: str) -> NoReturn:
        code, detail = exc.code, exc.details or str(exc)
        where = f"containerd at {self.address}"
        if code == Status.UNAVAILABLE:
            raise errors.ContainerdUnavailable(
                f"cannot reach {where} ({detail}): is it running, and is it containerd? {ADDRESS_HINT}"
            ) from None
        if code == Status.DEADLINE_EXCEEDED:
            raise errors.ContainerdUnavailable(
                f"{where} did not answer {what} within {self.timeout:g} s: is it containerd, and healthy? "
                f"{ADDRESS_HINT}"
            ) from None
        if code == Status.UNIMPLEMENTED:
            raise errors.ContainerdUnavailable(
                f"{where} does not implement {what} ({detail}): is this socket really containerd's? "
                f"{ADDRESS_HINT}"
            ) from None
        if code == Status.NOT_FOUND:
            raise errors.NotFound(f"{what}: not found in namespace {self.namespace!r} ({detail})") from None
        if code == Status.ALREADY_EXISTS:
            raise errors.AlreadyExists(f"{what}: already exists ({detail})") from None
        if code == Status.FAILED_PRECONDITION:
            raise errors.FailedPrecondition(f"{what}: {detail}") from None
        if code == Status.INVALID_ARGUMENT:
            if "snapshotter not loaded" in detail:
                name = detail.split("snapshotter not loaded:", 1)[1].split(":", 1)[0].strip()
                raise errors.SnapshotterNotLoaded(
                    f"{where} has no snapshotter {name!r} loaded: enable it in containerd's config "
                    f"(`ctr plugins ls` shows why it was skipped)"
                ) from None
            raise errors.InvalidArgument(f"{what}: {detail}") from None
        raise errors.ContainerdError(f"{what} failed at {where}: {code.name}: {detail}")

    def _call(self, rpc: wire.Rpc[Req, Resp], request: Req, what: str, *, lease: str | None = None,
              namespaced: bool = True, timeout: float | None = None) -> Iterator[Resp]:
        """Each response of `rpc` (one for a unary method); a failure raises the matching ukrun error."""
        try:
            for data in self._conn.call(rpc.path, self._metadata(lease, namespaced), wire.encode(request),
                                        self.timeout if timeout is None else timeout):
                yield wire.decode(rpc.response, data)
        except RpcError as exc:
            self._fail(exc, what)
        except wire.WireError as exc:
            raise errors.ContainerdError(f"{what}: containerd at {self.address} sent a bad message ({exc})") from None

    def _unary(self, rpc: wire.Rpc[Req, Resp], request: Req, what: str, *, lease: str | None = None,
               namespaced: bool = True) -> Resp:
        responses = list(self._call(rpc, request, what, lease=lease, namespaced=namespaced))
        if len(responses) != 1:
            raise errors.ContainerdError(f"{what}: containerd at {self.address} sent {len(responses)} answers, "
                                         f"not one")
        return responses[0]

    # -- introspection ------------------------------------------------------------------------------
    def version(self) -> tuple[str, str]:
        resp = self._unary(api.VERSION_VERSION, api.ProtobufEmpty(), "Version", namespaced=False)
        return resp.version, resp.revision

    def plugins(self, filters: Sequence[str] = ()) -> list[PluginInfo]:
        req = api.IntrospectionPluginsRequest(filters=list(filters))
        resp = self._unary(api.INTROSPECTION_PLUGINS, req, "Introspection.Plugins", namespaced=False)
        return [
            PluginInfo(type=p.type, id=p.id, init_error=p.init_err.message if p.init_err is not None else "")
            for p in resp.plugins
        ]

    def namespaces(self) -> list[str]:
        resp = self._unary(api.NAMESPACES_LIST, api.NamespacesListNamespacesRequest(), "Namespaces.List",
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
        req = api.ContainersGetContainerRequest(id=container_id)
        try:
            c = self._unary(api.CONTAINERS_GET, req, f"container {container_id!r}").container
        except errors.NotFound:
            self.require_namespace()
            raise errors.NotFound(
                f"container {container_id!r} does not exist in namespace {self.namespace!r} "
                f"of containerd at {self.address}"
            ) from None
        return _container(c or api.ContainersContainer())

    def list_containers(self, filters: Sequence[str] = ()) -> list[ContainerRecord]:
        req = api.ContainersListContainersRequest(filters=list(filters))
        return [_container(c) for c in self._unary(api.CONTAINERS_LIST, req, "Containers.List").containers]

    def update_container_labels(self, container_id: str, labels: Mapping[str, str | None]) -> None:
        """Sets (value) or removes (None) the given labels; other labels stay as they are."""
        container = api.ContainersContainer(
            id=container_id, labels={k: v for k, v in labels.items() if v is not None}
        )
        mask = api.ProtobufFieldMask(paths=[f"labels.{k}" for k in labels])
        req = api.ContainersUpdateContainerRequest(container=container, update_mask=mask)
        self._unary(api.CONTAINERS_UPDATE, req, f"update of container {container_id!r}")

    # -- snapshots ----------------------------------------------------------------------------------
    def stat_snapshot(self, snapshotter: str, key: str) -> SnapshotInfo:
        req = api.SnapshotsStatSnapshotRequest(snapshotter=snapshotter, key=key)
        info = self._unary(api.SNAPSHOTS_STAT, req, f"snapshot {key!r} ({snapshotter})").info
        return _info(info or api.SnapshotsInfo())

    def view(self, snapshotter: str, key: str, parent: str, *, labels: Mapping[str, str] | None = None,
             lease: str | None = None) -> list[Mount]:
        req = api.SnapshotsViewSnapshotRequest(
            snapshotter=snapshotter, key=key, parent=parent, labels=dict(labels or {})
        )
        resp = self._unary(api.SNAPSHOTS_VIEW, req, f"view {key!r} of {parent} ({snapshotter})", lease=lease)
        return [_mount(m) for m in resp.mounts]

    def mounts(self, snapshotter: str, key: str) -> list[Mount]:
        req = api.SnapshotsMountsRequest(snapshotter=snapshotter, key=key)
        resp = self._unary(api.SNAPSHOTS_MOUNTS, req, f"mounts of snapshot {key!r} ({snapshotter})")
        return [_mount(m) for m in resp.mounts]

    def remove_snapshot(self, snapshotter: str, key: str) -> None:
        req = api.SnapshotsRemoveSnapshotRequest(snapshotter=snapshotter, key=key)
        self._unary(api.SNAPSHOTS_REMOVE, req, f"removal of snapshot {key!r} ({snapshotter})")

    def list_snapshots(self, snapshotter: str, filters: Sequence[str] = ()) -> list[SnapshotInfo]:
        req = api.SnapshotsListSnapshotsRequest(snapshotter=snapshotter, filters=list(filters))
        out: list[SnapshotInfo] = []
        for resp in self._call(api.SNAPSHOTS_LIST, req, f"list of {snapshotter} snapshots"):
            out.extend(_info(i) for i in resp.info)
        return out

    # -- leases -------------------------------------------------------------------------------------
    def create_lease(self, lease_id: str, labels: Mapping[str, str] | None = None,
                     expire_s: float | None = None, *, expire_at: float | None = None) -> Lease:
        """`expire_s`: seconds from now after which containerd's GC may remove the lease; `expire_at`: the
        same as a time (seconds since the epoch, whole seconds: the label's resolution)."""
        all_labels = dict(labels or {})
        if expire_s is not None:
            expire_at = time.time() + expire_s
        if expire_at is not None:
            all_labels[GC_EXPIRE_LABEL] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expire_at))
        req = api.LeasesCreateRequest(id=lease_id, labels=all_labels)
        lease = self._unary(api.LEASES_CREATE, req, f"lease {lease_id!r}").lease or api.LeasesLease()
        return Lease(id=lease.id, labels=dict(lease.labels))

    def delete_lease(self, lease_id: str, *, sync: bool = False) -> None:
        req = api.LeasesDeleteRequest(id=lease_id, sync=sync)
        self._unary(api.LEASES_DELETE, req, f"deletion of lease {lease_id!r}")

    def list_leases(self, filters: Sequence[str] = ()) -> list[Lease]:
        req = api.LeasesListRequest(filters=list(filters))
        resp = self._unary(api.LEASES_LIST, req, "Leases.List")
        return [Lease(id=le.id, labels=dict(le.labels)) for le in resp.leases]

    def lease_add_snapshot(self, lease_id: str, snapshotter: str, key: str) -> None:
        res = api.LeasesResource(id=key, type=snapshot_resource_type(snapshotter))
        req = api.LeasesAddResourceRequest(id=lease_id, resource=res)
        self._unary(api.LEASES_ADD_RESOURCE, req, f"adding snapshot {key!r} to lease {lease_id!r}")

    # -- images and content -------------------------------------------------------------------------
    def get_image(self, name: str) -> ImageRecord:
        req = api.ImagesGetImageRequest(name=name)
        img = self._unary(api.IMAGES_GET, req, f"image {name!r}").image or api.ImagesImage()
        target = _descriptor(img.target or api.TypesDescriptor())
        return ImageRecord(name=img.name, target=target, labels=dict(img.labels))

    def read_blob(self, digest: str, *, limit: int) -> bytes:
        """The whole blob, refusing one larger than `limit` bytes before reading it."""
        info = self._unary(api.CONTENT_INFO, api.ContentInfoRequest(digest=digest), f"content {digest}").info
        size = info.size if info is not None else 0
        if size > limit:
            raise errors.ImageError(f"content {digest} is {size} bytes, over the {limit}-byte limit")
        return b"".join(self.stream_blob(digest))

    def stream_blob(self, digest: str) -> Iterator[bytes]:
        req = api.ContentReadContentRequest(digest=digest)
        for resp in self._call(api.CONTENT_READ, req, f"read of content {digest}", timeout=max(self.timeout, 300)):
            yield resp.data


def _mount(m: api.TypesMount) -> Mount:
    return Mount(type=m.type, source=m.source, options=tuple(m.options), target=m.target)


def _info(i: api.SnapshotsInfo) -> SnapshotInfo:
    return SnapshotInfo(name=i.name, parent=i.parent, kind=SnapshotKind(i.kind), labels=dict(i.labels))


def _descriptor(d: api.TypesDescriptor) -> Descriptor:
    return Descriptor(media_type=d.media_type, digest=d.digest, size=d.size, annotations=dict(d.annotations))


def _container(c: api.ContainersContainer) -> ContainerRecord:
    return ContainerRecord(
        id=c.id,
        image=c.image,
        snapshotter=c.snapshotter,
        snapshot_key=c.snapshot_key,
        labels=dict(c.labels),
        spec=c.spec.value if c.spec is not None else b"",
    )
