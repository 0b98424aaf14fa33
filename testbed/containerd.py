"""A private containerd for the demo, the tests and the benchmarks.

Each daemon has its own root, state, sockets and blockfile scratch image inside one folder, and is
stopped by the PID it was started with. `stop` also removes every mount, loop device and file made
below that folder, so the next run starts from a clean machine.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from testbed import host

REPO = Path(__file__).resolve().parent.parent
VERSIONS = ("1.7", "2")


def cache_dir() -> Path:
    return Path(os.environ.get("UKRUN_CACHE", REPO / ".cache"))


def bin_dir(version: str) -> Path:
    return cache_dir() / "containerd" / version / "usr" / "bin"


def installed_version(version: str) -> str:
    path = cache_dir() / "containerd" / version / "VERSION"
    if not path.exists():
        raise RuntimeError(f"containerd {version} is not installed in {path.parent}: run scripts/setup")
    return path.read_text().strip()


CONFIG = """\
version = 2
root = "{dir}/root"
state = "{dir}/state"
disabled_plugins = [{disabled}]

[grpc]
  address = "{dir}/containerd.sock"

[ttrpc]
  address = "{dir}/containerd.sock.ttrpc"

[plugins."io.containerd.snapshotter.v1.blockfile"]
  scratch_file = "{dir}/scratch.img"
  fs_type = "ext4"
  mount_options = ["loop"]
{devmapper}"""

DISABLED = ("io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime", "io.containerd.cri.v1.images",
            "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.zfs",
            "io.containerd.snapshotter.v1.btrfs", "io.containerd.tracing.processor.v1.otlp",
            "io.containerd.internal.v1.tracing")

DEVMAPPER = """
[plugins."io.containerd.snapshotter.v1.devmapper"]
  pool_name = "{pool}"
  root_path = "{dir}/devmapper"
  base_image_size = "128MB"
  async_remove = false
  discard_blocks = false
  fs_type = "ext4"
"""


CRI_PLUGINS = ("io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime", "io.containerd.cri.v1.images")


def config_text(folder: Path, devmapper_pool: str = "", cri: bool = False) -> str:
    """The daemon's configuration; with `cri`, its CRI plugins stay enabled (see testbed.cri)."""
    disabled = [p for p in DISABLED if not (cri and p in CRI_PLUGINS)]
    disabled += [] if devmapper_pool else ["io.containerd.snapshotter.v1.devmapper"]
    return CONFIG.format(
        dir=folder,
        disabled=", ".join(f'"{p}"' for p in disabled),
        devmapper=DEVMAPPER.format(pool=devmapper_pool, dir=folder) if devmapper_pool else "",
    )


