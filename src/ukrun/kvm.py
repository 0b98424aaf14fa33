"""Does KVM really run guests here? A 512-byte boot sector answers, not the existence of /dev/kvm.

The sector writes 0x2a to qemu's isa-debug-exit port; qemu then exits with (0x2a << 1) | 1 = 85. It
boots with the very accelerator and CPU arguments the real launch uses: a KVM that runs real-mode code
with qemu's default CPU can still abort on `-cpu host` (seen: "failed to set MSR 0x10a"). The answer
is cached per boot and qemu binary.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

BOOT_SECTOR = bytes([0xB0, 0x2A, 0xE6, 0xF4, 0xF4, 0xEB, 0xFD]).ljust(510, b"\0") + b"\x55\xaa"
EXPECTED = (0x2A << 1) | 1


def boots(qemu: str, accel_args: list[str], timeout: float = 5.0) -> bool:
    """Whether qemu with `accel_args` runs the boot sector to its end within `timeout` seconds."""
    import subprocess
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".img") as disk:
        disk.write(BOOT_SECTOR)
        disk.flush()
        cmd = [qemu, *accel_args, "-nodefaults", "-no-user-config", "-display", "none", "-m", "16",
               "-drive", f"file={disk.name},format=raw,if=ide,index=0",
               "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]
        try:
            proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        return proc.returncode == EXPECTED


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def kvm_works(qemu: str, accel_args: list[str], cache_dir: Path) -> bool:
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    cache = cache_dir / "kvm-probe.json"
    key = f"{_boot_id()} {qemu} {' '.join(accel_args)}"
    try:
        data = json.loads(cache.read_text())
        if data.get("key") == key:
            return bool(data["kvm"])
    except (OSError, ValueError, KeyError):
        pass
    works = boots(qemu, accel_args)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".{os.getpid()}")
    tmp.write_text(json.dumps({"key": key, "kvm": works}))
    os.replace(tmp, cache)
    return works
