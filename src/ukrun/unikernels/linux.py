"""A Linux guest, as urunc runs it and with ukrun's own init contract beside it.

The command line follows urunc's (its `unikernels/linux.go`; the kernel's `admin-guide/kernel-parameters`
for the meaning): `panic=-1 console=ttyS0`, the root (`root=/dev/vda rw` for the container's block
device or for the image's own block file (`com.urunc.unikernel.block` at blkMntPoint `/`), `root=/dev/ram0
rw` for an initrd root, `root=fs0 rw rootfstype=9p rootflags=...` for a folder over 9p, `root=fs0 rw
rootfstype=virtiofs` for a folder over virtio-fs, the kernel's own convention for booting from a
virtio-fs tag (`init/do_mounts.c`)), the network (`ip=<addr>::<gw>:<mask>:urunc:eth0:off`, and
`URUNIT_DEFROUTE=1` when the gateway is outside the guest's subnet), then the process: `init=<argv0> --
<args>` (`rdinit=` for an initrd root), an argument holding spaces in single quotes (urunc's init, urunit,
joins them again). The environment goes as bare `K=V` parameters, which the kernel hands to init as its
environment. When argv0 is urunit, urunc's contract replaces ukrun's (unikernels.urunit): the
environment, uid, gid, working folder and block mounts go in urunit's configuration, and ukrun writes
nothing into the guest's rootfs.

ukrun's own contract rides along, before the `--`: an init that knows it mounts what `ukrun.root=`
names (`/dev/vda`, `9p:<tag>` or `virtiofs:<tag>`), mounts the block devices `ukrun.blocks=<serial>:<folder>,...`
names (found by their virtio serial) at those folders of the root, and runs the script `ukrun.process=`
names (the spec's cwd, env and args, written by ukrun): in the root, or, with `ukrun.files=9p:<tag>` (a
folder rootfs, into which ukrun writes nothing, whichever way it goes), on that read-only 9p share. It
reports a non-zero exit code by writing it to I/O port 0xf4 (qemu's isa-debug-exit); power-off is 0. With
`ukrun.exec=<n>` it mounts devpts at /dev/pts and starts the image's `/.ukrun/exec-agent <n>` (ukrun's
exec agent, which `ukrun build` puts in images) in the root before the script: `exec` then reaches the
guest (runtime.execplan). An init that does not know it ignores those parameters (the kernel keeps dotted
parameters from init's environment). The image's own block file gets none of it: ukrun writes nothing
into it.
"""

from __future__ import annotations

import shlex

from ukrun.errors import UkrunError
from ukrun.hypervisors.base import ExitDecoding, ExitDevice
from ukrun.unikernels import urunit
from ukrun.unikernels.base import FILES_TAG, ROOT_TAG, GuestRequest, RootMode, UnikernelType, register

PROCESS_SCRIPT = "/.ukrun/process.sh"
HOSTNAME = "urunc"  # the `ip=` parameter's host name field, as urunc writes it
SHARED_ROOT = (f"root={ROOT_TAG} rw rootfstype=9p "
               "rootflags=trans=virtio,version=9p2000.L,msize=5000000,cache=mmap,posixacl")
VIRTIOFS_ROOT = f"root={ROOT_TAG} rw rootfstype=virtiofs"
INIT_KEYS = "init= (rdinit=)"
CONTRACT_ROOTS = (RootMode.BLOCK, RootMode.SHARED, RootMode.VIRTIOFS)  # ukrun's init contract: a script to run


def _plain(word: str) -> bool:
    """Whether `word` stays one kernel parameter: no white space (the separator), no double quote (the
    kernel's quoting) and no control character."""
    return not any(c.isspace() or c == '"' or ord(c) < 0x20 or ord(c) == 0x7F for c in word)


def process_args(req: GuestRequest) -> tuple[str, ...]:
    """The spec's args; the image's `cmdline` when there are none (as urunc does)."""
    return req.process.args or tuple(req.config.cmdline.split())


def is_urunit(req: GuestRequest) -> bool:
    return urunit.named(process_args(req))


