"""Stands in for qemu inside the devmapper guest, where nested TCG is too slow to boot a Linux guest.

Called with the argv ukrun built for qemu, it takes the `-drive file=...` device it was handed, proves
nothing else holds it (an O_EXCL open fails with EBUSY on a mounted device), mounts it, checks that it
is the container's filesystem (ukrun's /.ukrun/process.sh and the image's /urunc.json are there), writes
/ukrun-marker with the device's path, unmounts it and exits 0. Any failure exits non-zero with a reason.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile


def main(argv: list[str]) -> int:
    drives = [a.split("file=", 1)[1].split(",")[0] for a in argv if a.startswith("file=")]
    if len(drives) != 1:
        print(f"checker: expected one -drive, got {drives}", file=sys.stderr)
        return 2
    device = drives[0]
    fd = os.open(device, os.O_RDWR | os.O_EXCL)  # EBUSY if mounted anywhere
    os.close(fd)
    target = tempfile.mkdtemp(prefix="checker-")
    subprocess.run(["mount", "-t", "ext4", device, target], check=True)
    try:
        for path in (".ukrun/process.sh", "urunc.json"):
            if not os.path.isfile(os.path.join(target, path)):
                print(f"checker: /{path} missing: {device} is not the container's filesystem", file=sys.stderr)
                return 3
        with open(os.path.join(target, "ukrun-marker"), "w") as f:
            f.write(device)
    finally:
        subprocess.run(["umount", target], check=True)
        os.rmdir(target)
    print(f"checker: {device} is the container's filesystem; marker written")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
