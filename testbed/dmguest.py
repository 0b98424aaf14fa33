"""Real devmapper inside a qemu TCG guest: `make test-devmapper` and `make bench-devmapper`.

The host kernel has no device-mapper. This boots the cached Debian kernel under qemu with a busybox
initramfs that loads the virtio, 9p, dm-thin, loop, ext4 and overlay modules, mounts the host's root
read-only over 9p, lays tmpfs over the folders that must be writable, mounts a writable 9p share at
the very path of a results folder of the host, and chroots into the host's root: the guest runs the
project's own venv and cached containerd. A thin pool is made from two sparse virtio disks, then the
host's script runs (pytest on tests/devmapper, or the benchmark). Its exit status and output come back
through the results folder; everything made on the host is removed afterwards, whatever happened.
A script's result files (the benchmark's JSON) are written into that folder, `$UKRUN_RESULTS` in the
guest, and copied out before it goes: the console and the output are never parsed for them.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from testbed import containerd as ctd
from testbed import guest

REPO = Path(__file__).resolve().parent.parent
POOL = "containerd-pool"
MODULES = ("crc32c_generic", "virtio_ring", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio", "virtio_pci",
           "virtio_blk", "9pnet", "netfs", "fscache", "9p", "9pnet_virtio", "dm-bio-prison", "dm-mod", "dm-bufio",
           "libcrc32c", "dm-persistent-data", "dm-thin-pool", "loop", "jbd2", "mbcache", "crc16", "ext4", "overlay")

INIT = guest.init_prelude(MODULES) + """results=$(sed -n 's/.*ukrun.results=\\([^ ]*\\).*/\\1/p' /proc/cmdline)
mkdir -p /host
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144 hostroot /host || { echo "no 9p"; poweroff -f; }
mkdir -p /hostro
mount --bind /host /hostro  # a second view of the host root, which the tmpfs below do not cover
for d in tmp run var/tmp; do mount -t tmpfs -o size=1500m tmpfs /host/$d; done
# The repository, its cache and Python may live under a folder now covered by tmpfs: show them again.
keep=$(sed -n 's/.*ukrun.keep=\\([^ ]*\\).*/\\1/p' /proc/cmdline)
for p in $(echo "$keep" | tr , ' '); do
  case "$p" in /tmp/*|/run/*|/var/tmp/*) mkdir -p "/host$p"; mount --bind "/hostro$p" "/host$p" ;; esac
done
mount -t devtmpfs dev /host/dev
mount -t proc proc /host/proc
mount -t sysfs sys /host/sys
mkdir -p /host$results
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 results /host$results
chroot /host /bin/sh $results/run.sh > /host$results/output.log 2>&1
echo $? > /host$results/exit-status
sync
umount /host$results
echo 0 > /proc/sys/kernel/printk
poweroff -f
"""

RUN = """set -u
export PATH={path}
export HOME=/tmp PYTHONDONTWRITEBYTECODE=1 DM_DISABLE_UDEV=1 UKRUN_CACHE={cache}
export UKRUN_DM_POOL={pool} UKRUN_DM_GUEST=1 UKRUN_RESULTS={results}
cd {repo}
{command}
status=$?
dmsetup remove_all --force >/dev/null 2>&1
exit $status
"""


def built_unikernels() -> list[str]:
    """The test unikernels, when built: the guest shows them through its tmpfs over /var/tmp."""
    from testbed.unikernels import BUILT

    return [str(BUILT)] if BUILT.is_dir() else []


def initramfs() -> Path:
    out = ctd.cache_dir() / "guest" / "dm-initrd.img"
    out.parent.mkdir(parents=True, exist_ok=True)
    return guest.build_initramfs(out, MODULES, INIT)


def run_in_guest(command: str, timeout: float, *, memory_mb: int = 2048,
                 copy_out: dict[str, Path] | None = None) -> int:
    """Runs `command` in the guest; `copy_out` maps files it wrote in $UKRUN_RESULTS to host paths."""
    work = Path(tempfile.mkdtemp(prefix="ukrun-dm-"))
    results = work / "results"
    results.mkdir()
    try:
        meta, data = work / "meta.img", work / "data.img"
        subprocess.run(["truncate", "-s", "256M", str(meta)], check=True)
        subprocess.run(["truncate", "-s", "4G", str(data)], check=True)
        keep = sorted({str(REPO), str(ctd.cache_dir()), sys.base_prefix, *built_unikernels()})
        (results / "run.sh").write_text(RUN.format(
            path=f"{REPO / '.venv' / 'bin'}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}",
            cache=ctd.cache_dir(), pool=POOL, results=results, repo=REPO, command=command))
        qemu = ["qemu-system-x86_64", "-accel", "tcg,thread=multi", "-cpu", "max", "-m", str(memory_mb), "-smp", "2",
                "-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio",
                "-kernel", str(guest.kernel()), "-initrd", str(initramfs()),
                "-append", f"console=ttyS0 panic=-1 quiet ukrun.results={results} ukrun.keep={','.join(keep)}",
                "-drive", f"file={meta},format=raw,if=virtio,cache=unsafe",
                "-drive", f"file={data},format=raw,if=virtio,cache=unsafe",
                "-virtfs", "local,path=/,mount_tag=hostroot,security_model=passthrough,readonly=on,multidevs=remap",
                "-virtfs", f"local,path={results},mount_tag=results,security_model=passthrough,multidevs=remap"]
        t0 = time.monotonic()
        try:
            proc = subprocess.run(qemu, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
            console = proc.stdout + proc.stderr
        except subprocess.TimeoutExpired as exc:
            partial = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            console = f"the guest did not finish within {timeout:.0f} s\n{partial}"
        elapsed = time.monotonic() - t0
        output = (results / "output.log").read_text(errors="replace") if (results / "output.log").exists() else ""
        sys.stdout.write(output)
        status_file = results / "exit-status"
        if not status_file.exists():
            sys.stdout.write(f"--- the guest reported no exit status; its console:\n{console[-4000:]}\n")
            return 1
        status = int(status_file.read_text().strip() or 1)
        for name, dest in (copy_out or {}).items():
            if (results / name).is_file():
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(results / name, dest)
            else:
                print(f"--- the guest wrote no {name}")
                status = status or 1
        print(f"--- devmapper guest: exit status {status} after {elapsed:.0f} s (qemu TCG)")
        return status
    finally:
        subprocess.run(["rm", "-rf", "--one-file-system", str(work)], check=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testbed.dmguest")
    sub = parser.add_subparsers(dest="verb", required=True)
    t = sub.add_parser("test", help="run tests/devmapper inside the guest")
    t.add_argument("pytest_args", nargs="*")
    b = sub.add_parser("bench", help="run the artifact benchmark on the guest's real thin pool")
    b.add_argument("--sizes", default="8,64")
    b.add_argument("--containers", default="5")
    b.add_argument("--json", type=Path, help="where to copy the benchmark's JSON result on the host")
    args = parser.parse_args(argv)
    if args.verb == "test":
        extra = " ".join(shlex.quote(a) for a in args.pytest_args)
        command = f"python -m pytest -p no:cacheprovider -q -rs tests/devmapper {extra}"
        return run_in_guest(command, timeout=900)
    command = (f"python -m benchmarks.artifacts --snapshotter devmapper --sizes {args.sizes} "
               f"--containers {args.containers}")
    if args.json:
        command += ' --json "$UKRUN_RESULTS/artifacts.json"'
    return run_in_guest(command, timeout=1800, copy_out={"artifacts.json": args.json.resolve()} if args.json else None)


if __name__ == "__main__":
    sys.exit(main())
