"""Which committed snapshot holds a container's artifacts.

A marked layer (`io.ukrun.layer.artifacts` on its descriptor) is used only when no later layer
touches the marked paths: no entry at such a path, no whiteout of it or of a folder above it, no
opaque folder above it, no non-folder replacing a folder above it. Then the files in the marked
layer's chain are byte for byte the ones the container's rootfs shows. Otherwise the top chain.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from posixpath import normpath
from typing import IO, Protocol

from ukrun.containerd.records import Descriptor
from ukrun.errors import ImageError
from ukrun.image import oci
from ukrun.tuples import NamedTuple

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"


class BlobSource(Protocol):
    def read_blob(self, digest: str, *, limit: int) -> bytes: ...
    def stream_blob(self, digest: str) -> Iterator[bytes]: ...


class Choice(NamedTuple):
    chain_id: str
    marked_paths: tuple[str, ...]  # empty when the top chain was chosen
    reason: str


def _ancestors(path: str) -> list[str]:
    out, cur = [], path
    while cur != "/":
        cur = cur.rsplit("/", 1)[0] or "/"
        out.append(cur)
    return out


def touches(name: str, is_dir: bool, protected: Iterable[str]) -> bool:
    """Whether a layer entry `name` changes what any protected absolute path resolves to."""
    while name.startswith("./"):
        name = name[2:]
    path = normpath("/" + name.strip("/")) if name.strip("/") not in ("", ".") else "/"
    parent, _, base = path.rpartition("/")
    parent = parent or "/"
    for p in protected:
        above = _ancestors(p)
        if base == OPAQUE:
            if parent in above:
                return True
        elif base.startswith(WHITEOUT):
            target = (parent.rstrip("/") + "/" + base[len(WHITEOUT):]) if parent != "/" else "/" + base[len(WHITEOUT):]
            if target == p or target in above:
                return True
        elif path == p or (path in above and not is_dir):
            return True
    return False


class _Chunks(io.RawIOBase):
    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._it = chunks
        self._buf = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: memoryview) -> int:  # type: ignore[override]
        while not self._buf:
            try:
                self._buf = next(self._it)
            except StopIteration:
                return 0
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


def _open_layer(media_type: str, raw: IO[bytes]) -> IO[bytes] | None:
    if media_type.endswith(".tar") or media_type.endswith("tar"):
        return raw
    if media_type.endswith("gzip"):
        import gzip

        return gzip.GzipFile(fileobj=raw)  # type: ignore[return-value]
    return None


def layer_touches(source: BlobSource, layer: oci.Layer, protected: tuple[str, ...]) -> bool:
    """Scans one layer's tar headers (not its file data). A format it cannot read counts as touching."""
    import tarfile  # only a first container of an image gets here

    raw = io.BufferedReader(_Chunks(source.stream_blob(layer.digest)), buffer_size=1 << 20)
    stream = _open_layer(layer.media_type, raw)
    if stream is None:
        return True
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                if touches(member.name, member.isdir(), protected):
                    return True
    except (tarfile.TarError, OSError, EOFError):
        return True
    return False


def read_image_layers(source: BlobSource, target: Descriptor, os_name: str = "linux",
                      arch: str = "") -> oci.ImageLayers:
    digest, media = target.digest, target.media_type
    doc = oci.load_json(source.read_blob(digest, limit=oci.BLOB_LIMIT), f"blob {digest}")
    if media in oci.INDEXES or "manifests" in doc:
        desc = oci.pick_manifest(doc, os_name, arch or oci.host_arch())
        digest = str(desc.get("digest"))
        doc = oci.load_json(source.read_blob(digest, limit=oci.BLOB_LIMIT), f"manifest {digest}")
    cfg = doc.get("config")
    if not isinstance(cfg, dict) or "digest" not in cfg:
        raise ImageError(f"manifest {digest} has no config")
    config = oci.load_json(source.read_blob(str(cfg["digest"]), limit=oci.BLOB_LIMIT), f"config {cfg['digest']}")
    return oci.image_layers(digest, doc, config)


def choose(source: BlobSource, layers: oci.ImageLayers | None, top_chain: str) -> Choice:
    """The chain whose view serves the artifacts: the marked layer's when it is safe, else the top."""
    if layers is None or not layers.layers:
        return Choice(top_chain, (), "image unknown: top chain")
    if layers.layers[-1].chain_id != top_chain:
        return Choice(top_chain, (), "image layers do not match the container's parent: top chain")
    idx = layers.marked()
    if idx is None:
        return Choice(top_chain, (), "no artifact mark: top chain")
    marked = layers.layers[idx]
    for later in layers.layers[idx + 1:]:
        if layer_touches(source, later, marked.marked_paths):
            return Choice(top_chain, (), f"layer {later.digest[:19]} touches the marked artifacts: top chain")
    return Choice(marked.chain_id, marked.marked_paths, f"marked layer {idx + 1} of {len(layers.layers)}")
