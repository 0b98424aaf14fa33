"""`make bench-artifacts`: per-start artifact access cost, copy against views, measured side by side.

For each artifact size, one image and N containers on a private containerd (blockfile). Each
container's rootfs is mounted first, as the shim does before it calls the runtime. Then, per mode,
`ArtifactStore.acquire` is timed for every container in one process with a connected client (what a
runtime pays at `create`, less the interpreter start that every mode pays alike). Bytes written are
the growth of the state root, a private tmpfs as `/run` is in production. Copies are released right
after they are measured, so that 20 copies of 512 MiB do not have to fit in memory at once.

`--containers` takes a list: every (size, count) pair is one run on a fresh daemon. `--json PATH`
writes the raw per-start figures (benchmarks.results.ArtifactsResult) for `make bench`'s report;
the printed table and the targets checked stay the same whatever is asked for.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.results import ArtifactRun, ArtifactsResult, ModeRun, command_line, dump
from testbed import containerd as ctd
from testbed import images
from ukrun import host
from ukrun.artifacts.store import ArtifactStore
from ukrun.containerd.client import Client

NS = "bench"
MiB = 1 << 20


def used_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def bench_size(version: str, size_mib: int, count: int, work: Path, snapshotter: str) -> list[ModeRun]:
    scratch = max(256, size_mib + size_mib // 4 + 96)
    pool = ""
    if snapshotter == "devmapper":
        from testbed import devmapper

        pool = os.environ.get("UKRUN_DM_POOL", "containerd-pool")
        devmapper.reset_pool(pool)
    daemon = ctd.start(version, work / "containerd", scratch_size=f"{scratch}M", devmapper_pool=pool)
    state = work / "state"
    state.mkdir()
    host.mount("tmpfs", state, "tmpfs", [f"size={size_mib * 2 + 64}m"])
    rootfs: list[Path] = []
    try:
        image = images.unikernel_image(work / "img", f"bench/k{size_mib}:1", kernel_size=size_mib * MiB)
        daemon.import_image(NS, image, snapshotter)
        ids = [f"c{i:02d}" for i in range(count)]
        client = Client(daemon.address, NS)
        for cid in ids:
            daemon.create_container(NS, f"bench/k{size_mib}:1", cid, snapshotter)
            target = work / "rootfs" / cid
            target.mkdir(parents=True)
            for m in client.mounts(snapshotter, cid):
                host.mount(m.source, target, m.type, list(m.options))
            rootfs.append(target)
        store = ArtifactStore(state, NS, lambda: client)
        rows = []
        for mode in ("copy", "per-container", "shared"):
            row = ModeRun(mode, [], [])
            for cid, root in zip(ids, rootfs, strict=True):
                before = used_bytes(state)
                t0 = time.perf_counter()
                store.acquire(cid, mode=mode, rootfs=root if mode == "copy" else None)
                row.times_ms.append((time.perf_counter() - t0) * 1000)
                row.bytes_per_start.append(max(0, used_bytes(state) - before))
                if mode == "copy":
                    store.release(cid)
            for cid in ids:
                store.release(cid)
            rows.append(row)
        client.close()
        return rows
    finally:
        for target in rootfs:
            host.unmount_all(target)
        host.unmount_all(state)
        ctd.stop(daemon.dir)


def report(size_mib: int, count: int, rows: list[ModeRun]) -> list[str]:
    copy = next(r for r in rows if r.mode == "copy").median()
    lines = []
    for r in rows:
        written = statistics.median(r.bytes_per_start)
        if r.mode == "shared":
            first, later = r.times_ms[0], r.later_median()
            wrote_first = r.bytes_per_start[0]
            lines.append(f"{size_mib:>5} MiB {count:>4}  shared (first)  {first:9.2f}  {copy / first:8.2f}x  "
                         f"{wrote_first:>12}")
            if later is not None:
                later_written = statistics.median(r.bytes_per_start[1:])
                lines.append(f"{'':>14}  shared (later)  {later:9.2f}  {copy / later:8.2f}x  {later_written:>12.0f}")
        else:
            med = r.median()
            lines.append(f"{size_mib:>5} MiB {count:>4}  {r.mode:<14}  {med:9.2f}  {copy / med:8.2f}x  "
                         f"{written:>12.0f}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="8,64,512", help="artifact sizes in MiB")
    parser.add_argument("--containers", default="20", help="container counts, each a run per size")
    parser.add_argument("--containerd", choices=ctd.VERSIONS, default="2")
    parser.add_argument("--snapshotter", choices=("blockfile", "devmapper"), default="blockfile")
    parser.add_argument("--json", type=Path, help="write the raw figures here (benchmarks.results)")
    args = parser.parse_args()
    counts = [int(c) for c in args.containers.split(",")]
    if os.geteuid() != 0:
        print("the benchmark needs root (mounts, loop devices, containerd)", file=sys.stderr)
        return 1
    where = "emulated guest (qemu TCG): absolute figures are slow, the ratios are the result" \
        if args.snapshotter == "devmapper" else "this host"
    print(f"containerd {ctd.installed_version(args.containerd)}, {args.snapshotter} on {where}, "
          f"{args.containers} containers of one image")
    print("per-start latency: median ms of ArtifactStore.acquire; vs copy = copy median / this median;")
    print("bytes/start: growth of the state root (tmpfs) per start")
    print(f"{'size':>9} {'n':>4}  {'mode':<14}  {'median ms':>9}  {'vs copy':>9}  {'bytes/start':>12}")
    failures: list[str] = []
    runs: list[ArtifactRun] = []
    for size in (int(s) for s in args.sizes.split(",")):
        for count in counts:
            with tempfile.TemporaryDirectory(prefix=f"ukrun-bench-{size}-") as tmp:
                rows = bench_size(args.containerd, size, count, Path(tmp), args.snapshotter)
            runs.append(ArtifactRun(size, count, rows))
            for line in report(size, count, rows):
                print(line, flush=True)
            failures += check(size, rows)
    print("targets:", "met" if not failures else "; ".join(failures))
    if args.json:
        dump(ArtifactsResult(ctd.installed_version(args.containerd), args.snapshotter, where, command_line(), runs,
                             failures), args.json)
    subprocess.run(["sync"], check=False)
    return 0 if not failures else 1


def check(size: int, rows: list[ModeRun]) -> list[str]:
    """The targets: shared (later) >= 10x copy at 64 MiB, never slower at 8 MiB, no bytes written."""
    failures = []
    copy = rows[0].median()
    shared = rows[2]
    later = shared.later_median()
    if later is not None:
        if size == 64 and copy / later < 10:
            failures.append(f"shared (later) at 64 MiB is {copy / later:.1f}x copy, target >= 10x")
        if size == 8 and later > copy:
            failures.append(f"shared (later) at 8 MiB is slower than copy ({later:.2f} > {copy:.2f} ms)")
    if any(b != 0 for b in shared.bytes_per_start[1:]):
        failures.append(f"shared wrote bytes per start at {size} MiB: {shared.bytes_per_start}")
    return failures


if __name__ == "__main__":
    sys.exit(main())
