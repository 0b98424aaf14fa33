"""A real Linux guest for the demo and the tests: the cached Debian kernel, a busybox initramfs, and an
image whose rootfs holds a static busybox and the application.

The initramfs's init loads the virtio, ext4, 9p, virtio-fs and virtio-serial modules, mounts what `ukrun.root=` names
(/dev/vda, the container's block rootfs handed over by ukrun, or a folder rootfs shared over 9p or
virtio-fs), mounts the block devices `ukrun.blocks=` names (by virtio serial; ext4) in it, reads the script
`ukrun.process=` names (written by ukrun: the spec's cwd, env and args) from that root or from the
read-only share `ukrun.files=` names, switches root, starts ukrun's exec agent when `ukrun.exec=` asks
(with devpts mounted for exec terminals) and runs the script. A non-zero exit code is written to I/O port
0xf4 (qemu's isa-debug-exit); 0 powers off.
"""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Sequence
from pathlib import Path

from testbed import containerd as ctd
from ukrun.image.build import Entry, build_unikernel_image
from ukrun.unikernel import UnikernelConfig

BUSYBOX = Path("/bin/busybox")
MODULES = ("crc32c_generic", "virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev",
           "virtio_pci", "virtio_blk", "crc16", "mbcache", "jbd2", "ext4", "9pnet", "netfs", "fscache", "9p",
           "9pnet_virtio", "fuse", "virtiofs", "pvpanic", "pvpanic-pci", "failover", "net_failover", "virtio_net",
           "virtio_console")

# Runs in the guest after switch_root, from the image's own busybox. With ukrun.exec=<n>, ukrun's exec agent
# (in the image, from `ukrun build`) serves the n exec ports, and terminals need devpts.
AFTER_SWITCH = (
    "b=/bin/busybox; $b mkdir -p /proc /dev /sys /tmp; $b mount -t proc proc /proc; "
    "$b mount -t devtmpfs dev /dev; $b mount -t sysfs sys /sys; "
    "$b mkdir -p /dev/pts; $b mount -t devpts devpts /dev/pts; "
    "for w in $($b cat /proc/cmdline); do case $w in ukrun.exec=*) n=${w#ukrun.exec=} ;; esac; done; "
    "if [ -n \"$n\" ] && [ -x /.ukrun/exec-agent ]; then /.ukrun/exec-agent \"$n\" </dev/null & fi; "
    's=$UKRUN_SCRIPT; unset UKRUN_SCRIPT; $b sh -c "$s"; c=$?; $b sync; $b umount -a -t ext4 2>/dev/null; '
    "$b mount -o remount,ro / 2>/dev/null; "
    'if [ $c -ne 0 ]; then $b printf "\\\\$($b printf %03o $c)" | '
    "$b dd of=/dev/port bs=1 seek=244 count=1 2>/dev/null; fi; "
    "echo 0 > /proc/sys/kernel/printk; $b poweroff -f"
)

def init_prelude(modules: Sequence[str]) -> str:
    """The start of every initramfs init here: busybox applets, /proc, /sys, /dev, the modules in order."""
    return f"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in {" ".join(modules)}; do insmod /lib/modules/$m.ko || echo "init: insmod $m failed"; done
"""


INIT = init_prelude(MODULES) + f"""fail() {{
  echo "guest init: $*"
  printf '\\001' | dd of=/dev/port bs=1 seek=244 count=1 2>/dev/null
  poweroff -f
}}
# The kernel's own `ip=` (urunc's convention): Debian's kernel has no IP autoconfiguration, so apply it.
ipcfg=$(sed -n 's/.* ip=\\([^ ]*\\).*/\\1/p' /proc/cmdline)
if [ -n "$ipcfg" ]; then
  set -- $(echo "$ipcfg" | tr ':' ' ')
  ip link set lo up && ip link set "$5" up && ip addr add "$1/$3" dev "$5" && ip route add default via "$2" \\
    || fail "cannot apply ip=$ipcfg"
fi
root=$(sed -n 's/.*ukrun.root=\\([^ ]*\\).*/\\1/p' /proc/cmdline)
mkdir -p /newroot
case "$root" in
  9p:*)
    opts=trans=virtio,version=9p2000.L,msize=262144
    mount -t 9p -o $opts "${{root#9p:}}" /newroot || fail "cannot mount $root" ;;
  virtiofs:*)
    mount -t virtiofs "${{root#virtiofs:}}" /newroot || fail "cannot mount $root" ;;
  *)
    i=0
    while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
    [ -b /dev/vda ] || fail "no /dev/vda: the rootfs device did not arrive"
    mount -t ext4 -o rw /dev/vda /newroot || fail "cannot mount /dev/vda" ;;
