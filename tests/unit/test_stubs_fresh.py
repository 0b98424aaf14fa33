"""The committed ukrun.containerd.api must be what scripts/gen-proto makes from the committed .proto files,
and ukrun.containerd.wire must encode and decode its messages as protobuf itself does."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from ukrun.containerd import api, wire

REPO = Path(__file__).resolve().parents[2]
GENERATED = REPO / "src" / "ukrun" / "containerd" / "api.py"


def test_api_is_fresh(tmp_path: Path) -> None:
    out = tmp_path / "api.py"
    subprocess.run([sys.executable, str(REPO / "scripts" / "gen-proto"), "--out", str(out)], check=True,
                   capture_output=True)
    assert out.read_text() == GENERATED.read_text(), "stale api.py: run scripts/gen-proto and commit the result"


def test_methods_carry_containerd_names() -> None:
    # The wire path of every call is /<proto package>.<Service>/<Method>; a wrong package breaks all calls.
    assert api.SNAPSHOTS_STAT.path == "/containerd.services.snapshots.v1.Snapshots/Stat"
    assert api.LEASES_CREATE.path == "/containerd.services.leases.v1.Leases/Create"
    assert api.CONTENT_READ.server_streaming and not api.CONTENT_INFO.server_streaming


def _gen_proto() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("gen_proto", str(REPO / "scripts" / "gen-proto"))
    spec = importlib.util.spec_from_loader("gen_proto", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def reference() -> dict[str, Any]:
    """protobuf's own message classes for every message, built from the same descriptors."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    fds = descriptor_pb2.FileDescriptorSet.FromString(_gen_proto().descriptor_set())
    pool = descriptor_pool.DescriptorPool()
    for f in fds.file:
        pool.Add(f)
    classes = [v for v in vars(api).values() if isinstance(v, type) and issubclass(v, wire.Message) and v.FULL_NAME]
    return {c.FULL_NAME: message_factory.GetMessageClass(pool.FindMessageTypeByName(c.FULL_NAME)) for c in classes}


SAMPLES: list[wire.Message] = [
    api.ContainersUpdateContainerRequest(
        container=api.ContainersContainer(
            id="c1", labels={"a": "1", "ü": "ß", "empty": ""}, image="docker.io/x:1",
            runtime=api.ContainersContainerRuntime(name="io.containerd.runc.v2", options=api.ProtobufAny()),
            spec=api.ProtobufAny(type_url="types.containerd.io/opencontainers/runtime-spec/1/Spec", value=b"{}\0\xff"),
            created_at=api.ProtobufTimestamp(seconds=1_700_000_000, nanos=5),
            extensions={"x": api.ProtobufAny(type_url="t", value=b"v"), "y": api.ProtobufAny()}, sandbox="",
        ),
        update_mask=api.ProtobufFieldMask(paths=["labels.a", "labels.b"]),
    ),
    api.ContentInfo(digest="sha256:00", size=-5, labels={}),
    api.ContentInfo(digest="sha256:01", size=(1 << 62) + 3),
    api.ContentReadContentResponse(offset=1 << 40, data=bytes(range(256)) * 300),
    api.SnapshotsListSnapshotsResponse(info=[api.SnapshotsInfo(name="v", parent="p", kind=3, labels={"k": "v"}),
                                             api.SnapshotsInfo()]),
    api.IntrospectionPlugin(type="t", id="i", requires=["a", "b"], platforms=[api.TypesPlatform(os="linux")],
                            exports={"root": "/x"}, capabilities=["c"],
                            init_err=api.TypesRpcStatus(code=-2, message="no")),
    api.LeasesDeleteRequest(id="l", sync=True),
    api.ImagesGetImageResponse(image=api.ImagesImage(name="n", target=api.TypesDescriptor(
        media_type="m", digest="d", size=7, annotations={"a": "b"}))),
    api.SnapshotsViewSnapshotResponse(mounts=[api.TypesMount(type="ext4", source="/dev/loop1",
                                                             options=["ro", "loop"])]),
    api.ProtobufEmpty(),
]


def _has_map(cls: type[wire.Message]) -> bool:
    return any(f.label is wire.Label.MAP or (f.message is not None and _has_map(f.message)) for f in cls.FIELDS)


def _to_reference(msg: wire.Message, reference: dict[str, Any]) -> Any:
    return reference[msg.FULL_NAME].FromString(wire.encode(msg))


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_wire_matches_protobuf(msg: wire.Message, reference: dict[str, Any]) -> None:
    ref = _to_reference(msg, reference)
    # protobuf reads our bytes, and its own serialization reads back into an equal message of ours
    assert wire.decode(type(msg), ref.SerializeToString(deterministic=True)) == msg
    assert wire.decode(type(msg), wire.encode(msg)) == msg
    # byte-identical where the order is defined (no maps): protobuf writes fields in number order, as we do
    if not _has_map(type(msg)):
        assert wire.encode(msg) == ref.SerializeToString(deterministic=True)


def test_unknown_fields_and_packed_numbers_are_read(reference: dict[str, Any]) -> None:
    # field 99 (unknown, every wire type) before the known ones
    unknown = bytes([0x98, 0x06, 0x01]) + bytes([0x99, 0x06]) + b"\0" * 8 + bytes([0x9A, 0x06, 0x01, 0x41])
    unknown += bytes([0x9D, 0x06]) + b"\0" * 4
    data = unknown + wire.encode(api.VersionVersionResponse(version="v", revision="r"))
    assert wire.decode(api.VersionVersionResponse, data) == api.VersionVersionResponse(version="v", revision="r")


@pytest.mark.parametrize("data", [b"\x0a\x05ab", b"\x0a", b"\x08" + b"\xff" * 11, b"\x0b", b"\x0a\x02\xff\xfe"])
def test_malformed_input_is_a_wire_error(data: bytes) -> None:
    with pytest.raises(wire.WireError):
        wire.decode(api.VersionVersionResponse, data)
