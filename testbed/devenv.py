"""`scripts/devenv up|down`: a private containerd started and stopped from the shell."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from testbed import containerd

BASE = Path(os.environ.get("UKRUN_DEVENV_DIR", "/tmp/ukrun-devenv"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/devenv")
    sub = parser.add_subparsers(dest="verb", required=True)
    up = sub.add_parser("up", help="start a private containerd and print export lines")
    up.add_argument("--containerd", choices=containerd.VERSIONS, default="2")
    down = sub.add_parser("down", help="stop it and remove every mount, loop device and file it made")
    down.add_argument("--containerd", choices=containerd.VERSIONS)
    args = parser.parse_args(argv)
    if args.verb == "up":
        daemon = containerd.start(args.containerd, BASE / args.containerd, scratch_size="256M")
        version = containerd.installed_version(args.containerd)
        print(f"# containerd {version}, pid {daemon.pid}, folder {daemon.dir}", file=sys.stderr)
        print(f"export CONTAINERD_ADDRESS={shlex.quote(daemon.address)}")
        print(f"export PATH={shlex.quote(str(daemon.bin_dir))}:\"$PATH\"")
        return 0
    versions = [args.containerd] if args.containerd else list(containerd.VERSIONS)
    for v in versions:
        if (BASE / v).exists():
            containerd.stop(BASE / v)
            print(f"# stopped containerd {v} and removed {BASE / v}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