esac
[ -x /newroot/bin/busybox ] || fail "the image has no /bin/busybox"
# ukrun.blocks=<serial>:<folder>,...: block devices (the spec's block volumes) to mount in the root.
blocks=$(sed -n 's/.*ukrun.blocks=\\([^ ]*\\).*/\\1/p' /proc/cmdline)
for pair in $(echo "$blocks" | tr ',' ' '); do
  id=${{pair%%:*}}; dir=${{pair#*:}}; dev=""; i=0
  while [ -z "$dev" ] && [ $i -lt 100 ]; do
    for s in /sys/block/vd*/serial; do
      [ "$(cat "$s" 2>/dev/null)" = "$id" ] && dev=/dev/$(basename "$(dirname "$s")")
    done
    [ -n "$dev" ] || sleep 0.05; i=$((i + 1))
  done
  [ -n "$dev" ] || fail "no block device with serial $id"
  mkdir -p "/newroot$dir" && mount -t ext4 -o rw "$dev" "/newroot$dir" || fail "cannot mount $id at $dir"
done
script=$(sed -n 's/.*ukrun.process=\\([^ ]*\\).*/\\1/p' /proc/cmdline)
files=$(sed -n 's/.*ukrun.files=9p:\\([^ ]*\\).*/\\1/p' /proc/cmdline)
if [ -n "$files" ]; then
  mkdir -p /files
  mount -t 9p -o trans=virtio,version=9p2000.L,ro "$files" /files || fail "cannot mount the files share $files"
  script="/files$script"
else
  script="/newroot$script"
fi
[ -f "$script" ] || fail "ukrun wrote no $script"
export UKRUN_SCRIPT="$(cat "$script")"
[ -n "$files" ] && umount /files
umount /proc /sys /dev
exec switch_root /newroot /bin/busybox sh -c '{AFTER_SWITCH}'
"""


def _newc(name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0), ino: int = 0) -> bytes:
    fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(name) + 1, 0]
    header = b"070701" + b"".join(f"{f:08x}".encode() for f in fields)
    out = header + name.encode() + b"\0"
    out += b"\0" * (-len(out) % 4) + data
    return out + b"\0" * (-len(out) % 4)


def build_initramfs(out: Path, modules: Sequence[str], init: str) -> Path:
    """A busybox initramfs (newc cpio, uncompressed) with the cached kernel's `modules` and `init`."""
    modules_root = next((ctd.cache_dir() / "kernel" / "root" / "lib" / "modules").iterdir()) / "kernel"
    entries: list[tuple[str, int, bytes, tuple[int, int]]] = [
        (d, stat.S_IFDIR | 0o755, b"", (0, 0)) for d in ("bin", "dev", "proc", "sys", "lib", "lib/modules", "newroot")
    ]
    entries.append(("dev/console", stat.S_IFCHR | 0o600, b"", (5, 1)))
    entries.append(("bin/busybox", stat.S_IFREG | 0o755, BUSYBOX.read_bytes(), (0, 0)))
    entries.append(("init", stat.S_IFREG | 0o755, init.encode(), (0, 0)))
    for name in modules:
        (path,) = list(modules_root.rglob(f"{name}.ko"))
        entries.append((f"lib/modules/{name}.ko", stat.S_IFREG | 0o644, path.read_bytes(), (0, 0)))
    buf = io.BytesIO()
    for ino, (name, mode, data, rdev) in enumerate(entries, start=1):
        buf.write(_newc(name, mode, data, rdev, ino))
    buf.write(_newc("TRAILER!!!", 0))
    tmp = out.with_suffix(".tmp")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, out)
    return out


def build_initrd(out: Path) -> Path:
    """The linux guest's initramfs: boots the container's rootfs from /dev/vda."""
    return build_initramfs(out, MODULES, INIT)


def kernel() -> Path:
    return ctd.cache_dir() / "kernel" / "vmlinuz"


def kernel_release() -> str:
    """What `uname -r` says in the guest: the cached kernel package's version (linux-image-<release>)."""
    return (ctd.cache_dir() / "kernel" / "VERSION").read_text().strip().removeprefix("linux-image-")


def linux_image(workdir: Path, name: str, app: str, *, cmd: Sequence[str] = ("/bin/sh", "/app/run.sh"),
                above: Sequence[Sequence[Entry]] = (), ports: Sequence[str] = ()) -> Path:
    """A urunc-style linux image booting from its block rootfs; `app` is /app/run.sh; `ports` its
    configuration's ExposedPorts."""
    workdir.mkdir(parents=True, exist_ok=True)
    initrd = workdir / "initrd.img"
    if not initrd.exists():
        build_initrd(initrd)
    config = UnikernelConfig("linux", "qemu", "/boot/vmlinuz", initrd="/boot/initrd.img", mount_rootfs=True)
    base = [
        Entry("/bin/busybox", source=BUSYBOX, mode=0o755),
        Entry("/bin/sh", symlink="busybox"),
        *(Entry(d, directory=True, mode=0o755) for d in ("/proc", "/dev", "/sys", "/tmp", "/etc")),
        Entry("/app/run.sh", data=app.encode(), mode=0o755),
    ]
    out = workdir / f"{name.replace('/', '_').replace(':', '_')}.tar"
    build_unikernel_image(out, name, config, kernel(), initrd, base=base, above=above, cmd=cmd, ports=ports,
                          exec_agent=True)
    return out
