"""OCI image facts shared by the builder and the artifact-layer selection: media types, chain IDs, marks."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from types import MappingProxyType

from ukrun.digest import hexdigest
from ukrun.errors import ImageError
from ukrun.tuples import NamedTuple

EMPTY: Mapping[str, str] = MappingProxyType({})  # the default mapping: shared, so unchangeable

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFESTS = (MANIFEST, DOCKER_MANIFEST)
INDEXES = (INDEX, DOCKER_LIST)

# Layer-descriptor annotation written by `ukrun build`: the comma-separated absolute paths of the
# artifacts (kernel, initrd, urunc.json) that the layer holds.
ARTIFACT_MARK = "io.ukrun.layer.artifacts"
BLOB_LIMIT = 4 * 1024 * 1024


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hexdigest(data)  # small documents: hashlib's OpenSSL would cost more to load


def chain_ids(diff_ids: Sequence[str]) -> list[str]:
    """chain[0] = diff[0]; chain[n] = sha256(chain[n-1] + " " + diff[n])."""
    chains: list[str] = []
    for diff in diff_ids:
        chains.append(diff if not chains else sha256_digest(f"{chains[-1]} {diff}".encode()))
    return chains


class Layer(NamedTuple):
    digest: str
    media_type: str
    diff_id: str
    chain_id: str
    marked_paths: tuple[str, ...] = ()


class ImageLayers(NamedTuple):
    manifest_digest: str
    layers: tuple[Layer, ...]
    annotations: Mapping[str, str] = EMPTY  # the manifest's
    labels: Mapping[str, str] = EMPTY  # the image configuration's
    exposed_ports: tuple[str, ...] = ()  # the image configuration's ExposedPorts: "8080/tcp", ...

    def marked(self) -> int | None:
        """Index of the topmost layer that carries the artifact mark, if any."""
        for i in range(len(self.layers) - 1, -1, -1):
            if self.layers[i].marked_paths:
                return i
        return None


def parse_mark(value: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in value.split(",") if p.strip().startswith("/"))


def load_json(data: bytes, what: str) -> dict[str, object]:
    try:
        obj = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ImageError(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ImageError(f"{what} is not a JSON object")
    return obj


def pick_manifest(index: dict[str, object], os_name: str, arch: str) -> dict[str, object]:
    """The descriptor of the manifest for os/arch in an image index."""
    manifests = index.get("manifests")
    if not isinstance(manifests, list):
        raise ImageError("image index has no manifests")
    for desc in manifests:
        if not isinstance(desc, dict):
            continue
        plat = desc.get("platform") or {}
        if isinstance(plat, dict) and plat.get("os") == os_name and plat.get("architecture") == arch:
            return desc
    if len(manifests) == 1 and isinstance(manifests[0], dict):
        return manifests[0]
    raise ImageError(f"image index has no manifest for {os_name}/{arch}")


def image_layers(manifest_digest: str, manifest: dict[str, object], config: dict[str, object]) -> ImageLayers:
    layers = manifest.get("layers")
    rootfs = config.get("rootfs")
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(layers, list) or not isinstance(diff_ids, list) or len(layers) != len(diff_ids):
        raise ImageError(f"manifest {manifest_digest} and its config disagree on the layers")
    chains = chain_ids([str(d) for d in diff_ids])
    out = []
    for desc, diff, chain in zip(layers, diff_ids, chains, strict=True):
        if not isinstance(desc, dict):
            raise ImageError(f"manifest {manifest_digest} has a malformed layer descriptor")
        ann = desc.get("annotations") or {}
        mark = parse_mark(str(ann.get(ARTIFACT_MARK, ""))) if isinstance(ann, dict) else ()
        out.append(Layer(str(desc.get("digest")), str(desc.get("mediaType")), str(diff), chain, mark))
    ann = manifest.get("annotations")
    inner = config.get("config")
    labels = inner.get("Labels") if isinstance(inner, dict) else None
    exposed = inner.get("ExposedPorts") if isinstance(inner, dict) else None
    return ImageLayers(manifest_digest, tuple(out), {str(k): str(v) for k, v in ann.items()} if isinstance(ann, dict)
                       else {}, {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {},
                       tuple(str(k) for k in exposed) if isinstance(exposed, dict) else ())


def host_arch() -> str:
    import platform

    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)
