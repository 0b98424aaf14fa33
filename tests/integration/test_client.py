"""ukrun's own gRPC client against a real containerd (1.7 and 2.x): every method, and every error it maps."""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from testbed import containerd as ctd
from tests.integration.conftest import SNAPSHOTTER, load
from ukrun import errors
from ukrun.containerd.client import Client
from ukrun.containerd.records import GC_EXPIRE_LABEL, SnapshotKind

IMAGE = "ukrun/basic:1"


@pytest.fixture
def loaded(daemon: ctd.Daemon, ns: str, basic_image: Path, client: Client) -> Iterator[str]:
    """The basic image and one container, `c1`, on blockfile."""
    load(daemon, ns, basic_image, IMAGE, ["c1"])
    yield "c1"
    daemon.delete_container(ns, "c1")


def test_introspection(daemon: ctd.Daemon, client: Client) -> None:
    version, _ = client.version()
    assert version.startswith("1.7" if daemon.version == "1.7" else "2.")
    plugins = client.plugins(["type==io.containerd.snapshotter.v1"])
    assert {p.id for p in plugins} >= {"blockfile", "native"}
    assert all(p.type == "io.containerd.snapshotter.v1" for p in plugins)
    assert len(client.plugins()) > len(plugins)


def test_containers(client: Client, loaded: str, ns: str) -> None:
    assert client.namespace_exists() and ns in client.namespaces()
    record = client.get_container(loaded)
    assert (record.id, record.image, record.snapshotter, record.snapshot_key) == (loaded, IMAGE, SNAPSHOTTER, loaded)
    assert json.loads(record.spec)["ociVersion"]
    assert [c.id for c in client.list_containers()] == [loaded]
    assert client.list_containers(["id==nothing"]) == []
    client.update_container_labels(loaded, {"ukrun.test/a": "1", "ukrun.test/b": "2 ü"})
    client.update_container_labels(loaded, {"ukrun.test/a": None})
    labels = client.get_container(loaded).labels
    assert labels.get("ukrun.test/b") == "2 ü" and "ukrun.test/a" not in labels


def test_snapshots_and_leases(client: Client, loaded: str) -> None:
    active = client.stat_snapshot(SNAPSHOTTER, loaded)
    assert active.kind is SnapshotKind.ACTIVE and active.parent.startswith("sha256:")
    assert client.stat_snapshot(SNAPSHOTTER, active.parent).kind is SnapshotKind.COMMITTED
    assert client.mounts(SNAPSHOTTER, loaded)[0].source

    lease = client.create_lease("test-lease", {"ukrun.test": "yes"}, expire_s=3600)
    assert lease.id == "test-lease" and lease.labels["ukrun.test"] == "yes" and GC_EXPIRE_LABEL in lease.labels
    assert [le.id for le in client.list_leases(["id==test-lease"])] == ["test-lease"]
    mounts = client.view(SNAPSHOTTER, "test-view", active.parent, labels={"ukrun.test": "v"}, lease="test-lease")
    assert mounts and "ro" in mounts[0].options
    assert client.mounts(SNAPSHOTTER, "test-view") == mounts
    views = client.list_snapshots(SNAPSHOTTER, ["kind==view"])
    assert [(v.name, v.labels.get("ukrun.test")) for v in views] == [("test-view", "v")]
    client.lease_add_snapshot("test-lease", SNAPSHOTTER, "test-view")  # already there: no error
    client.remove_snapshot(SNAPSHOTTER, "test-view")
    assert client.list_snapshots(SNAPSHOTTER, ["kind==view"]) == []
    client.delete_lease("test-lease", sync=True)
    assert client.list_leases(["id==test-lease"]) == []


