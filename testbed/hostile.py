"""Hostile unikernel images for the tests: layers written tar entry by tar entry, so that they can hold what
ukrun's builder never makes (FIFOs, device nodes, hard links, whiteouts, raw `urunc.json` bytes, marks
that lie, no layers at all)."""

from __future__ import annotations

import base64
import io
import json
import tarfile
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ukrun.image import oci
from ukrun.image.build import ImageBuilder
from ukrun.unikernel import PREFIX

KERNEL = "/unikernel/kernel"
INITRD = "/unikernel/initrd"
KERNEL_BYTES = b"in-image kernel\n" * 64
INITRD_BYTES = b"in-image initrd\n" * 16


@dataclass(frozen=True)
class Node:
    """One tar entry. kind: file, dir, symlink, hardlink, fifo, chr, blk."""

    path: str
    kind: str = "file"
    data: bytes = b""
    target: str = ""  # symlink or hard link target
    mode: int = 0o644
    major: int = 0
    minor: int = 0


def file(path: str, data: bytes, mode: int = 0o644) -> Node:
    return Node(path, "file", data=data, mode=mode)


def link(path: str, target: str) -> Node:
    return Node(path, "symlink", target=target, mode=0o777)


def urunc_values(**values: str) -> dict[str, str]:
    """`/urunc.json`'s object for plain values (keys without the prefix), each base64-encoded."""
    return {PREFIX + k: base64.b64encode(v.encode()).decode() for k, v in values.items()}


def urunc_json(binary: str = KERNEL, initrd: str = INITRD, **more: str) -> bytes:
    values = {"unikernelType": "linux", "hypervisor": "qemu", "binary": binary, "cmdline": "console=ttyS0", **more}
    if initrd:
        values["initrd"] = initrd
    return json.dumps(urunc_values(**values)).encode()


def artifacts(config: bytes | None = None) -> list[Node]:
    """A sound kernel, initrd and urunc.json (which `config` replaces)."""
    return [file(KERNEL, KERNEL_BYTES), file(INITRD, INITRD_BYTES),
            file("/urunc.json", urunc_json() if config is None else config)]


_KINDS = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE,
          "fifo": tarfile.FIFOTYPE, "chr": tarfile.CHRTYPE, "blk": tarfile.BLKTYPE}


def layer_tar(nodes: Sequence[Node]) -> bytes:
    """An uncompressed layer: parent folders first, then the nodes in order (PAX: long names allowed)."""
    out = io.BytesIO()
    seen: set[str] = set()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for node in nodes:
            path = "/" + node.path.lstrip("/")
            for parent in reversed(PurePosixPath(path).parents[:-1]):
                if str(parent) not in seen:
                    seen.add(str(parent))
                    tar.addfile(_info(str(parent), tarfile.DIRTYPE, 0o755))
            seen.add(path)
            info = _info(path, _KINDS[node.kind], node.mode)
            if node.kind in ("symlink", "hardlink"):
                info.linkname = node.target.lstrip("/") if node.kind == "hardlink" else node.target
            if node.kind in ("chr", "blk"):
                info.devmajor, info.devminor = node.major, node.minor
            if node.kind == "file":
                info.size = len(node.data)
                tar.addfile(info, io.BytesIO(node.data))
            else:
                tar.addfile(info)
    return out.getvalue()


def _info(path: str, kind: bytes, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(path.lstrip("/"))
    info.type = kind
    info.mode = mode
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def image(workdir: Path, name: str, layers: Sequence[Sequence[Node]], *, marks: Mapping[int, Sequence[str]] = {},
          annotations: Mapping[str, str] = {}, cmd: Sequence[str] = ()) -> Path:
    """An OCI layout tar of exactly these layers; `marks` gives layer index -> artifact mark paths."""
    workdir.mkdir(parents=True, exist_ok=True)
    out = workdir / f"{name.replace('/', '_').replace(':', '_')}.tar"
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        b = ImageBuilder(name, Path(tmp))
        blobs = Path(tmp) / "blobs" / "sha256"
        blobs.mkdir(parents=True)
        for i, nodes in enumerate(layers):
            data = layer_tar(nodes)
            digest = oci.sha256_digest(data)
            (blobs / digest.split(":", 1)[1]).write_bytes(data)
            mark = {oci.ARTIFACT_MARK: ",".join(marks[i])} if i in marks else {}
            b.layers.append((digest, len(data), mark))
        b.write(out, annotations, cmd)
    return out
