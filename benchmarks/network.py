"""`make bench-network`: what each network mode costs `create` and `delete`, on this machine.

One linux guest at a time in a pod's network namespace (testbed.netns), through ctr and the stock shim,
the modes alternating: dynamic (no ports: tc redirection), ports declared by annotation, ports declared
by the image's ExposedPorts (read from containerd at create), static. The shim runs a small recorder as
the runtime binary, which times the real ukrun as its child: `create` and `delete` as whole processes.
From ukrun's timing log: the network facts and the image read (phase `checks`, from `spec`) and the
network's set-up (phase `network`, from `plan`). Ports and static modes run `nft` once at create and once
at delete; dynamic runs none. Last, the read of an image's ExposedPorts alone, which a create that
declares no ports now makes.

`--runs` sets the rounds (each runs every mode once), after one round that warms up and is not counted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.runtime import UKRUN, recorder
from testbed import containerd as ctd
from testbed import guest, netns

NS = "bench-net"
APP = "#!/bin/sh\nexec /bin/busybox sleep 600\n"
PLAIN, EXPOSING = "bench/net-guest:1", "bench/net-guest-exposing:1"
MODES = {
    "dynamic": (PLAIN, ()),
    "ports (annotation)": (PLAIN, ("--annotation", "io.ukrun.ports=8080/tcp")),
    "ports (ExposedPorts)": (EXPOSING, ()),
    "static": (PLAIN, ("--annotation", "io.ukrun.network=static", "--annotation", "io.ukrun.network.publish=8080")),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7, help="rounds, each running every mode once")
    runs: int = parser.parse_args().runs
    if os.geteuid() != 0:
        print("the benchmark needs root", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="ukrun-bench-net-"))
    state_root, timing = work / "state", work / "state" / "timing.jsonl"
    config = work / "ukrun.toml"
    config.write_text(f'[artifacts]\nstate_root = "{state_root}"\n[timing]\nlog = "{timing}"\n')
    daemon = ctd.start("2", work / "d", env={"UKRUN_CONFIG": str(config)})
    pod = netns.make("bench-network")

    def ctr(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(daemon.bin_dir / "ctr"), "-a", daemon.address, "-n", NS, *args],
                              capture_output=True, text=True, env=daemon.env())

    def status(cid: str) -> str:
        return next((line.split()[-1] for line in ctr("task", "ls").stdout.splitlines()[1:]
                     if line.split()[:1] == [cid]), "")

    try:
        daemon.import_image(NS, guest.linux_image(work / "img", PLAIN, APP))
        daemon.import_image(NS, guest.linux_image(work / "img-exposing", EXPOSING, APP, ports=("8080/tcp",)))
        logs = {}
        for i in range(runs + 1):  # the first round warms up (the image's first container): not counted
            for j, (mode, (image, flags)) in enumerate(MODES.items()):
                rec, logs[mode] = recorder(work, f"m{j}", UKRUN)
                cid = f"m{j}-{i}" if i else f"warm{j}"
                proc = ctr("run", "-d", "--snapshotter", "blockfile", "--runc-binary", str(rec if i else UKRUN),
                           "--runc-root", str(work / "runc"), "--fifo-dir", str(work / "fifo"), "--with-ns",
                           f"network:{pod.path}", *flags, image, cid, "/bin/sh", "/app/run.sh")
                assert proc.returncode == 0, proc.stderr
                while status(cid) != "RUNNING":
                    time.sleep(0.005)
                ctr("task", "kill", "-s", "SIGKILL", cid)
                while status(cid) != "STOPPED":
                    time.sleep(0.01)
                assert ctr("task", "delete", cid).returncode == 0
                ctr("containers", "delete", cid)
        marks = [json.loads(line) for line in timing.read_text().splitlines()]
        print(f"containerd {ctd.installed_version('2')}, blockfile; linux guest under qemu TCG; {runs} rounds, "
              "modes alternating; whole processes as the shim runs them, median ms (min-max)")
        for j, mode in enumerate(MODES):
            times: dict[str, list[float]] = {}
            for line in logs[mode].read_text().splitlines():
                verb, ms, _ = line.split()
                times.setdefault(verb, []).append(float(ms))
            phases = _phases([m for m in marks if str(m["container"]).startswith(f"m{j}-")])
            cells = [f"{verb} {_spread(times.get(verb, []))}" for verb in ("create", "delete")]
            cells += [f"{name} {_spread(values)}" for name, values in phases.items()]
            print(f"  {mode:<21} " + "   ".join(cells))
        print(f"reading the image's ExposedPorts at create (image, manifest, configuration), 30 reads: "
              f"{_spread(_image_reads(daemon, 30))}")
        return 0
    finally:
        for line in ctr("task", "ls").stdout.splitlines()[1:]:
            ctr("task", "delete", "--force", line.split()[0])
        for line in ctr("containers", "ls", "-q").stdout.split():
            ctr("containers", "delete", line)
        netns.remove(pod)
        ctd.stop(daemon.dir)
        subprocess.run(["rm", "-rf", "--one-file-system", str(work)], check=False)


def _image_reads(daemon: ctd.Daemon, n: int) -> list[float]:
    """What a create without declared ports pays to learn the image declares none: ms per read."""
    from ukrun.containerd.client import Client
    from ukrun.containerd.records import ContainerRecord
    from ukrun.runtime.facts import image_ports

    out = []
    with Client(daemon.address, NS) as client:
        record = ContainerRecord("bench", PLAIN, "", "")
        for _ in range(n):
            t0 = time.perf_counter()
            assert image_ports(lambda: client, record, "bench") == ()
            out.append((time.perf_counter() - t0) * 1000)
    return out


def _phases(marks: list[dict[str, object]]) -> dict[str, list[float]]:
    """Per container: facts and image read (checks - spec), network set-up (network - plan), in ms."""
    out: dict[str, list[float]] = {"facts": [], "set-up": []}
    for cid in sorted({str(m["container"]) for m in marks}):
        at = {str(m["phase"]): int(str(m["ns"])) for m in marks if m["container"] == cid and m["verb"] == "create"}
        out["facts"].append((at["checks"] - at["spec"]) / 1e6)
        out["set-up"].append((at["network"] - at["plan"]) / 1e6)
    return out


def _spread(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):6.1f} ({min(values):.0f}-{max(values):.0f})"


if __name__ == "__main__":
    sys.exit(main())
