"""Unikernel test images: real OCI layout tars made with ukrun's own builder."""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from ukrun.image.build import Entry, ImageBuilder, build_unikernel_image
from ukrun.unikernel import URUNC_JSON, UnikernelConfig

KERNEL_PATH = "/unikernel/kernel"
INITRD_PATH = "/unikernel/initrd"


def pattern_file(path: Path, size: int, seed: str) -> Path:
    """A file of `size` bytes whose content depends on `seed` (cheap to make, distinct per seed)."""
    block = b"".join(hashlib.sha256(f"{seed}:{i}".encode()).digest() for i in range(4096))  # 128 KiB
    with open(path, "wb") as f:
        left = size
        while left > 0:
            f.write(block[: min(left, len(block))])
            left -= len(block)
    return path


def config(**overrides: str | bool) -> UnikernelConfig:
    values: dict[str, str | bool] = {
        "unikernel_type": "linux",
        "hypervisor": "qemu",
        "binary": KERNEL_PATH,
        "initrd": INITRD_PATH,
        "cmdline": "console=ttyS0",
    }
    values.update(overrides)
    return UnikernelConfig(**values)  # type: ignore[arg-type]


def unikernel_image(workdir: Path, name: str, *, kernel_size: int = 1 << 20, seed: str = "k",
                    above: Sequence[Sequence[Entry]] = (), base: Sequence[Entry] = (),
                    mount_rootfs: bool = False) -> Path:
    """An image with a marked artifact layer (kernel, initrd, urunc.json) and optional layers above it."""
    workdir.mkdir(parents=True, exist_ok=True)
    kernel = pattern_file(workdir / f"kernel-{seed}", kernel_size, seed)
    initrd = pattern_file(workdir / f"initrd-{seed}", 64 * 1024, seed + "-initrd")
    out = workdir / f"{name.replace('/', '_').replace(':', '_')}.tar"
    build_unikernel_image(out, name, config(mount_rootfs=mount_rootfs), kernel, initrd, base=base, above=above)
    return out


def raw_image(workdir: Path, name: str, layers: Sequence[Sequence[Entry]], cfg: UnikernelConfig | None = None,
              cmd: Sequence[str] = (), annotations: Mapping[str, str] | None = None) -> Path:
    """An image of exactly the given layers (no mark); `cfg` adds a urunc.json to the last layer and its
    annotations; `annotations` are the manifest's and the configuration's labels instead."""
    workdir.mkdir(parents=True, exist_ok=True)
    out = workdir / f"{name.replace('/', '_').replace(':', '_')}.tar"
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        b = ImageBuilder(name, Path(tmp))
        for i, layer in enumerate(layers):
            extra = [Entry(URUNC_JSON, data=cfg.urunc_json())] if cfg and i == len(layers) - 1 else []
            b.add_layer([*layer, *extra])
        b.write(out, annotations if annotations is not None else cfg.annotations() if cfg else {}, cmd)
    return out


class Layout:
    """An OCI layout tar read into memory: index, manifest, config and every blob by digest."""

    def __init__(self, tar: Path) -> None:
        import json
        import tarfile

        self.blobs: dict[str, bytes] = {}
        with tarfile.open(tar) as t:
            for m in t.getmembers():
                f = t.extractfile(m) if m.isfile() else None
                if f is None:
                    continue
                if m.name.startswith("blobs/sha256/"):
                    self.blobs["sha256:" + m.name.rsplit("/", 1)[1]] = f.read()
                elif m.name == "index.json":
                    self.index = json.load(f)
        self.manifest_descriptor = self.index["manifests"][0]
        self.manifest = json.loads(self.blob(self.manifest_descriptor["digest"]))
        self.config = json.loads(self.blob(self.manifest["config"]["digest"]))

    def blob(self, digest: str) -> bytes:
        return self.blobs[digest]

    def layer_blobs(self) -> list[bytes]:
        return [self.blob(layer["digest"]) for layer in self.manifest["layers"]]

    def chain_ids(self) -> list[str]:
        from ukrun.image.oci import chain_ids

        return chain_ids(self.config["rootfs"]["diff_ids"])
