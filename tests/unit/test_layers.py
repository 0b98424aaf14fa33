import io
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed import images
from ukrun.artifacts.layers import choose, layer_touches, read_image_layers, touches
from ukrun.containerd.records import Descriptor
from ukrun.image import oci
from ukrun.image.build import Entry

K = ("/unikernel/kernel", "/unikernel/initrd", "/urunc.json")


@pytest.mark.parametrize(
    ("name", "is_dir", "expected"),
    [
        ("unikernel/kernel", False, True),
        ("./unikernel/kernel", False, True),
        ("unikernel/", True, False),  # a folder entry merges with the folder below
        ("unikernel", False, True),  # a file replacing the folder
        ("unikernel/.wh.kernel", False, True),
        (".wh.unikernel", False, True),
        ("unikernel/.wh..wh..opq", False, True),
        (".wh..wh..opq", False, True),
        ("unikernel/other", False, False),
        ("unikernel/kernel2", False, False),
        ("etc/.wh..wh..opq", False, False),
        ("urunc.json", False, True),
        ("app/urunc.json", False, False),
    ],
)
def test_touches(name: str, is_dir: bool, expected: bool) -> None:
    assert touches(name, is_dir, K) is expected


class Blobs:
    """Serves the blobs of an OCI layout tar made by ukrun build (pure logic, no containerd)."""

    def __init__(self, tar: Path) -> None:
        self.layout = images.Layout(tar)
        self.blobs = self.layout.blobs

    def read_blob(self, digest: str, *, limit: int) -> bytes:
        return self.blobs[digest]

    def stream_blob(self, digest: str) -> Iterator[bytes]:
        data = self.blobs[digest]
        for i in range(0, len(data), 1000):
            yield data[i : i + 1000]

    def target(self) -> Descriptor:
        d = self.layout.manifest_descriptor
        return Descriptor(d["mediaType"], d["digest"], d["size"])


def test_marked_layer_chosen_when_untouched(tmp_path: Path) -> None:
    tar = images.unikernel_image(tmp_path, "t/a:1", above=[[Entry("/app/data", data=b"x")]])
    src = Blobs(tar)
    il = read_image_layers(src, src.target())
    assert il.marked() == 0 and il.layers[0].marked_paths == K
    c = choose(src, il, il.layers[-1].chain_id)
    assert c.chain_id == il.layers[0].chain_id and c.marked_paths == K


def test_top_chosen_when_a_later_layer_replaces_the_kernel(tmp_path: Path) -> None:
    tar = images.unikernel_image(tmp_path, "t/b:1", above=[[Entry(images.KERNEL_PATH, data=b"other")]])
    src = Blobs(tar)
    il = read_image_layers(src, src.target())
    c = choose(src, il, il.layers[-1].chain_id)
    assert c.chain_id == il.layers[-1].chain_id and c.marked_paths == ()
    assert "touches" in c.reason


def test_top_chosen_when_the_container_parent_is_not_this_image(tmp_path: Path) -> None:
    src = Blobs(images.unikernel_image(tmp_path, "t/c:1"))
    il = read_image_layers(src, src.target())
    assert choose(src, il, "sha256:" + "0" * 64).chain_id == "sha256:" + "0" * 64


def test_unreadable_layer_counts_as_touching(tmp_path: Path) -> None:
    src = Blobs(images.unikernel_image(tmp_path, "t/d:1"))
    layer = oci.Layer("sha256:x", "application/vnd.oci.image.layer.v1.tar+zstd", "", "")
    assert layer_touches(src, layer, K)


def test_gzip_layers_are_scanned(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        info = tarfile.TarInfo("etc/motd")
        t.addfile(info, io.BytesIO(b""))
    src = Blobs(images.unikernel_image(tmp_path, "t/e:1"))
    src.blobs["sha256:gz"] = buf.getvalue()
    layer = oci.Layer("sha256:gz", "application/vnd.oci.image.layer.v1.tar+gzip", "", "")
    assert not layer_touches(src, layer, K)
    assert layer_touches(src, layer, ("/etc/motd",))


def test_chain_ids_follow_the_rule() -> None:
    a, b = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    chains = oci.chain_ids([a, b])
    assert chains[0] == a
    # vector computed with: printf '%s %s' A B | sha256sum
    assert chains[1] == "sha256:ccd722928bd92476ba1745586fed6e45a102504185ad88cd89e01ff116fd146c"