@register
class Linux(UnikernelType):
    name = "linux"
    label = "a Linux guest"
    monitors = ("qemu", "firecracker", "cloud-hypervisor")
    block_fs_types = ("ext2", "ext3", "ext4")
    shares_root = True
    virtiofs_root = True
    initrd_root = True
    appended_initrd = True
    volumes = True
    image_block_root = True
    exit_device = ExitDevice(0xF4, 4)
    exit_decoding = ExitDecoding.DEBUG_EXIT

    def check(self, req: GuestRequest) -> None:
        args = process_args(req)
        if args and not _plain(args[0]):
            raise UkrunError(f"the process's first argument {args[0]!r} holds white space, a quote or a control "
                             f"character, which the kernel command line cannot carry in {INIT_KEYS}: rename it")
        if not is_urunit(req):
            for item in req.process.env:
                if not _plain(item):
                    raise UkrunError(f"environment variable {item.split('=', 1)[0]!r} holds white space, a quote "
                                     "or a control character, which a kernel command line cannot carry; use "
                                     "urunit as the image's init")

    def exec_refusal(self, req: GuestRequest) -> str:
        if is_urunit(req):
            return ("this Linux guest's init is urunit, which serves no exec: boot it with ukrun's init contract "
                    "(an image built by `ukrun build`) to exec into it")
        if req.root not in CONTRACT_ROOTS:
            return ("this Linux guest boots from its initrd and runs its process as init, outside ukrun's init "
                    "contract, so no exec agent runs in it: boot it from the container's rootfs (mountRootfs)")
        return ""

    def cmdline(self, req: GuestRequest) -> str:
        parts = ["panic=-1", "console=ttyS0"]
        if req.root in (RootMode.BLOCK, RootMode.IMAGE_BLOCK):
            parts += ["root=/dev/vda", "rw"]
        elif req.root is RootMode.INITRD:
            parts += ["root=/dev/ram0", "rw"]
        elif req.root is RootMode.SHARED:
            parts.append(SHARED_ROOT)
        elif req.root is RootMode.VIRTIOFS:
            parts.append(VIRTIOFS_ROOT)
        net = req.network
        if net is not None:
            parts.append(f"ip={net.address}::{net.gateway}:{net.mask}:{HOSTNAME}:eth0:off")
        if urunit.default_route(net):
            parts.append("URUNIT_DEFROUTE=1")
        if is_urunit(req):
            parts += ([f"URUNIT_CONFIG={urunit.INITRD_CONF}"] if req.root is RootMode.INITRD
                      else ["retain_initrd", f"URUNIT_CONFIG={urunit.RETAINED}"])
        else:
            parts += [e for e in req.process.env if "=" in e]
        parts += ["quiet", "loglevel=3"]
        if not is_urunit(req):
            parts += self._contract(req)
        args = process_args(req)
        if args:
            init = "rdinit" if req.root is RootMode.INITRD else "init"
            quoted = [f"'{a}'" if any(c.isspace() for c in a) else a for a in (s.strip() for s in args[1:])]
            parts.append(f"{init}={args[0]} -- {' '.join(quoted)}".rstrip())
        return " ".join(parts)

    def _contract(self, req: GuestRequest) -> list[str]:
        """ukrun's own init contract: where the root and the block devices are, and the process's script."""
        parts = []
        if req.root is RootMode.BLOCK:
            parts += ["ukrun.root=/dev/vda", f"ukrun.process={PROCESS_SCRIPT}"]
        elif req.root in (RootMode.SHARED, RootMode.VIRTIOFS):
            transport = "9p" if req.root is RootMode.SHARED else "virtiofs"
            parts += [f"ukrun.root={transport}:{ROOT_TAG}", f"ukrun.files=9p:{FILES_TAG}",
                      f"ukrun.process={PROCESS_SCRIPT}"]
        mounts = [f"{b.id}:{b.mount_point}" for b in req.blocks if b.mount_point and b.id != self.rootfs_id
                  and _plain(b.mount_point) and not {",", ":"} & set(b.mount_point)]
        if mounts and req.root in CONTRACT_ROOTS:
            parts.append(f"ukrun.blocks={','.join(mounts)}")
        if req.exec_ports and req.root in CONTRACT_ROOTS:
            parts.append(f"ukrun.exec={req.exec_ports}")
        return parts

    def init_mounts_blocks(self, args: tuple[str, ...]) -> bool:
        return urunit.named(args)

    def rootfs_files(self, req: GuestRequest) -> dict[str, bytes]:
        if req.root not in CONTRACT_ROOTS or is_urunit(req):
            return {}
        process = req.process
        lines = ["# written by ukrun: the container's process, run by the guest's init", "set -e"]
        lines.append(f"cd {shlex.quote(process.cwd or '/')}")
        for item in process.env:
            key, _, value = item.partition("=")
            if key.isidentifier():
                lines.append(f"export {key}={shlex.quote(value)}")
        lines.append("set +e")
        args = process_args(req)
        if args:
            lines.append("exec " + " ".join(shlex.quote(a) for a in args))
        return {PROCESS_SCRIPT: ("\n".join(lines) + "\n").encode()}

    def extra_initrd(self, req: GuestRequest) -> bytes | None:
        """urunit's configuration, for any root but an initrd one (see unikernels.urunit)."""
        if not is_urunit(req) or req.root is RootMode.INITRD:
            return None
        return urunit.config(req.process, req.blocks, req.monitor, self.rootfs_id)

    def initrd_archive(self, req: GuestRequest) -> bytes:
        """urunit's configuration in an initrd root: /urunit.conf, appended to the image's initrd."""
        if not is_urunit(req) or req.root is not RootMode.INITRD:
            return b""
        return urunit.initrd_member(urunit.config(req.process, req.blocks, req.monitor, self.rootfs_id))
