"""Solo5 device names, decided: a pure part of `runtime.plan`, from the kernel's own manifest.

A Solo5 tender attaches a device only under a name the unikernel's manifest declares, and starts only
when every declared device is attached (unikernels.solo5_manifest). So on solo5-hvt and solo5-spt the
plan names what it attaches after the manifest, and refuses at create what the tender would refuse:
- block: the container's rootfs (mountRootfs) and the image's block (`com.urunc.unikernel.block`), in that
  order, take the declared block devices, the guest type's own name first (MirageOS `storage`, Rumprun
  `rootfs`) when declared, then the others in the manifest's order. A block the container asks for with
  no declared device left for it, and a declared block device left unattached, are refused.
- net: ukrun gives a container at most one network; it takes the guest type's own name (MirageOS
  `service`, Rumprun `tap`) when declared, else the one declared net device. A unikernel that declares
  none gets no network, whatever its namespace (a note says so); one that declares a net device needs
  the container's network, and one that declares several is refused.
urunc v0.8's annotations name the devices instead (its MirageOS guest, `docs/package/index.md`):
`com.urunc.unikernel.solo5BlkDev` lists block device names in attachment order (comma-separated; devices
beyond the list keep the rule above) and `solo5NetDev` names the net device. The manifest still decides:
a name it does not declare (for that type) is refused, and so is a name given twice.
With no manifest (every other monitor, which binds devices by order), the guest type's names stand, but
for the net device's name, which a MirageOS guest's address flags carry (`--<name>-ipv4=`).
"""

from __future__ import annotations

from ukrun.errors import PlanError
from ukrun.runtime.netplan import NetPlan
from ukrun.tuples import NamedTuple
from ukrun.unikernel import UnikernelConfig
from ukrun.unikernels.base import GuestRequest, UnikernelType

TYPE_CHECKING = False  # not typing's, whose import costs a create without a helper about 2 ms
if TYPE_CHECKING:  # imported where a manifest is there: no other guest's create pays for the parser's module
    from ukrun.unikernels.solo5_manifest import Manifest, ManifestError

UNATTACHED = "its tender refuses to start while a declared device is unattached"


class DeviceNames(NamedTuple):
    """The guest's names for what ukrun attaches: the rootfs device, the image's block, the network."""

    rootfs: str
    block: str
    net: str  # "": the unikernel declares no net device


def device_names(manifest: Manifest | ManifestError | None, guest: UnikernelType,
                 config: UnikernelConfig) -> DeviceNames:
    """Raises what facts found wrong with the kernel (no manifest: not a Solo5 unikernel; a malformed one)."""
    if manifest is None:
        return DeviceNames(guest.rootfs_id, guest.block_id, config.net_dev or guest.net_id)
    from ukrun.unikernels.solo5_manifest import DeviceType, ManifestError

    if isinstance(manifest, ManifestError):
        raise manifest
    declared = _named(_ordered(manifest.names(DeviceType.BLOCK), guest.rootfs_id), config.blk_dev,
                      "block", "com.urunc.unikernel.solo5BlkDev")
    asked = [what for what, wanted in (
        ("the container's rootfs (mountRootfs)", config.mount_rootfs),
        (f"the image's block {config.block} (com.urunc.unikernel.block)", bool(config.block))) if wanted]
    if len(asked) > len(declared):
        have = f"only {', '.join(declared)}" if declared else "none"
        raise PlanError(f"the unikernel's Solo5 manifest declares {len(declared)} block device(s) ({have}), and the "
                        f"container asks for {len(asked)}: {' and '.join(asked)}; drop "
                        f"{'one of them' if declared else 'it'} or use a unikernel built with a block device")
    if len(declared) > len(asked):
        raise PlanError(f"the unikernel's Solo5 manifest declares block device(s) {', '.join(declared[len(asked):])} "
                        f"that the container does not fill, and {UNATTACHED}: set com.urunc.unikernel.mountRootfs "
                        "(on a block snapshotter) or com.urunc.unikernel.block")
    nets = _ordered(manifest.names(DeviceType.NET), guest.net_id)
    if config.net_dev:
        nets = _named(nets, config.net_dev, "net", "com.urunc.unikernel.solo5NetDev")
    if len(nets) > 1:
        raise PlanError(f"the unikernel's Solo5 manifest declares {len(nets)} net devices ({', '.join(nets)}), but "
                        f"ukrun gives a container one network and {UNATTACHED}: use a unikernel with one")
    rootfs = declared[0] if config.mount_rootfs else ""
    return DeviceNames(rootfs, declared[-1] if config.block else "", nets[0] if nets else "")


def checked_network(manifest: Manifest | ManifestError | None, net: str, planned: NetPlan) -> NetPlan:
    """The network plan (runtime.netplan), checked against the declared net device."""
    found, _link, notes = planned
    if manifest is None:
        return planned
    if not net:
        if found is None:
            return planned
        return None, None, (*notes, "the unikernel's Solo5 manifest declares no net device: it gets no network, "
                                    "and its network namespace is left alone")
    if found is None:
        raise PlanError(f"the unikernel's Solo5 manifest declares net device {net}, but the container has no "
                        f"network ({notes[0] if notes else 'none planned'}) and {UNATTACHED}: run it in a "
                        "network namespace with a default route (a pod, or ctr run --with-ns network:PATH)")
    return planned


def address_note(guest: UnikernelType, req: GuestRequest) -> tuple[str, ...]:
    if req.network is None or guest.told_network(req):
        return ()
    if req.net_id == guest.net_id:  # FreeBSD without urunit: no ip= of its own
        return (f"a {guest.name} guest learns its address only from urunit's configuration, and its init is not "
                f"urunit: it must configure {req.network.cidr} itself",)
    return (f"the unikernel's net device is {req.net_id}, not {guest.net_id}: a {guest.name} guest's command line "
            f"gets no address then; it must know {req.network.cidr} itself",)


def _ordered(names: tuple[str, ...], preferred: str) -> list[str]:
    return sorted(names, key=lambda name: name != preferred)  # stable: the manifest's order after it


def _named(declared: list[str], annotation: str, kind: str, key: str) -> list[str]:
    """The declared names with the annotation's first, in its order; the others after them."""
    named = [n.strip() for n in annotation.split(",") if n.strip()]
    for name in named:
        if name not in declared:
            have = ", ".join(declared) or "none"
            raise PlanError(f"{key} names {kind} device {name!r}, which the unikernel's Solo5 manifest does not "
                            f"declare (it declares {have}): fix the annotation or use the unikernel it was made for")
    if len(set(named)) != len(named):
        raise PlanError(f"{key}={annotation!r} names a {kind} device twice: name each device once")
    return named + [n for n in declared if n not in named]