@dataclass
class Daemon:
    version: str
    dir: Path
    pid: int

    @property
    def address(self) -> str:
        return str(self.dir / "containerd.sock")

    @property
    def bin_dir(self) -> Path:
        return bin_dir(self.version)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PATH"] = f"{self.bin_dir}:{env.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"
        env["CONTAINERD_ADDRESS"] = self.address
        return env

    def ctr(self, namespace: str, *args: str, check: bool = True, timeout: float = 300) -> str:
        cmd = [str(self.bin_dir / "ctr"), "--address", self.address, "--namespace", namespace, *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=self.env(), timeout=timeout)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc.stdout

    def import_image(self, namespace: str, tar: Path, snapshotter: str = "blockfile") -> None:
        extra = ["--local"] if self.version != "1.7" else []
        self.ctr(namespace, "images", "import", *extra, "--snapshotter", snapshotter, str(tar))

    def create_container(self, namespace: str, image: str, container_id: str,
                         snapshotter: str = "blockfile") -> None:
        self.ctr(namespace, "containers", "create", "--snapshotter", snapshotter, image, container_id)

    def delete_container(self, namespace: str, container_id: str) -> None:
        self.ctr(namespace, "containers", "delete", container_id)

    def purge(self, namespace: str) -> None:
        """Removes everything a test left in its namespace (tasks, containers, leases, images, and through
        them its snapshots), then the namespace. A session daemon would keep every test's namespace, and each
        committed blockfile layer is a whole copy of the scratch file: a full run would fill the disk."""
        def names(*args: str) -> list[str]:
            return self.ctr(namespace, *args, check=False, timeout=60).split()

        for cid in names("containers", "ls", "-q"):
            self.ctr(namespace, "task", "kill", "-s", "SIGKILL", cid, check=False, timeout=30)
            self.ctr(namespace, "task", "delete", "--force", cid, check=False, timeout=60)
            self.ctr(namespace, "containers", "delete", cid, check=False, timeout=30)
        for lease in names("leases", "ls", "-q"):
            self.ctr(namespace, "leases", "rm", lease, check=False, timeout=30)
        # The synchronous removal runs containerd's GC, which takes every snapshot nothing references now.
        self.ctr(namespace, "images", "rm", "--sync", *names("images", "ls", "-q"), check=False, timeout=120)
        self.ctr(namespace, "namespaces", "rm", namespace, check=False, timeout=30)

    def record(self) -> None:
        (self.dir / "daemon.json").write_text(json.dumps({"version": self.version, "pid": self.pid}))


def start(version: str, folder: Path, *, scratch_size: str = "64M", env: dict[str, str] | None = None,
          devmapper_pool: str = "", config: str = "", netns: str = "") -> Daemon:
    """Starts a private containerd in `folder`; with `devmapper_pool`, its devmapper snapshotter uses that
    thin pool (which must exist as /dev/mapper/<pool>); with `netns` (a namespace's path), it and its
    shims run in that network namespace, and only in it (the host's mount namespace stays theirs).

    Every blockfile snapshot is a whole copy of the scratch file (containerd copies it, and ext4 cannot
    share its blocks), so its size is what each snapshot costs on disk: the test images fit in 64 MiB,
    and a run of the suite keeps one daemon's hundreds of snapshots."""
    installed_version(version)
    folder.mkdir(parents=True, exist_ok=True)
    folder = folder.resolve()
    if (folder / "daemon.json").exists():
        stop(folder)
        folder.mkdir(parents=True, exist_ok=True)
    scratch = folder / "scratch.img"
    subprocess.run(["truncate", "-s", scratch_size, str(scratch)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(scratch)], check=True)
    config_file = folder / "config.toml"
    config_file.write_text(config or config_text(folder, devmapper_pool))
    return _launch(version, folder, env, netns)


def restart(daemon: Daemon, env: dict[str, str] | None = None, *, kill: bool = False) -> Daemon:
    """Stops the daemon by its PID (SIGTERM, or SIGKILL with `kill`), leaving its shims, state and content
    as they are, and starts it again on the same folder and configuration: what a node's containerd
    upgrade or crash does."""
    host.terminate(daemon.pid, sig=signal.SIGKILL if kill else signal.SIGTERM)
    return _launch(daemon.version, daemon.dir, env)


def _launch(version: str, folder: Path, env: dict[str, str] | None, netns: str = "") -> Daemon:
    config_file = folder / "config.toml"
    enter = ["nsenter", f"--net={netns}", "--"] if netns else []  # nsenter execs: the PID is containerd's
    log = open(folder / "containerd.log", "ab")  # noqa: SIM115 - handed to the daemon
    denv = {**os.environ, **(env or {})}
    denv["PATH"] = f"{bin_dir(version)}:{denv.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"
    proc = subprocess.Popen(
        [*enter, str(bin_dir(version) / "containerd"), "--config", str(config_file)],
        stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=denv, start_new_session=True,
    )
    log.close()
    daemon = Daemon(version=version, dir=folder, pid=proc.pid)
    daemon.record()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = (folder / "containerd.log").read_text(errors="replace")[-2000:]
            stop(folder)
            raise RuntimeError(f"containerd {version} exited with {proc.returncode}:\n{tail}")
        if _answers(daemon):
            return daemon
        time.sleep(0.05)
    stop(folder)
    raise RuntimeError(f"containerd {version} did not open {daemon.address} within 30 s")


def _answers(daemon: Daemon) -> bool:
    """Whether containerd serves its API: after a restart the socket can exist, or even accept, before the
    daemon has loaded its plugins and serves requests."""
    if not Path(daemon.address).exists():
        return False
    proc = subprocess.run([str(daemon.bin_dir / "ctr"), "--address", daemon.address, "--timeout", "2s", "version"],
                          capture_output=True, env=daemon.env(), timeout=10)
    return proc.returncode == 0


def stop(folder: Path) -> None:
    """Stops the daemon recorded in `folder` by its PID, then removes all that lives below it."""
    folder = folder.resolve()
    record = folder / "daemon.json"
    if record.exists():
        pid = int(json.loads(record.read_text())["pid"])
        address = str(folder / "containerd.sock")
        for shim in host.processes_with_argument(address):
            host.terminate(shim)
        host.terminate(pid)
    host.unmount_below(folder)
    host.detach_loops_below(folder)
    subprocess.run(["rm", "-rf", "--one-file-system", str(folder)], check=True)


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.05) -> bool:
    """Polls `predicate` until it holds or `timeout` seconds pass; returns its last answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
