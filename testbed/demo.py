"""`make demo`: a unikernel image's artifacts read in place through containerd, with zero copies.

Builds an image around the cached Debian kernel with `ukrun build`, imports it into a private
containerd (blockfile snapshotter), creates two containers with ctr, acquires both containers'
artifacts with `ukrun view acquire`, shows the one shared view, then releases and cleans up.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from testbed import containerd as ctd

NS = "ukrun-demo"
IMAGE = "ukrun/demo-linux:latest"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def count_views(daemon: ctd.Daemon) -> int:
    table = daemon.ctr(NS, "snapshots", "--snapshotter", "blockfile", "ls")
    return sum(1 for line in table.splitlines() if line.split()[-1:] == ["View"])


def main() -> int:
    kernel = ctd.cache_dir() / "kernel" / "vmlinuz"
    if not kernel.exists():
        print("no cached kernel: run scripts/setup", file=sys.stderr)
        return 1
    version = os.environ.get("UKRUN_DEMO_CONTAINERD", "2")
    work = Path(tempfile.mkdtemp(prefix="ukrun-demo-"))
    daemon = None
    try:
        daemon = ctd.start(version, work / "containerd")
        print(f"== containerd {ctd.installed_version(version)} (private, pid {daemon.pid}), snapshotter blockfile")
        spec = work / "spec.toml"
        spec.write_text(
            f'name = "{IMAGE}"\n[unikernel]\ntype = "linux"\nhypervisor = "qemu"\n'
            f'kernel = "{kernel}"\nkernel_path = "/boot/vmlinuz"\ncmdline = "console=ttyS0"\nmount_rootfs = true\n'
            '[[layers]]\nsymlinks = { "/etc/motd" = "/dev/null" }\n'
        )
        env = {**daemon.env(), "CONTAINERD_NAMESPACE": NS}
        ukrun = [sys.executable, "-m", "ukrun", "--state-root", str(work / "state")]

        def run(*args: str) -> str:
            proc = subprocess.run([*ukrun, *args], env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"ukrun {' '.join(args)} failed: {proc.stderr.strip()}")
            return proc.stdout

        print("== ukrun build")
        print("  " + run("build", str(spec), "-o", str(work / "demo.tar")).strip())
        daemon.import_image(NS, work / "demo.tar")
        for cid in ("demo-1", "demo-2"):
            daemon.create_container(NS, IMAGE, cid)
        print(f"== imported {IMAGE}, created containers demo-1 and demo-2")
        for cid in ("demo-1", "demo-2"):
            t0 = time.monotonic()
            art = json.loads(run("view", "acquire", cid, "--json"))
            ms = (time.monotonic() - t0) * 1000
            same = sha256(Path(art["kernel"])) == sha256(kernel)
            print(f"== ukrun view acquire {cid}: {ms:.0f} ms (whole process)")
            print(f"  kernel      {art['kernel']}  (identical to the source: {same})")
            print(f"  urunc.json  {art['urunc_json']}")
            print(f"  view        {art['view_key']}  [{art['chain_reason']}]")
            print(f"  copied      {art['bytes_copied']} bytes")
        print("== ukrun view ls")
        print("  " + run("view", "ls").replace("\n", "\n  ").rstrip())
        print(f"== view snapshots in containerd: {count_views(daemon)}")
        for cid in ("demo-1", "demo-2"):
            run("view", "release", cid)
        views_left = len(json.loads(run("view", "ls", "--json")))
        print(f"== released both: view snapshots left {count_views(daemon)}, ukrun views left {views_left}")
        return 0
    finally:
        if daemon is not None:
            ctd.stop(daemon.dir)
        subprocess.run(["rm", "-rf", "--one-file-system", str(work)], check=False)


if __name__ == "__main__":
    sys.exit(main())
