"""Where `create` reads a container's kernel, initrd, block image and `urunc.json` from, decided by one
pure function from three facts: whether containerd manages the container, whether its rootfs is a
containerd snapshot, and whether that rootfs may go to the VM (`mountRootfs`). `ukrun plan` shows the
decision and its reason.

  view      containerd made the rootfs from a snapshot that may go to the VM as a device, unmounted first:
            a read-only view of the image's committed layers (`shared` or `per-container`, see
            artifacts.store) holds the artifacts meanwhile.
  copy      asked for (`io.ukrun.artifacts.mode=copy`, `[artifacts] mode`) under containerd: urunc's way.
  in-place  the rootfs stays mounted for the container's whole life, so the files are read where they are:
            a folder its caller made (Podman, CRI-O and other callers of the OCI runtime without containerd
            (no containerd named: no shim's GRPC_ADDRESS, no --address, no address in the config), and under
            containerd a container with no snapshot: Docker, `ctr run --rootfs`), or a snapshot that no VM
            gets because the image does not set `mountRootfs` (urunc reads those in place too). The files
            are resolved inside that folder as the guest sees it (artifacts.paths) and the monitor reads
            them there. A view would cost such a container a label and two lookups in containerd at
            create and a label at delete, for nothing.

What must stay true: without containerd, ukrun asks no containerd and writes nothing in the state root
(Podman runs `delete` with neither ukrun's flags nor its environment, so the verbs must not depend on
them); an in-place rootfs is never handed to a VM as a device (runtime.handoff needs containerd's
snapshot), so the folder the monitor reads from stays mounted until the container is deleted.
"""

from __future__ import annotations

import enum
import os
from pathlib import Path

from ukrun import errors
from ukrun.artifacts import paths
from ukrun.containerd.records import ContainerRecord
from ukrun.tuples import NamedTuple
from ukrun.unikernel import URUNC_JSON, URUNC_JSON_LIMIT, UnikernelConfig, parse_urunc_json

TYPE_CHECKING = False  # not typing's, whose import costs a create without a helper about 2 ms
if TYPE_CHECKING:
    from typing import Any

MODES = ("shared", "per-container", "copy")


class Source(enum.Enum):
    VIEW = "view"
    COPY = "copy"
    IN_PLACE = "in-place"


class Decision(NamedTuple):
    source: Source
    reason: str


def decide(mode: str, containerd: bool, record: ContainerRecord | None, rootfs_kept: bool = False) -> Decision:
    """`mode`: the requested artifact mode; `containerd`: a containerd is named for this container;
    `record`: its record of the container (None: it does not know it); `rootfs_kept`: its rootfs never goes
    to the VM (the image does not set mountRootfs), so it stays mounted until delete."""
    if not containerd:
        unused = f" ({mode} mode needs containerd)" if mode == "copy" else ""
        return Decision(Source.IN_PLACE, "no containerd manages this container (Podman, CRI-O, ...): read in place "
                        f"from its rootfs folder{unused}")
    if kept_in_place(mode, rootfs_kept):
        return Decision(Source.IN_PLACE, "the rootfs never goes to the VM (the image does not set mountRootfs) and "
                        "stays mounted until delete: read in place from it, with no view")
    if record is None:
        return Decision(Source.IN_PLACE, "containerd does not know this container: read in place from its rootfs "
                        "folder")
    if mode == "copy":
        return Decision(Source.COPY, f"{mode} mode: copied out of the container's rootfs")
    if not (record.snapshotter and record.snapshot_key):
        return Decision(Source.IN_PLACE, "containerd's record of the container names no snapshot (a rootfs folder "
                        "of its caller's: Docker, ctr run --rootfs): read in place from it")
    return Decision(Source.VIEW, f"{mode} view of the image's committed layers in {record.snapshotter}")


def kept_in_place(mode: str, rootfs_kept: bool) -> bool:
    """Whether a containerd-managed container's artifacts are read in its rootfs whatever containerd's record
    says (so `create` need not ask for it): its rootfs stays mounted and no copy is asked for."""
    return rootfs_kept and mode != "copy"


class Artifacts(NamedTuple):
    container: str
    namespace: str
    mode: str  # shared, per-container, copy or in-place
    config: UnikernelConfig
    kernel: Path
    initrd: Path | None
    urunc_json: Path | None
    block: Path | None = None  # com.urunc.unikernel.block
    snapshotter: str = ""
    view_key: str = ""
    view_id: str = ""
    chain_id: str = ""
    chain_reason: str = ""
    mount_point: Path | None = None
    bytes_copied: int = 0
    reason: str = ""  # why this source (Decision.reason)

    def to_json(self) -> dict[str, Any]:
        out = self._asdict()
        out["config"] = self.config._asdict()
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in out.items()}


def what(config: UnikernelConfig, image_path: str) -> str:
    if image_path == config.binary:
        return "kernel"
    if image_path == config.initrd:
        return "initrd"
    if image_path == config.block:
        return "block image"
    return "file"


def in_place(container_id: str, namespace: str, config: UnikernelConfig, rootfs: Path, reason: str) -> Artifacts:
    """The artifacts where they are in the rootfs folder: nothing is copied, mounted or recorded."""
    found = {p: paths.resolve_file(rootfs, p, what(config, p)).path for p in config.artifact_paths()}
    if config.source == URUNC_JSON:
        found[URUNC_JSON] = paths.resolve_file(rootfs, URUNC_JSON, "urunc.json").path
    return Artifacts(
        container=container_id, namespace=namespace, mode=Source.IN_PLACE.value, config=config,
        kernel=found[config.binary], initrd=found[config.initrd] if config.initrd else None,
        urunc_json=found.get(URUNC_JSON), block=found[config.block] if config.block else None,
        mount_point=rootfs, reason=reason,
    )


def read_config(root: Path) -> UnikernelConfig:
    """The image's `/urunc.json`, for a spec that carries no unikernel annotations."""
    root_fd = paths.open_root(root)
    try:
        fd = paths.open_file(root_fd, URUNC_JSON, "urunc.json")
    except errors.UnsafePath:
        raise
    except errors.ImageError as exc:
        raise errors.ImageError(
            f"no unikernel configuration: the spec has no com.urunc.unikernel.* annotations and {exc}"
        ) from None
    finally:
        os.close(root_fd)
    return parse_urunc_json(paths.read_limited(fd, URUNC_JSON_LIMIT, "urunc.json"))
