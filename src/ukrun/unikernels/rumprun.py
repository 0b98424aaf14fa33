"""A Rumprun unikernel on solo5-hvt or solo5-spt.

Rumprun reads its configuration as JSON on its command line (rumprun's `doc/config.md`): `cmdline`,
one `env` key per variable (repeated keys, which rumprun accepts), `net` for its network (device
`tap`), and `blk` for its block device
(`/dev/ld0a`, an ext2 file system, mounted at `/data` when it is the container's rootfs, at
`blkMntPoint` for the image's block). Its Solo5 block device is named `rootfs`. It reads ext2 only.
"""

from __future__ import annotations

import json

from ukrun.unikernels.base import GuestRequest, RootMode, UnikernelType, register


def _s(value: str) -> str:
    return json.dumps(value)


@register
class Rumprun(UnikernelType):
    name = "rumprun"
    label = "a Rumprun unikernel"
    monitors = ("hvt", "spt")
    block_fs_types = ("ext2",)
    rootfs_id = "rootfs"
    block_id = "rootfs"
    net_id = "tap"

    def cmdline(self, req: GuestRequest) -> str:
        args = req.process.args or tuple(req.config.cmdline.split())
        fields = [f'"cmdline":{_s(" ".join(args))}', *(f'"env":{_s(e)}' for e in req.process.env)]
        net = req.network
        if net is not None:
            fields.append('"net":{"if":"ukvmif0","cloner":"True","type":"inet","method":"static",'
                          f'"addr":{_s(net.address)},"mask":{_s(str(net.prefixlen))},"gw":{_s(net.gateway)}}}')
        if req.blocks:
            mount = "/data" if req.root is RootMode.BLOCK else (req.blocks[0].mount_point or "/data")
            fields.append('"blk":{"source":"etfs","path":"/dev/ld0a","fstype":"blk","mountpoint":'
                          f"{_s(mount)}}}")
        return "{" + ",".join(fields) + "}"
