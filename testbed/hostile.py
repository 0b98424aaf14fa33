"""Hostile unikernel images for the tests: layers written tar entry by tar entry, so that they can hold what
ukrun's builder never makes (FIFOs, device nodes, hard links, whiteouts, raw `urunc.json` bytes, marks
that lie, no layers at all)."""

from __future__ import annotations

import base64
import io
import json
import struct
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


def multiboot_kernel() -> bytes:
    """A multiboot kernel (flat, with the header's address fields) that writes the contents of every module
    its loader gave it to the serial port, then reports a clean halt as Unikraft does (41 to port 0x501,
    where ukrun's unikraft guest type puts qemu's isa-debug-exit): proof of which files qemu loaded.

    32-bit code at 0x100020, entered with EBX pointing at the multiboot information:
        mov esi,[ebx+20]; mov edi,[ebx+24]; mov dx,0x3f8       ; mods_count, mods_addr, COM1
      mod: test esi,esi; jz done; mov ecx,[edi]; mov ebp,[edi+4] ; mod_start, mod_end
      byte: cmp ecx,ebp; jae next; mov al,[ecx]; out dx,al; inc ecx; jmp byte
      next: add edi,16; dec esi; jmp mod
      done: mov dx,0x501; mov al,41; out dx,al; hlt; jmp $-1
    """
    code = bytes.fromhex("8b7314 8b7b18 66baf803 85f6 7415 8b0f 8b6f04 39e9 7306 8a01 ee 41 ebf6 83c710 4e ebe7"
                         " 66ba0105 b029 ee f4 ebfd")
    magic, flags, base = 0x1BADB002, 0x00010000, 0x100000  # flags: the address fields below are valid
    header = struct.pack("<8I", magic, flags, -(magic + flags) & 0xFFFFFFFF, base, base, 0, 0, base + 32)
    return (header + code).ljust(1024, b"\0")


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
