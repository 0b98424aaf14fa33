"""`ukrun build`: an OCI image layout tar for a unikernel, written offline from a small TOML spec.

Layers, bottom to top: the spec's extra rootfs files (if any), the artifact layer (kernel, initrd,
`/urunc.json`; its descriptor carries the artifact mark), then any `[[layers]]` the spec adds.

Spec:
    name = "ukrun/hello:latest"
    [unikernel]
    type = "linux"            # rumprun, unikraft, mirage, mewz, hermit, linux
    hypervisor = "qemu"       # qemu, firecracker, hvt, spt
    kernel = "bzImage"        # file next to the spec
    kernel_path = "/unikernel/kernel"
    initrd = "initrd.img"     # optional
    initrd_path = "/unikernel/initrd"
    cmdline = "console=ttyS0"
    mount_rootfs = true
    [files]                   # optional: "/path/in/image" = "file-or-folder next to the spec"
    [[layers]]                # optional, above the artifacts
    files = { "/etc/motd" = "motd" }
    symlinks = { "/boot/kernel" = "../unikernel/kernel" }
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import tempfile
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from ukrun.errors import ConfigError
from ukrun.image import oci
from ukrun.unikernel import URUNC_JSON, UnikernelConfig, parse_urunc_json

MTIME = 0
ARCH = oci.host_arch()


@dataclass(frozen=True)
class Entry:
    """One thing in a layer: a regular file (from `source` or `data`), a directory, or a symlink."""

    path: str
    source: Path | None = None
    data: bytes | None = None
    symlink: str | None = None
    directory: bool = False
    mode: int = 0o644


def file_entries(image_path: str, source: Path) -> list[Entry]:
    """Entries for a host file or folder placed at `image_path`."""
    if source.is_symlink():
        return [Entry(image_path, symlink=os.readlink(source))]
    if source.is_dir():
        out = [Entry(image_path, directory=True, mode=0o755)]
        for child in sorted(source.iterdir()):
            out += file_entries(str(PurePosixPath(image_path) / child.name), child)
        return out
    if not source.is_file():
        raise ConfigError(f"{source} is neither a file nor a folder")
    return [Entry(image_path, source=source, mode=source.stat().st_mode & 0o7777)]


class _HashingWriter(io.RawIOBase):
    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.sha = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        data = bytes(b)
        self.out.write(data)
        self.sha.update(data)
        self.size += len(data)
        return len(data)


def _normalise(path: str) -> str:
    p = PurePosixPath("/" + path.lstrip("/"))
    if ".." in p.parts:
        raise ConfigError(f"image path {path!r} must not contain '..'")
    return str(p)


def _write_layer(entries: Iterable[Entry], out: IO[bytes]) -> tuple[str, int]:
    writer = _HashingWriter(out)
    seen: set[str] = set()
    with tarfile.open(fileobj=writer, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            path = _normalise(entry.path)
            for parent in reversed(PurePosixPath(path).parents[:-1]):
                if str(parent) not in seen:
                    seen.add(str(parent))
                    tar.addfile(_info(str(parent), tarfile.DIRTYPE, 0o755))
            seen.add(path)
            if entry.directory:
                tar.addfile(_info(path, tarfile.DIRTYPE, entry.mode))
            elif entry.symlink is not None:
                info = _info(path, tarfile.SYMTYPE, 0o777)
                info.linkname = entry.symlink
                tar.addfile(info)
            elif entry.source is not None:
                info = _info(path, tarfile.REGTYPE, entry.mode)
                info.size = entry.source.stat().st_size
                with open(entry.source, "rb") as f:
                    tar.addfile(info, f)
            else:
                data = entry.data or b""
                info = _info(path, tarfile.REGTYPE, entry.mode)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return "sha256:" + writer.sha.hexdigest(), writer.size


def _info(path: str, kind: bytes, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(path.lstrip("/"))
    info.type = kind
    info.mode = mode
    info.mtime = MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


class ImageBuilder:
    """Collects layers, then writes one OCI image layout tar."""

    def __init__(self, name: str, workdir: Path) -> None:
        self.name = name
        self.workdir = workdir
        self.layers: list[tuple[str, int, dict[str, str]]] = []

    def add_layer(self, entries: Sequence[Entry], mark: Sequence[str] = ()) -> str:
        blobs = self.workdir / "blobs" / "sha256"
        blobs.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=blobs, delete=False) as tmp:
            digest, size = _write_layer(entries, tmp)
        os.replace(tmp.name, blobs / digest.split(":", 1)[1])
        annotations = {oci.ARTIFACT_MARK: ",".join(_normalise(p) for p in mark)} if mark else {}
        self.layers.append((digest, size, annotations))
        return digest

    def _blob(self, data: bytes) -> tuple[str, int]:
        digest = oci.sha256_digest(data)
        (self.workdir / "blobs" / "sha256" / digest.split(":", 1)[1]).write_bytes(data)
        return digest, len(data)

    def write(self, out: Path, annotations: Mapping[str, str], cmd: Sequence[str] = ()) -> str:
        """Writes the layout tar to `out`; returns the manifest digest."""
        diff_ids = [d for d, _, _ in self.layers]  # uncompressed layers: diff ID = digest
        config: dict[str, Any] = {
            "architecture": ARCH,
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "config": {"Labels": dict(annotations), **({"Cmd": list(cmd)} if cmd else {})},
        }
        cfg_digest, cfg_size = self._blob(json.dumps(config, sort_keys=True).encode())
        manifest = {
            "schemaVersion": 2,
            "mediaType": oci.MANIFEST,
            "config": {"mediaType": oci.CONFIG, "digest": cfg_digest, "size": cfg_size},
            "layers": [
                {"mediaType": oci.LAYER_TAR, "digest": d, "size": s, **({"annotations": a} if a else {})}
                for d, s, a in self.layers
            ],
            "annotations": dict(annotations),
        }
        man_digest, man_size = self._blob(json.dumps(manifest, sort_keys=True).encode())
        tag = self.name.rsplit(":", 1)[1] if ":" in self.name.rsplit("/", 1)[-1] else "latest"
        index = {
            "schemaVersion": 2,
            "mediaType": oci.INDEX,
            "manifests": [
                {
                    "mediaType": oci.MANIFEST,
                    "digest": man_digest,
                    "size": man_size,
                    "platform": {"architecture": ARCH, "os": "linux"},
                    "annotations": {
                        "io.containerd.image.name": self.name,
                        "org.opencontainers.image.ref.name": tag,
                    },
                }
            ],
        }
        (self.workdir / "index.json").write_text(json.dumps(index, sort_keys=True))
        (self.workdir / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
        # Docker's classic image store loads only this (as `docker save` writes it beside index.json);
        # containerd, Docker's containerd store and Podman read the OCI layout.
        blob = "blobs/sha256/{}".format
        legacy = [{"Config": blob(cfg_digest.split(":")[1]), "RepoTags": [self.name],
                   "Layers": [blob(d.split(":")[1]) for d, _, _ in self.layers]}]
        (self.workdir / "manifest.json").write_text(json.dumps(legacy))
        tmp = out.with_name(out.name + ".tmp")
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
            for name in ("oci-layout", "index.json", "manifest.json", "blobs"):
                tar.add(self.workdir / name, arcname=name, filter=_reset)
        os.replace(tmp, out)
        return man_digest


def _reset(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.mtime = MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def build_unikernel_image(
    out: Path,
    name: str,
    config: UnikernelConfig,
    kernel: Path,
    initrd: Path | None = None,
    base: Sequence[Entry] = (),
    above: Sequence[Sequence[Entry]] = (),
    cmd: Sequence[str] = (),
) -> str:
    """Writes a urunc-compatible image to `out`; returns its manifest digest."""
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".ukrun-build-") as tmp:
        builder = ImageBuilder(name, Path(tmp))
        if base:
            builder.add_layer(base)
        artifacts = [Entry(config.binary, source=kernel, mode=0o644)]
        if config.initrd:
            if initrd is None:
                raise ConfigError(f"the configuration names initrd {config.initrd} but no initrd file was given")
            artifacts.append(Entry(config.initrd, source=initrd, mode=0o644))
        artifacts.append(Entry(URUNC_JSON, data=config.urunc_json(), mode=0o644))
        builder.add_layer(artifacts, mark=[e.path for e in artifacts])
        for layer in above:
            builder.add_layer(layer)
        return builder.write(out, config.annotations(), cmd)


def _spec_entries(spec_dir: Path, table: Mapping[str, Any], where: str) -> list[Entry]:
    entries: list[Entry] = []
    for image_path, src in (table.get("files") or {}).items():
        source = (spec_dir / str(src)).resolve()
        if not source.exists():
            raise ConfigError(f"{where}: {image_path} = {src!r}: {source} does not exist")
        entries += file_entries(_normalise(image_path), source)
    for image_path, target in (table.get("symlinks") or {}).items():
        entries.append(Entry(_normalise(image_path), symlink=str(target)))
    return entries


def build_from_spec(spec_path: Path, out: Path) -> str:
    try:
        spec = tomllib.loads(spec_path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read build spec {spec_path}: {exc}") from None
    spec_dir = spec_path.resolve().parent
    uk = spec.get("unikernel")
    if not isinstance(uk, dict) or "kernel" not in uk:
        raise ConfigError(f"{spec_path}: a [unikernel] table with at least type, hypervisor and kernel is needed")
    kernel = (spec_dir / str(uk["kernel"])).resolve()
    initrd = (spec_dir / str(uk["initrd"])).resolve() if uk.get("initrd") else None
    for label, path in (("kernel", kernel), ("initrd", initrd)):
        if path is not None and not path.is_file():
            raise ConfigError(f"{spec_path}: {label} file {path} does not exist")
    config = UnikernelConfig(
        unikernel_type=str(uk.get("type", "")),
        hypervisor=str(uk.get("hypervisor", "")),
        binary=_normalise(str(uk.get("kernel_path", "/unikernel/kernel"))),
        cmdline=str(uk.get("cmdline", "")),
        initrd=_normalise(str(uk.get("initrd_path", "/unikernel/initrd"))) if initrd else "",
        version=str(uk.get("version", "")),
        mount_rootfs=bool(uk.get("mount_rootfs", False)),
    )
    parse_urunc_json(config.urunc_json())  # refuse what a runtime would refuse when reading it back
    base = _spec_entries(spec_dir, {"files": spec.get("files") or {}}, f"{spec_path} [files]")
    above = [_spec_entries(spec_dir, layer, f"{spec_path} [[layers]]") for layer in spec.get("layers", [])]
    name = str(spec.get("name") or "")
    if not name:
        raise ConfigError(f"{spec_path}: set name = \"<image name>\"")
    cmd = [str(c) for c in spec.get("cmd", [])]
    return build_unikernel_image(out, name, config, kernel, initrd, base, above, cmd)
