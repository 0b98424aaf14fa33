"""The guest's root filesystem, decided: a pure part of `runtime.plan`.

In urunc's order (its `rootfs.go`, chooseRootfs): the image's initrd when the image names one (and, in
ukrun, when `mountRootfs` is unset: with it, a Linux image's initrd is its early userspace before the
container's rootfs, as ukrun's demo uses it); then the image's own block file when
`com.urunc.unikernel.block` is mounted at `/` (for a guest that boots from one: Linux, FreeBSD); then,
with `mountRootfs`, the container's rootfs: its device when runtime.handoff proves it is the
container's own snapshot, else its folder over 9p or virtio-fs (runtime.shareplan); else nothing.

The image's block file is the container's to write, as under urunc, whose container rootfs holds its
own copy: the monitor opens it in the container's rootfs (`ArtifactPaths.own_block`), never in the
shared artifact view, which is read-only and shared by every container of the image. When the
container's rootfs is itself handed to the VM (it is unmounted first), the file is read from the view,
read-only, and a note says so.
"""

from __future__ import annotations

from ukrun.errors import PlanError
from ukrun.hypervisors import base as hv
from ukrun.runtime.handoff import Handoff, RootDecision, decide
from ukrun.runtime.shareplan import choose
from ukrun.tuples import NamedTuple
from ukrun.unikernels import base as guests
from ukrun.unikernels.base import RootMode

TYPE_CHECKING = False  # not typing's, whose import costs a create without a helper about 2 ms
if TYPE_CHECKING:
    from ukrun.runtime.plan import Facts

ROOT_MOUNT_POINT = "/"


class ImageBlock(NamedTuple):
    """The image's block file (`com.urunc.unikernel.block`), as the monitor opens it."""

    path: str
    read_only: bool
    notes: tuple[str, ...] = ()


def root(facts: Facts, guest: guests.UnikernelType,
         monitor: hv.Hypervisor) -> tuple[RootMode, RootDecision | None, tuple[str, ...]]:
    """The root mode, the handoff rule's decision (with mountRootfs) and notes."""
    cfg = facts.config
    if not cfg.mount_rootfs and cfg.initrd and guest.initrd_root:
        return RootMode.INITRD, None, ()
    if cfg.block and cfg.block_mount_point == ROOT_MOUNT_POINT and guest.image_block_root:
        return RootMode.IMAGE_BLOCK, None, ((
            f"the image's block {cfg.block} is the guest's root (blkMntPoint /): the container's rootfs is not "
            "attached (mountRootfs)",) if cfg.mount_rootfs else ())
    if not cfg.mount_rootfs:
        return RootMode.NONE, None, ()
    decision = decide(facts.rootfs, facts.snapshot)
    info = facts.rootfs
    if decision.handoff is Handoff.BLOCK and (guest.raw_block or guest.block_fs_types):
        if not guest.raw_block and info.fstype not in guest.block_fs_types:
            raise PlanError(f"a {guest.name} guest cannot boot from a {info.fstype} rootfs; it reads "
                            f"{', '.join(guest.block_fs_types)}: set the snapshotter's fs_type to "
                            f"{guest.block_fs_types[0]}")
        if facts.rootfs_elsewhere:
            raise PlanError(f"the rootfs device {info.source} is also mounted at {', '.join(facts.rootfs_elsewhere)}; "
                            "unmount it there first: a VM must be the device's only user")
        return RootMode.BLOCK, decision, ()
    notes: tuple[str, ...] = ()
    if decision.handoff is Handoff.BLOCK:
        notes = (f"a {guest.name} guest reads no block device: the rootfs's folder is shared instead",)
        decision = RootDecision(Handoff.FOLDER, decision.rule + f"; a {guest.name} guest boots from a folder")
    if not guest.shares_root:
        raise PlanError(f"a {guest.name} guest cannot boot from a folder rootfs, and this rootfs is not handed to "
                        f"a VM as a device ({decision.rule}): use a block snapshotter (devmapper, blockfile)")
    if not monitor.can_share:
        raise PlanError(f"this rootfs is a folder ({decision.rule}), and monitor {monitor.name} cannot share "
                        "folders: use a block snapshotter (devmapper, blockfile) or qemu")
    mode, how = choose(guest, monitor, facts.rootfs_share, facts.annotations, facts.virtiofsd)
    return mode, decision, notes + how


def no_rootfs_rule(root: RootMode, block: str) -> str:
    if root is RootMode.INITRD:
        return "mountRootfs is unset: the image's initrd is the guest's root filesystem"
    if root is RootMode.IMAGE_BLOCK:
        return f"com.urunc.unikernel.block {block} with blkMntPoint /: the image's block file is the guest's root"
    return "mountRootfs is unset: the guest gets no root filesystem"


def image_block(facts: Facts, root: RootMode) -> ImageBlock | None:
    """Where the monitor opens the image's block file: the container's own copy, writable, unless the
    container's rootfs (which holds it) is handed to the VM."""
    art = facts.artifacts
    if not art.block:
        return None
    if root is RootMode.BLOCK or not art.own_block:
        why = ("the container's rootfs that holds it is handed to the VM" if root is RootMode.BLOCK
               else "the container's rootfs does not hold it")
        return ImageBlock(art.block, True, (f"the image's block {facts.config.block} is attached read-only from "
                                            f"the image: {why}",))
    return ImageBlock(art.own_block, False)
