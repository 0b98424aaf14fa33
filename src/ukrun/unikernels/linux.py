"""A Linux guest booting from the container's rootfs: its block device as /dev/vda, or, for a folder
rootfs (overlayfs, native), the folder shared over virtio-9p.

Contract with the guest's init (the image's initrd): mount what `ukrun.root=` names (`/dev/vda`, or
`9p:<tag>`) as the root, and run the script `ukrun.process=` names (the spec's cwd, env and args,
written by ukrun): in the root, or, when `ukrun.files=9p:<tag>` is given (a folder rootfs, into which
ukrun writes nothing), on that read-only share. Report a non-zero exit code by writing it to I/O port
0xf4 (qemu's isa-debug-exit); power off for exit code 0.
"""

from __future__ import annotations

import shlex

from ukrun.unikernel import UnikernelConfig
from ukrun.unikernels.base import FILES_TAG, ROOT_TAG, GuestProcess, UnikernelType, register

PROCESS_SCRIPT = "/.ukrun/process.sh"


@register
class Linux(UnikernelType):
    name = "linux"
    block_fs_types = ("ext2", "ext3", "ext4")
    shares_root = True
    reports_exit_code = True

    def cmdline(self, config: UnikernelConfig, process: GuestProcess, root: str) -> str:
        parts = ["console=ttyS0", "panic=-1", "quiet", "loglevel=3"]
        if root == "block":
            parts += ["root=/dev/vda", "rw", "ukrun.root=/dev/vda", f"ukrun.process={PROCESS_SCRIPT}"]
        elif root == "9p":
            parts += [f"root={ROOT_TAG}", "rootfstype=9p", "rootflags=trans=virtio,version=9p2000.L", "rw",
                      f"ukrun.root=9p:{ROOT_TAG}", f"ukrun.files=9p:{FILES_TAG}", f"ukrun.process={PROCESS_SCRIPT}"]
        if config.cmdline:
            parts.append(config.cmdline)
        return " ".join(parts)

    def rootfs_files(self, process: GuestProcess) -> dict[str, bytes]:
        lines = ["# written by ukrun: the container's process, run by the guest's init", "set -e"]
        lines.append(f"cd {shlex.quote(process.cwd or '/')}")
        for item in process.env:
            key, _, value = item.partition("=")
            if key.isidentifier():
                lines.append(f"export {key}={shlex.quote(value)}")
        lines.append("set +e")
        if process.args:
            lines.append("exec " + " ".join(shlex.quote(a) for a in process.args))
        return {PROCESS_SCRIPT: ("\n".join(lines) + "\n").encode()}
