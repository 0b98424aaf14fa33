"""A MirageOS unikernel, or any Solo5 unikernel, on solo5-spt, solo5-hvt or qemu.

Its command line is the container's process arguments (the image's `cmdline` when the spec has none),
after `--ipv4=<addr>/<prefix> --ipv4-gateway=<gw>` when it has a network under MirageOS's device name
`service`. Those flags are MirageOS's convention for that device: a Solo5 unikernel whose manifest names
its net device otherwise (Solo5's test_net: `service0`) gets the device but not the flags, and must know
its address itself, unless the image names that device (`com.urunc.unikernel.solo5NetDev`, urunc v0.8):
then it gets them with the device's name as MirageOS's prefix (`--<name>-ipv4=`, `--<name>-ipv4-gateway=`),
as urunc writes them. Its block device is MirageOS's `storage`, or on a Solo5 monitor the block device its
manifest declares (runtime.solo5plan): a block image from the image (`com.urunc.unikernel.block`), or,
with `mountRootfs`, the container's own snapshot device, handed over raw. urunc attaches no container
rootfs to a MirageOS guest; ukrun does, since MirageOS reads its storage raw: any file system type is
accepted and nothing is written into it.
"""

from __future__ import annotations

from ukrun.unikernels.base import GuestRequest, UnikernelType, register


@register
class Mirage(UnikernelType):
    name = "mirage"
    label = "a Solo5 unikernel (MirageOS and the like)"
    monitors = ("qemu", "hvt", "spt")
    raw_block = True
    rootfs_id = "storage"
    block_id = "storage"
    net_id = "service"

    def told_network(self, req: GuestRequest) -> bool:
        return req.network is not None and req.net_id in (self.net_id, req.config.net_dev)

    def cmdline(self, req: GuestRequest) -> str:
        net = req.network
        prefix = "" if req.net_id == self.net_id else f"{req.net_id}-"
        parts = [f"--{prefix}ipv4={net.cidr}", f"--{prefix}ipv4-gateway={net.gateway}"] \
            if net and self.told_network(req) else []
        return " ".join([*parts, *(req.process.args or tuple(req.config.cmdline.split()))])
