"""A fresh thin pool for containerd's devmapper snapshotter (inside the devmapper guest)."""

from __future__ import annotations

import os
import subprocess

META = "/dev/vda"
DATA = "/dev/vdb"


def _dmsetup(*args: str, check: bool = True) -> str:
    env = {**os.environ, "DM_DISABLE_UDEV": "1"}
    proc = subprocess.run(["dmsetup", *args], capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise RuntimeError(f"dmsetup {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


def thin_devices(pool: str) -> list[str]:
    """Active devices of the pool's snapshots (devmapper names them <pool>-snap-<id>)."""
    out = _dmsetup("ls")
    return sorted(line.split()[0] for line in out.splitlines() if line.startswith(f"{pool}-snap-"))


def reset_pool(pool: str) -> None:
    """Removes the pool and every thin device, wipes its metadata and makes it again, empty."""
    for dev in thin_devices(pool):
        _dmsetup("remove", "--force", dev, check=False)
    if pool in _dmsetup("ls"):
        _dmsetup("remove", "--force", pool)
    with open(META, "r+b") as f:
        f.write(b"\0" * 4096)
    sectors = int(subprocess.run(["blockdev", "--getsz", DATA], capture_output=True, text=True, check=True).stdout)
    _dmsetup("create", pool, "--table", f"0 {sectors} thin-pool {META} {DATA} 128 32768 1 skip_block_zeroing")