def test_images_and_content_over_one_mib(client: Client, loaded: str) -> None:
    image = client.get_image(IMAGE)
    assert image.name == IMAGE and image.target.digest.startswith("sha256:")
    manifest = json.loads(client.read_blob(image.target.digest, limit=1 << 20))
    if "manifests" in manifest:  # an index: its first manifest
        manifest = json.loads(client.read_blob(manifest["manifests"][0]["digest"], limit=1 << 20))
    big = max(manifest["layers"], key=lambda layer: layer["size"])
    assert big["size"] > 1 << 20  # over the 64 KiB default window many times: flow control must work
    data = client.read_blob(big["digest"], limit=16 << 20)
    assert len(data) == big["size"] and "sha256:" + hashlib.sha256(data).hexdigest() == big["digest"]
    chunks = list(client.stream_blob(big["digest"]))
    assert len(chunks) > 1 and b"".join(chunks) == data
    with pytest.raises(errors.ImageError, match="over the 1000-byte limit"):
        client.read_blob(big["digest"], limit=1000)
    # a stream abandoned after its first chunk is cancelled; the connection goes on
    stream = client.stream_blob(big["digest"])
    assert next(stream)
    del stream  # dropped: the generator closes, which cancels the stream
    assert client.get_image(IMAGE).target == image.target


def test_containerd_errors_map_to_ukrun_errors(daemon: ctd.Daemon, client: Client, loaded: str) -> None:
    with pytest.raises(errors.NotFound, match="container 'nope' does not exist in namespace"):
        client.get_container("nope")
    with pytest.raises(errors.NotFound, match="not found in namespace"):
        client.stat_snapshot(SNAPSHOTTER, "nope")
    with pytest.raises(errors.NotFound):
        client.get_image("nope:1")
    client.create_lease("twice")
    with pytest.raises(errors.AlreadyExists, match="lease 'twice': already exists"):
        client.create_lease("twice")
    client.delete_lease("twice")
    with pytest.raises(errors.SnapshotterNotLoaded, match="no snapshotter 'nosuch' loaded"):
        client.stat_snapshot("nosuch", "k")
    with pytest.raises(errors.NamespaceMissing):
        Client(daemon.address, "no-such-namespace").get_container("x")
    assert client.version()  # errors leave the connection usable


def test_unreachable_addresses(tmp_path: Path) -> None:
    with pytest.raises(errors.ContainerdUnavailable, match=r"no containerd socket at .*is containerd running"):
        Client(str(tmp_path / "none.sock"), "default")
    (tmp_path / "file").write_text("")
    with pytest.raises(errors.ContainerdUnavailable, match="is not a socket"):
        Client(f"unix://{tmp_path / 'file'}", "default")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(tmp_path / "stale.sock"))
    stale.close()  # a socket file nobody listens on
    with pytest.raises(errors.ContainerdUnavailable, match="cannot reach containerd at"):
        Client(str(tmp_path / "stale.sock"), "default").version()


def _server(path: Path, handle: Callable[[socket.socket], None]) -> socket.socket:
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.listen()

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                handle(conn)

    threading.Thread(target=serve, daemon=True).start()
    return listener


def _read_some(conn: socket.socket) -> None:
    conn.settimeout(5)
    with contextlib.suppress(OSError):
        conn.recv(65536)


def _answer_http1(conn: socket.socket) -> None:
    _read_some(conn)
    conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")


def _never_answer(conn: socket.socket) -> None:
    _read_some(conn)
    time.sleep(3)


@pytest.mark.parametrize(("name", "handle", "message"), [
    ("closes", _read_some, "cannot reach containerd at"),
    ("http1", _answer_http1, "cannot reach containerd"),
    ("silent", _never_answer, r"did not answer Version within 0\.5 s"),
])
def test_sockets_that_are_not_containerd(tmp_path: Path, name: str, handle: Callable[[socket.socket], None],
                                         message: str) -> None:
    listener = _server(tmp_path / f"{name}.sock", handle)
    try:
        client = Client(str(tmp_path / f"{name}.sock"), "default", timeout=0.5)
        started = time.monotonic()
        with pytest.raises(errors.ContainerdUnavailable, match=message):
            client.version()
        assert time.monotonic() - started < 2.5
    finally:
        listener.close()


def test_a_deadline_on_a_real_containerd(daemon: ctd.Daemon, ns: str) -> None:
    client = Client(daemon.address, ns, timeout=1e-6)
    with pytest.raises(errors.ContainerdUnavailable, match=r"did not answer Namespaces\.List within"):
        client.namespaces()
    client.timeout = 10
    assert client.namespaces() is not None  # the next call opens a new connection
