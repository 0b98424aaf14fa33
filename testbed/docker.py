"""A private dockerd for the tests, with ukrun registered as a runtime, on a private containerd.

Everything of the daemon lives in one folder: its data root, exec root, pidfile, socket and log. It runs
in a network namespace of its own (`ukdk-<tag>`, loopback only), so its bridge (203.0.113.0/24, a
documentation range), its docker-proxy for published ports and its network namespaces' links never touch
the host's; iptables is off (a published port goes through docker-proxy). It talks to the containerd
given (`--containerd`), whose shims run ukrun, and is stopped by the PID it was started with.

`daemon_json(ukrun, containerd_store)` is the part of daemon.json that the README's Docker section shows,
word for word (a test checks); `start` adds what keeps the daemon private.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from testbed import containerd as ctd
from testbed import host

BRIDGE_IP = "203.0.113.1/24"
SNAPSHOTTER = "blockfile"  # for Docker's containerd image store: the one testbed.containerd configures


def bin_dir() -> Path:
    return ctd.cache_dir() / "docker" / "usr"


def installed_version() -> str:
    path = ctd.cache_dir() / "docker" / "VERSION"
    if not path.exists():
        raise RuntimeError(f"docker is not installed in {path.parent}: run scripts/setup")
    return path.read_text().strip()


def daemon_json(ukrun: str, containerd_store: bool) -> dict[str, object]:
    """ukrun as a runtime; with Docker's containerd image store, its block snapshotter."""
    conf: dict[str, object] = {"runtimes": {"ukrun": {"path": ukrun}}}
    if containerd_store:
        conf |= {"features": {"containerd-snapshotter": True}, "storage-driver": SNAPSHOTTER}
    return conf


@dataclass
class Dockerd:
    dir: Path
    pid: int
    netns: str  # the namespace's name, under /run/netns
    containerd: ctd.Daemon
    containerd_store: bool = False

    @property
    def socket(self) -> str:
        return str(self.dir / "docker.sock")

    def docker(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "HOME": str(self.dir),
               "DOCKER_HOST": f"unix://{self.socket}", "DOCKER_CONFIG": str(self.dir / "client")}
        return subprocess.run([str(bin_dir() / "bin" / "docker"), *args], capture_output=True, text=True,
                              env=env, timeout=timeout)

    def inside(self, *cmd: str, timeout: float = 10) -> subprocess.CompletedProcess[str]:
        """A command in the daemon's network namespace (where its published ports listen)."""
        return subprocess.run(["ip", "netns", "exec", self.netns, *cmd], capture_output=True, text=True,
                              timeout=timeout)


def start(folder: Path, containerd: ctd.Daemon, ukrun: str, *, containerd_store: bool = False) -> Dockerd:
    installed_version()
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    netns = "ukdk-" + hashlib.sha256(str(folder).encode()).hexdigest()[:8]
    subprocess.run(["ip", "netns", "del", netns], check=False, capture_output=True)  # a crashed run's
    subprocess.run(["ip", "netns", "add", netns], check=True, capture_output=True)
    subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True, capture_output=True)
    conf = daemon_json(ukrun, containerd_store) | {
        "bip": BRIDGE_IP, "iptables": False, "ip6tables": False, "exec-opts": ["native.cgroupdriver=cgroupfs"],
        "userland-proxy-path": str(bin_dir() / "sbin" / "docker-proxy"),
    }
    if not containerd_store:
        conf["features"] = {"containerd-snapshotter": False}  # Docker 28's default, said out loud
    (folder / "daemon.json").write_text(json.dumps(conf, indent=1))
    log = open(folder / "dockerd.log", "ab")  # noqa: SIM115 - handed to the daemon
    env = {**os.environ, "PATH": f"{bin_dir() / 'sbin'}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"}
    proc = subprocess.Popen(
        ["nsenter", f"--net=/run/netns/{netns}", str(bin_dir() / "sbin" / "dockerd"),
         "--config-file", str(folder / "daemon.json"), "--containerd", containerd.address,
         "--data-root", str(folder / "root"), "--exec-root", str(folder / "exec"),
         "--pidfile", str(folder / "docker.pid"), "-H", f"unix://{folder / 'docker.sock'}"],
        stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env, start_new_session=True,
    )
    log.close()
    d = Dockerd(folder, proc.pid, netns, containerd, containerd_store)  # nsenter execs dockerd: the same PID
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = (folder / "dockerd.log").read_text(errors="replace")[-2000:]
            stop(d)
            raise RuntimeError(f"dockerd exited with {proc.returncode}:\n{tail}")
        if Path(d.socket).exists() and d.docker("version", timeout=10).returncode == 0:
            return d
        time.sleep(0.2)
    stop(d)
    raise RuntimeError("dockerd did not answer within 60 s")


def stop(d: Dockerd) -> None:
    """Stops dockerd by its PID (its containers' shims belong to the containerd, stopped by its owner),
    then removes its namespace and all below its folder."""
    host.terminate(d.pid, timeout=30)
    subprocess.run(["ip", "netns", "del", d.netns], check=False, capture_output=True)
    host.unmount_below(d.dir)
    subprocess.run(["rm", "-rf", "--one-file-system", str(d.dir)], check=True)


def monitor_argv(d: Dockerd) -> list[str]:
    """The command line of the one qemu running a container of this daemon."""
    (pid,) = {*host.qemu_processes(d.dir), *host.qemu_processes(d.containerd.dir)}
    return Path(f"/proc/{pid}/cmdline").read_text().split("\0")


def leftovers(d: Dockerd) -> list[str]:
    """What the daemon's containers left: mounts below its folder (but the daemon's own mount of its data
    root), ukrun's state folders in the runtime root, containers."""
    left = [f"mount {m}" for m in _mounts_below(d.dir) if m != str(d.dir / "root")]
    runtime_root = d.dir / "exec" / "runtime-runc" / "moby"
    if runtime_root.is_dir():  # ukrun keeps its parsed configuration there, as a dot file
        left += [f"runtime state {p.name}" for p in runtime_root.iterdir() if not p.name.startswith(".")]
    listed = d.docker("ps", "-aq").stdout.split()
    return left + [f"container {c}" for c in listed]


def _mounts_below(folder: Path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    return [p for p in points if p.startswith(str(folder) + "/")]
