"""`make bench` load: many unikernel containers created, started and deleted at once through `ctr`.

Why: a node starts pods in bursts. N containers of one image (the linux guest the tests use) go through
`ctr run --detach` concurrently with the stock runc v2 shim calling ukrun; all must succeed and run,
share exactly one artifact view while they run (`ukrun view ls --json`), and leave nothing once they
are killed and deleted concurrently: no view, no mount under the state root, no loop device, no lease,
no monitor. Then K different images at once: one view each, all gone after. Printed: p50 and p95 of
`create` (its own phases, from ukrun's timing log) and the wall times; `--json PATH` writes them as
benchmarks.results.LoadResult for the report. What must stay true: a failed check is reported and
makes the exit status 1, never skipped; everything the run made is removed whatever happened.

The blockfile scratch image is 64 MiB (the guest image needs ~20): blockfile gives every container a
full, non-sparse copy of it, so 50 containers of the default 256 MiB would write 12.8 GB per run.
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

from benchmarks.results import LoadResult, command_line, dump, percentile
from testbed import containerd as ctd
from testbed import guest
from testbed.fleet import Fleet, each, ukrun_config

NS = "load"
SCRATCH = "64M"
APP = "#!/bin/sh\n# image {n}\nexec /bin/busybox sleep 600\n"


def users_of(view: dict[str, object]) -> list[str]:
    users = view.get("users")
    return [str(u) for u in users] if isinstance(users, list) else []


def stopped_early(fleet: Fleet, started: list[str]) -> list[str]:
    """Tasks that ran and are no longer running before the kill, each with the end of its console."""
    now = fleet.statuses()
    return [f"{cid} stopped on its own ({now.get(cid, 'no task')}): {fleet.console_tail(cid)}"
            for cid in started if now.get(cid) != "RUNNING"]


def one_image(fleet: Fleet, count: int, problems: list[str]) -> tuple[list[float], float, int, int, float, bool]:
    ids = [f"load{i:02d}" for i in range(count)]
    t0 = time.perf_counter()
    procs = each(ids, lambda cid: fleet.run_detached(cid, "bench/load:0", "/bin/sh", "/app/run.sh"))
    problems += [f"run {cid}: {p.stderr.strip()}" for cid, p in zip(ids, procs, strict=True) if p.returncode]
    started = [cid for cid, p in zip(ids, procs, strict=True) if not p.returncode]
    running_s = time.perf_counter() - t0  # `ctr run --detach` returns once the task runs
    problems += stopped_early(fleet, started)
    views = fleet.views()
    users = sum(len(users_of(v)) for v in views)
    if len(views) != 1 or users != count:
        problems.append(f"{count} containers of one image: {len(views)} views, {users} users")
    create = fleet.create_ms(ids)
    if len(create) != count:
        problems.append(f"the timing log has {len(create)} creates of {count}")
    t1 = time.perf_counter()
    problems += fleet.remove(ids)
    teardown_s = time.perf_counter() - t1
    left = fleet.leftovers()
    problems += [f"after {count} containers: {x}" for x in left]
    return create, running_s, len(views), users, teardown_s, not left


def many_images(fleet: Fleet, work: Path, count: int, problems: list[str]) -> tuple[int, bool]:
    ids = [f"img{i}" for i in range(count)]
    for i in range(1, count + 1):
        tar = guest.linux_image(work / "img", f"bench/load:{i}", APP.format(n=i))
        fleet.daemon.import_image(NS, tar)
    procs = each(ids, lambda cid: fleet.run_detached(cid, f"bench/load:{int(cid[3:]) + 1}", "/bin/sh",
                                                     "/app/run.sh"))
    problems += [f"run {cid}: {p.stderr.strip()}" for cid, p in zip(ids, procs, strict=True) if p.returncode]
    problems += stopped_early(fleet, [cid for cid, p in zip(ids, procs, strict=True) if not p.returncode])
    views = fleet.views()
    per_view = sorted(len(users_of(v)) for v in views)
    if per_view != [1] * count:
        problems.append(f"{count} images: users per view {per_view}, expected one view each")
    problems += fleet.remove(ids)
    left = fleet.leftovers()
    problems += [f"after {count} images: {x}" for x in left]
    return len(views), not left


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--containers", type=int, default=50, help="containers of one image at once")
    parser.add_argument("--images", type=int, default=5, help="different images at once, one container each")
    parser.add_argument("--containerd", choices=ctd.VERSIONS, default="2")
    parser.add_argument("--json", type=Path, help="write the figures here (benchmarks.results)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("the benchmark needs root (mounts, loop devices, containerd)", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="ukrun-bench-load-"))
    state = work / "state"
    state.mkdir()
    config = ukrun_config(work / "ukrun.toml", state)
    daemon = ctd.start(args.containerd, work / "d", scratch_size=SCRATCH, env={"UKRUN_CONFIG": str(config)})
    fleet = Fleet(daemon, NS, work, state)
    problems: list[str] = []
    try:
        daemon.import_image(NS, guest.linux_image(work / "img", "bench/load:0", APP.format(n=0)))
        create, running_s, nviews, users, teardown_s, clean = one_image(fleet, args.containers, problems)
        image_views, images_clean = many_images(fleet, work, args.images, problems)
    finally:
        left = fleet.statuses()
        if left:
            fleet.remove(list(left))
        ctd.stop(daemon.dir)
        subprocess.run(["rm", "-rf", "--one-file-system", str(work)], check=False)
    version = ctd.installed_version(args.containerd)
    print(f"containerd {version}, blockfile ({SCRATCH} scratch); linux guest under qemu TCG, "
          "stock runc v2 shim calling ukrun")
    print(f"{args.containers} containers of one image, ctr run --detach at once: all returned after {running_s:.1f} s; "
          f"{nviews} view(s) with {users} users; killed and deleted at once in {teardown_s:.1f} s; "
          f"{'clean' if clean else 'NOT clean'}")
    if create:
        print(f"create (its own phases, ms): p50 {statistics.median(create):.0f}, p95 {percentile(create, 95):.0f}, "
              f"max {max(create):.0f}")
    print(f"{args.images} different images at once: {image_views} views; {'clean' if images_clean else 'NOT clean'}")
    for p in problems:
        print(f"problem: {p}")
    if args.json:
        dump(LoadResult(version, command_line(), args.containers, create, running_s, nviews, users, teardown_s,
                        clean, args.images, image_views, images_clean, problems), args.json)
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
