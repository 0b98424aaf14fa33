"""`make demo`: a unikernel image run by containerd's stock runc v2 shim through ukrun, zero copies.

Builds (with `ukrun build`'s library) an image holding a Debian kernel, a busybox initrd that loads the
virtio and ext4 modules and switches root to /dev/vda, and a small app; imports it into a private
containerd with the blockfile snapshotter; runs two guests from it with `ctr run --runc-binary ukrun`
(qemu, TCG unless KVM really works); prints the guest's output, ukrun's phase timings and
`ukrun view ls` with the one view both guests share; then cleans up everything.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from testbed import containerd as ctd
from testbed import guest
from testbed import host as tbhost
from ukrun import host
from ukrun.containerd.client import Client

NS = "ukrun-demo"
IMAGE = "ukrun/demo-linux:latest"
UKRUN = str(Path(sys.executable).parent / "ukrun")
APP = """#!/bin/sh
echo "hello from a Linux guest booted by ukrun: kernel $(/bin/busybox uname -r), args: $*"
echo "my root is the container's rootfs: $(/bin/busybox df -h / | /bin/busybox tail -n 1)"
[ "$1" = "wait" ] && /bin/busybox sleep 600
echo "$(/bin/busybox date) guest was here" >> /guest-log
exit 0
"""


def main() -> int:
    if not guest.kernel().exists():
        print("no cached kernel: run scripts/setup", file=sys.stderr)
        return 1
    version = os.environ.get("UKRUN_DEMO_CONTAINERD", "2")
    work = Path(tempfile.mkdtemp(prefix="ukrun-demo-"))
    state_root, timing = work / "state", work / "state" / "timing.jsonl"
    config = work / "ukrun.toml"
    config.write_text(f'[artifacts]\nstate_root = "{state_root}"\n[timing]\nlog = "{timing}"\n')
    daemon = ctd.start(version, work / "containerd", env={"UKRUN_CONFIG": str(config)})
    env = {**daemon.env(), "CONTAINERD_NAMESPACE": NS}

    def ctr(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(daemon.bin_dir / "ctr"), "-n", NS, *args], capture_output=True, text=True, env=env)

    def ukrun(*args: str) -> str:
        return subprocess.run([UKRUN, "--state-root", str(state_root), *args], capture_output=True, text=True,
                              env=env, check=True).stdout

    def running(cid: str) -> bool:
        return any(line.split()[:1] == [cid] and line.split()[-1] == "RUNNING"
                   for line in ctr("task", "ls").stdout.splitlines()[1:])

    run = ["run", "--snapshotter", "blockfile", "--runc-binary", UKRUN, "--runc-root", str(work / "runc"),
           "--fifo-dir", str(work / "fifo")]
    try:
        print(f"== containerd {ctd.installed_version(version)} (private), snapshotter blockfile, "
              f"shim containerd-shim-runc-v2 with --runc-binary {UKRUN}")
        tar = guest.linux_image(work / "image", IMAGE, APP)
        daemon.import_image(NS, tar)
        print(f"== built and imported {IMAGE} ({tar.stat().st_size // (1 << 20)} MiB: kernel "
              f"{guest.kernel().stat().st_size // (1 << 20)} MiB, busybox initrd, app)")
        background = ctr(*run, "--detach", IMAGE, "demo-bg", "/bin/sh", "/app/run.sh", "wait")
        assert background.returncode == 0, background.stderr
        t0 = time.monotonic()
        fg = subprocess.Popen([str(daemon.bin_dir / "ctr"), "-n", NS, *run, IMAGE, "demo", "/bin/sh", "/app/run.sh",
                               "one", "two"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        while not (running("demo") and running("demo-bg")) and fg.poll() is None:
            time.sleep(0.05)
        print("== ukrun view ls, both guests running:")
        print("   " + ukrun("view", "ls").rstrip().replace("\n", "\n   "))
        copies = state_root / "copies"
        print(f"== artifact bytes copied: {sum(f.stat().st_size for f in copies.rglob('*') if f.is_file())}")
        out, _ = fg.communicate(timeout=300)
        print(f"== ctr run demo: exit code {fg.returncode} after {time.monotonic() - t0:.1f} s; the guest said:")
        print("   " + out.strip().replace("\n", "\n   "))
        marks = [json.loads(line) for line in timing.read_text().splitlines()]
        mine = [m for m in marks if m["container"] == "demo"]
        base = next(m["ns"] for m in mine if m["verb"] == "create")
        print("== ukrun phases for demo (ms after create began):")
        for m in mine:
            print(f"   {m['verb']:>6} {m['phase']:<16} {(m['ns'] - base) / 1e6:8.1f}")
        print(f"== the guest's write, read from the container's snapshot: {_read_snapshot(daemon, 'demo', work)}")
        ctr("task", "kill", "demo-bg")
        while running("demo-bg"):
            time.sleep(0.1)
        ctr("task", "delete", "demo-bg")
        for cid in ("demo", "demo-bg"):
            ctr("containers", "delete", cid)
        views = json.loads(ukrun("view", "ls", "--json"))
        idle = sum(1 for v in views if not v["users"] and v["idle_until"])
        print(f"== after both containers went: views {len(views)} ({idle} idle, kept mounted for the image's next "
              f"container until its lease ends), loop devices on its snapshots "
              f"{sum(1 for b in _loops() if b.startswith(str(daemon.dir)))}")
        ukrun("gc", "--idle")
        print(f"== after ukrun gc --idle: views {len(json.loads(ukrun('view', 'ls', '--json')))}")
        return 0 if fg.returncode == 0 else 1
    finally:
        tbhost.unmount_below(state_root)
        ctd.stop(daemon.dir)
        subprocess.run(["rm", "-rf", "--one-file-system", str(work)], check=False)


def _loops() -> list[str]:
    return list(host.loop_devices().values())


def _read_snapshot(daemon: ctd.Daemon, cid: str, work: Path) -> str:
    with Client(daemon.address, NS) as client:
        source = client.mounts("blockfile", cid)[0].source
    target = work / "look"
    target.mkdir()
    host.mount(source, target, "ext4", ["loop", "ro"])
    try:
        return (target / "guest-log").read_text().strip()
    finally:
        host.umount(target)


if __name__ == "__main__":
    sys.exit(main())
