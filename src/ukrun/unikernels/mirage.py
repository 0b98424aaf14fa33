"""A MirageOS unikernel (or any Solo5 unikernel built the MirageOS way) on solo5-spt, solo5-hvt or qemu.

Its command line is the container's process arguments (the image's `cmdline` when the spec has none),
after `--ipv4=<addr>/<prefix> --ipv4-gateway=<gw>` when it has a network (device `service`).
Its block device is named `storage` (as MirageOS's Solo5 target declares it): a block image from the
image (`com.urunc.unikernel.block`), or, with `mountRootfs`, the container's own snapshot device,
handed over raw. urunc attaches no container rootfs to a MirageOS guest; ukrun does, since MirageOS
reads its storage raw: any file system type is accepted and nothing is written into it.
"""

from __future__ import annotations

from ukrun.unikernels.base import GuestRequest, UnikernelType, register


@register
class Mirage(UnikernelType):
    name = "mirage"
    monitors = ("qemu", "hvt", "spt")
    raw_block = True
    rootfs_id = "storage"
    block_id = "storage"
    net_id = "service"

    def cmdline(self, req: GuestRequest) -> str:
        net = req.network
        parts = [f"--ipv4={net.cidr}", f"--ipv4-gateway={net.gateway}"] if net is not None else []
        return " ".join([*parts, *(req.process.args or tuple(req.config.cmdline.split()))])
