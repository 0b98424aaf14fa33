"""Podman for the tests, with nothing of the host's: its storage (graph root, run root, overlay driver),
engine folder, events log, network configuration and netavark's state all live in one folder, named by
its own containers.conf and storage.conf (CONTAINERS_CONF, CONTAINERS_STORAGE_CONF; no registries) and the
matching flags. Every command runs in a network namespace of its own (`nsenter --net`; the mount namespace
stays the host's, so the container namespaces Podman mounts are seen by every later command), where
netavark makes its bridge (198.51.100.0/24, a documentation range) and its rules.

ukrun is registered under `[engine.runtimes]` as the README's Podman section shows it (a test checks).
Podman passes it no flags and runs `kill` and `delete` with neither flags nor environment, so ukrun uses
its defaults there: the runtime root /run/ukrun/runtime and /etc/ukrun/config.toml when it exists.
"""

from __future__ import annotations

import hashlib
import subprocess
from dataclasses import dataclass
from pathlib import Path

SUBNET = "198.51.100.0/24"
RUNTIMES = """\
[engine.runtimes]
ukrun = ["{ukrun}"]
"""

CONF = """\
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{dir}/events.log"
tmp_dir = "{dir}/tmp"
volume_path = "{dir}/volumes"
{runtimes}
[network]
network_backend = "netavark"
network_config_dir = "{dir}/networks"
default_subnet = "{subnet}"
"""

STORAGE = """\
[storage]
driver = "overlay"
graphroot = "{dir}/root"
runroot = "{runroot}"
"""


def runtimes(ukrun: str) -> str:
    return RUNTIMES.format(ukrun=ukrun)


@dataclass(frozen=True)
class Podman:
    dir: Path
    netns: str  # the namespace's name, under /run/netns
    runroot: Path  # Podman wants at most 50 characters here (its sockets' paths): one beside, in /run

    def env(self) -> dict[str, str]:
        return {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(self.dir),
                "CONTAINERS_CONF": str(self.dir / "containers.conf"),
                "CONTAINERS_STORAGE_CONF": str(self.dir / "storage.conf"),
                "CONTAINERS_REGISTRIES_CONF": str(self.dir / "registries.conf")}

    def podman(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        d = self.dir
        cmd = ["nsenter", f"--net=/run/netns/{self.netns}", "podman", "--root", str(d / "root"),
               "--runroot", str(self.runroot), "--storage-driver", "overlay", "--tmpdir", str(d / "tmp"),
               "--network-config-dir", str(d / "networks"), "--cgroup-manager", "cgroupfs", *args]
        return subprocess.run(cmd, capture_output=True, text=True, env=self.env(), timeout=timeout)

    def inside(self, *cmd: str, timeout: float = 10) -> subprocess.CompletedProcess[str]:
        """A command in Podman's network namespace (where its bridge and published ports are)."""
        return subprocess.run(["nsenter", f"--net=/run/netns/{self.netns}", *cmd], capture_output=True, text=True,
                              timeout=timeout)


def make(folder: Path, ukrun: str) -> Podman:
    folder = folder.resolve()
    tag = hashlib.sha256(str(folder).encode()).hexdigest()[:8]
    runroot = Path(f"/run/ukrun-test-podman-{tag}")
    for sub in (folder / "root", runroot, folder / "tmp", folder / "networks"):
        sub.mkdir(parents=True, exist_ok=True)
    (folder / "containers.conf").write_text(CONF.format(dir=folder, runtimes=runtimes(ukrun), subnet=SUBNET))
    (folder / "storage.conf").write_text(STORAGE.format(dir=folder, runroot=runroot))
    (folder / "registries.conf").write_text("")
    netns = f"ukpm-{tag}"
    subprocess.run(["ip", "netns", "del", netns], check=False, capture_output=True)  # a crashed run's
    subprocess.run(["ip", "netns", "add", netns], check=True, capture_output=True)
    subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True, capture_output=True)
    return Podman(folder, netns, runroot)


def remove(p: Podman) -> None:
    """Removes every container and image, resets the storage (unmounting its layers), then the
    namespace and the folder."""
    p.podman("rm", "--all", "--force", "--time", "0", timeout=120)
    p.podman("system", "reset", "--force", timeout=120)
    subprocess.run(["ip", "netns", "del", p.netns], check=False, capture_output=True)
    from testbed import host

    for folder in (p.runroot, p.dir):
        host.unmount_below(folder)
        subprocess.run(["rm", "-rf", "--one-file-system", str(folder)], check=True)


def leftovers(p: Podman) -> list[str]:
    """What Podman's containers left: containers and their rootfs mounts."""
    ids = p.podman("ps", "-aq", "--no-trunc").stdout.split()
    left = [f"container {c}" for c in ids]
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    left += [f"mount {m}" for m in points if m.startswith((f"{p.dir}/", f"{p.runroot}/")) and m.endswith("/merged")]
    return left
