"""Network namespaces the tests make: a container's ("pod") and a client's, joined by a veth pair, with
addresses of the documentation range (192.0.2.0/24) by default, or the ones a unikernel with a fixed
address needs; they exist only inside these namespaces: no traffic of the tests ever leaves namespaces
they made. Removed by name, as made."""

from __future__ import annotations

import hashlib
import subprocess
from dataclasses import dataclass
from pathlib import Path

CONTAINER_IP, CLIENT_IP, PREFIX = "192.0.2.2", "192.0.2.1", 24


@dataclass(frozen=True)
class Pod:
    name: str  # the container's namespace
    client: str  # the client's namespace
    container_ip: str = CONTAINER_IP  # the container's eth0
    client_ip: str = CLIENT_IP  # the client's end, the container's gateway

    @property
    def path(self) -> str:
        return f"/run/netns/{self.name}"

    def run(self, *cmd: str, timeout: float = 10) -> subprocess.CompletedProcess[str]:
        """A command in the client's namespace."""
        return subprocess.run(["ip", "netns", "exec", self.client, *cmd], capture_output=True, text=True,
                              timeout=timeout)

    def inside(self, *cmd: str) -> subprocess.CompletedProcess[str]:
        """A command in the container's namespace."""
        return subprocess.run(["ip", "netns", "exec", self.name, *cmd], capture_output=True, text=True, timeout=10)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def make(seed: str, container_ip: str = CONTAINER_IP, client_ip: str = CLIENT_IP) -> Pod:
    tag = hashlib.sha256(seed.encode()).hexdigest()[:8]
    pod = Pod(f"ukpod-{tag}", f"ukcli-{tag}", container_ip, client_ip)
    remove(pod)
    _ip("netns", "add", pod.name)
    _ip("netns", "add", pod.client)
    _ip("link", "add", f"ukv-{tag}", "netns", pod.client, "type", "veth", "peer", "name", "eth0",
        "netns", pod.name)
    _ip("-n", pod.client, "addr", "add", f"{client_ip}/{PREFIX}", "dev", f"ukv-{tag}")
    _ip("-n", pod.client, "link", "set", f"ukv-{tag}", "up")
    _ip("-n", pod.name, "addr", "add", f"{container_ip}/{PREFIX}", "dev", "eth0")
    _ip("-n", pod.name, "link", "set", "eth0", "up")
    _ip("-n", pod.name, "link", "set", "lo", "up")  # as in a pod: 127.0.0.1 is the pod's own
    _ip("-n", pod.name, "route", "add", "default", "via", client_ip)
    return pod


def remove(pod: Pod) -> None:
    for name in (pod.name, pod.client):
        if Path(f"/run/netns/{name}").exists():
            subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)
