"""Does KVM really run guests here, at the speed of the hardware? A 512-byte boot sector answers, not the
existence of /dev/kvm.

The sector counts down from 2**24 (two instructions a turn), then writes 0x2a to qemu's isa-debug-exit port;
qemu then exits with (0x2a << 1) | 1 = 85. KVM counts as working only when that happens within DEADLINE_S.
Both halves are needed:
- It boots with the very accelerator and CPU arguments the real launch uses: a KVM that runs real-mode code
  with qemu's default CPU can still abort on `-cpu host` (seen: "failed to set MSR 0x10a").
- A KVM can run a guest by emulating its instructions (seen: a nested host's KVM took 1.2 s for a sector that
  only writes the port, and 7 s for the count, where qemu's own TCG takes 0.06 and 0.09 s; a Linux kernel
  booted under it hangs after "Probing EDD"). The count should take about 10 ms on hardware (2**24 turns of about a
  cycle: an estimate, no hardware KVM was at hand) and took 0.09 s under TCG, so
  the deadline tells the two apart with ten times TCG's time to spare for a loaded machine, and costs such a host
  DEADLINE_S once per boot, in the first qemu container's create (the sector that only exited took 1.2 s there).
The answer is cached per boot, qemu binary and probe.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

TURNS = 1 << 24
# mov ecx, TURNS; turn: dec ecx; jnz turn; mov al, 0x2a; out 0xf4, al; halt: hlt; jmp halt
CODE = (bytes([0x66, 0xB9]) + TURNS.to_bytes(4, "little")
        + bytes([0x66, 0x49, 0x75, 0xFC, 0xB0, 0x2A, 0xE6, 0xF4, 0xF4, 0xEB, 0xFD]))
BOOT_SECTOR = CODE.ljust(510, b"\0") + b"\x55\xaa"
EXPECTED = (0x2A << 1) | 1
DEADLINE_S = 1.0


def boots(qemu: str, accel_args: list[str], timeout: float = DEADLINE_S) -> bool:
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
    # The question asked is part of the key: an answer an earlier ukrun cached this boot to a weaker probe (the
    # sector that only exited said yes on an emulating KVM) must not outlive an upgrade.
    key = f"{_boot_id()} {qemu} {' '.join(accel_args)} count={TURNS} within={DEADLINE_S}s"
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
