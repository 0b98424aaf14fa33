"""Kubernetes' path: containerd's real CRI plugin with CNI bridge networking and a `ukrun` runtime handler
(runc v2 shim, BinaryName), driven through the CRI gRPC API as the kubelet drives it, from the host:
- a pod of a unikernel (static network mode, its port published) and an ordinary container: both answer
  TCP requests sent to the pod's IP;
- a pod of two unikernels (the linux guest, and Unikraft's HTTP server when it is built, else a second
  linux guest) and an ordinary container, each unikernel with its own ports (the kubelet's record of the
  container's ports, a pod annotation naming the container): each answers at the pod's IP on its ports,
  the ordinary container on its own, the ordinary container reaches both over 127.0.0.1 and the linux
  guest reaches it at the pod's address; removing the containers leaves the pod's namespace as CNI made
  it."""

from __future__ import annotations

import importlib
import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import grpc
import pytest

from testbed import containerd as ctd
from testbed import cri, guest, images
from testbed import host as tbhost
from testbed.unikernels import UNIKRAFT
from tests.integration.conftest import write_ukrun_config
from tests.integration.runner import UKRUN
from tests.integration.test_pod_ports import APP as POD_APP
from ukrun import host
from ukrun.image.build import Entry, build_unikernel_image
from ukrun.unikernel import UnikernelConfig

NS = "k8s.io"
GUEST = "ukrun.test/net-guest:1"
APP = """#!/bin/sh
while true; do echo "guest kernel $(/bin/busybox uname -r)" | /bin/busybox nc -l -p 8080; done
"""


@pytest.fixture(scope="session")
def pb(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModuleType, ModuleType]:
    """The CRI stubs, generated from tests/integration/cri/cri.proto for this run (never committed)."""
    out = tmp_path_factory.mktemp("cri-stubs")
    proto = Path(__file__).parent / "cri"
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{proto}", f"--python_out={out}",
                    f"--grpc_python_out={out}", str(proto / "cri.proto")], check=True)
    sys.path.insert(0, str(out))
    return importlib.import_module("cri_pb2"), importlib.import_module("cri_pb2_grpc")


@pytest.fixture(scope="session")
def cri_images(image_dir: Path) -> tuple[Path, Path]:
    pause = images.raw_image(image_dir / "cri", cri.PAUSE, [[
        Entry("/bin/busybox", source=Path("/bin/busybox"), mode=0o755), Entry("/bin/sh", symlink="busybox"),
    ]], cmd=("/bin/busybox", "sleep", "2147483647"))
    return pause, guest.linux_image(image_dir / "cri", GUEST, APP)


@pytest.fixture
def node(daemon: ctd.Daemon, tmp_path: Path, cri_images: tuple[Path, Path]) -> Iterator[ctd.Daemon]:
    config = write_ukrun_config(tmp_path / "ukrun.toml", tmp_path / "state")
    runc_root = Path("/run/containerd/runc") / NS  # where the shim keeps the runtime's state for k8s.io
    ours = not runc_root.exists()
    d = cri.start(daemon.version, tmp_path / "d", UKRUN, env={"UKRUN_CONFIG": str(config)})
    try:
        for tar in cri_images:
            d.import_image(NS, tar, "blockfile")
        yield d
    finally:
        cri.stop(d)
        tbhost.unmount_below(tmp_path)
        if ours:
            shutil.rmtree(runc_root, ignore_errors=True)


# Pod annotations, as a cluster user sets them (the handler passes io.ukrun.* through to every container):
# the unikernel on the pod's private link with its port published; the pod's other containers keep theirs.
STATIC = {"io.ukrun.network": "static", "io.ukrun.network.publish": "8080/tcp"}
SIDECAR = ["/bin/busybox", "sh", "-c", "while true; do echo sidecar | /bin/busybox nc -l -p 9090; done"]


def _ask(ip: str, port: int, expect: str, deadline: float) -> str:
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((ip, port), timeout=2) as s:
                data = s.recv(200).decode()
                if expect in data:
                    return data.strip()
        except OSError:
            pass
        time.sleep(0.5)
    return ""


def test_a_unikernel_pod_answers_on_its_pod_ip(node: ctd.Daemon, tmp_path: Path,
                                               pb: tuple[ModuleType, ModuleType]) -> None:
    api, stubs = pb
    channel = grpc.insecure_channel(f"unix://{node.address}")
    rt = stubs.RuntimeServiceStub(channel)
    logs = tmp_path / "logs"
    logs.mkdir()
    sandbox = api.PodSandboxConfig(
        metadata=api.PodSandboxMetadata(name="uk", uid="uid-uk", namespace="default"), hostname="uk",
        log_directory=str(logs), linux=api.LinuxPodSandboxConfig(), annotations=STATIC)
    sid = ""
    containers: dict[str, str] = {}
    try:
        assert rt.Version(api.VersionRequest()).runtime_name == "containerd"
        sid = rt.RunPodSandbox(api.RunPodSandboxRequest(config=sandbox, runtime_handler="ukrun")).pod_sandbox_id
        ip = rt.PodSandboxStatus(api.PodSandboxStatusRequest(pod_sandbox_id=sid)).status.network.ip
        assert ip.startswith("198.51.100."), ip
        for name, image, command in (("guest", GUEST, []), ("sidecar", cri.PAUSE, SIDECAR)):
            config = api.ContainerConfig(metadata=api.ContainerMetadata(name=name), image=api.ImageSpec(image=image),
                                         command=command, log_path=f"{name}.log")
            containers[name] = rt.CreateContainer(api.CreateContainerRequest(
                pod_sandbox_id=sid, config=config, sandbox_config=sandbox)).container_id
            rt.StartContainer(api.StartContainerRequest(container_id=containers[name]))
        deadline = time.monotonic() + 90
        answer = _ask(ip, 8080, "guest kernel", deadline)
        assert answer == f"guest kernel {guest.kernel_release()}", answer
        assert _ask(ip, 9090, "sidecar", deadline) == "sidecar"  # the pod's other container keeps its traffic
        for cid in containers.values():
            status = rt.ContainerStatus(api.ContainerStatusRequest(container_id=cid)).status
            assert status.state == api.CONTAINER_RUNNING, status
    finally:  # as a kubelet tears a pod down; a failure here fails the test too
        for cid in containers.values():
            rt.StopContainer(api.StopContainerRequest(container_id=cid, timeout=5))
            rt.RemoveContainer(api.RemoveContainerRequest(container_id=cid))
        if sid:
            rt.StopPodSandbox(api.StopPodSandboxRequest(pod_sandbox_id=sid))
            rt.RemovePodSandbox(api.RemovePodSandboxRequest(pod_sandbox_id=sid))
        channel.close()
    assert not [m for m in host.mountinfo() if m.mount_point.startswith(str(tmp_path / "state"))]
    taps = subprocess.run(["ip", "-o", "link", "show", "type", "tun"], capture_output=True, text=True).stdout
    assert "tapuk" not in taps


POD_GUEST, C_HTTP = "ukrun.test/pod-guest:1", "ukrun.test/c-http:1"
HELLO = "Hello from Unikraft!"
# The ordinary container: its own listener on 9090, and on 9091 what the unikernels answered it on
# 127.0.0.1 ({web}: the command that asks the web unikernel on 8080).
POD_SIDECAR = """b=/bin/busybox
(while true; do echo sidecar | $b nc -l -p 9090; done) &
while true; do
  a=$($b nc -w 3 127.0.0.1 8081 </dev/null); w=$({web})
  echo "localhost:8081 [$a] localhost:8080 [$w]" | $b nc -l -p 9091
done
"""


@pytest.fixture(scope="session")
def pod_images(image_dir: Path) -> tuple[Path, Path | None]:
    """The linux guest of test_pod_ports, and Unikraft's c-http when it is built (None otherwise)."""
    linux = guest.linux_image(image_dir / "cri-pod", POD_GUEST, POD_APP)
    kernel = UNIKRAFT / "c-http_qemu-x86_64"
    if not kernel.exists():
        return linux, None
    out = image_dir / "cri-pod" / "c-http.tar"
    config = UnikernelConfig("unikraft", "qemu", "/unikernel/kernel", version="0.16.3")
    build_unikernel_image(out, C_HTTP, config, kernel, cmd=("c-http",))  # CRI wants a command; c-http ignores it
    return linux, out


def _http_get(ip: str, port: int, expect: str, deadline: float) -> str:
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((ip, port), timeout=3) as s:
                s.sendall(b"GET / HTTP/1.0\r\n\r\n")
                data = b""
                while chunk := s.recv(4096):
                    data += chunk
            if expect in data.decode(errors="replace"):
                return expect
        except OSError:
            pass
        time.sleep(0.5)
    return ""


def _log(logs: Path, name: str) -> str:
    path = logs / f"{name}.log"
    return path.read_text(errors="replace")[-2000:] if path.exists() else ""


def _pod_netns(rt: ModuleType, api: ModuleType, sid: str) -> str:
    info = json.loads(rt.PodSandboxStatus(api.PodSandboxStatusRequest(pod_sandbox_id=sid, verbose=True)).info["info"])
    return str(next(n["path"] for n in info["runtimeSpec"]["linux"]["namespaces"] if n["type"] == "network"))


def _ukrun_in(netns_path: str) -> list[str]:
    """ukrun's taps, nftables tables and private-link addresses in a namespace, as the tools show them."""
    def inside(*cmd: str) -> str:
        return subprocess.run(["nsenter", f"--net={netns_path}", *cmd], capture_output=True, text=True).stdout

    return ([line for line in inside("ip", "-o", "link").splitlines() if "tapuk" in line]
            + [line for line in inside("nft", "list", "tables").splitlines() if "ukrun_" in line]
            + [line for line in inside("ip", "-o", "-4", "addr").splitlines() if " 100.127." in line])


def test_a_pod_of_two_unikernels_and_an_ordinary_container_each_on_its_own_ports(
        node: ctd.Daemon, tmp_path: Path, pb: tuple[ModuleType, ModuleType],
        pod_images: tuple[Path, Path | None]) -> None:
    api, stubs = pb
    c_http = pod_images[1]
    for tar in (t for t in pod_images if t is not None):
        node.import_image(NS, tar, "blockfile")
    channel = grpc.insecure_channel(f"unix://{node.address}")
    rt = stubs.RuntimeServiceStub(channel)
    logs = tmp_path / "logs"
    logs.mkdir()
    # The pod's annotation names the web unikernel's ports; the linux guest's come from its container's ports.
    sandbox = api.PodSandboxConfig(
        metadata=api.PodSandboxMetadata(name="pair", uid="uid-pair", namespace="default"), hostname="pair",
        log_directory=str(logs), linux=api.LinuxPodSandboxConfig(), annotations={"io.ukrun.ports.web": "8080/tcp"})
    sid = ""
    containers: dict[str, str] = {}
    netns_path = ""
    try:
        sid = rt.RunPodSandbox(api.RunPodSandboxRequest(config=sandbox, runtime_handler="ukrun")).pod_sandbox_id
        ip = rt.PodSandboxStatus(api.PodSandboxStatusRequest(pod_sandbox_id=sid)).status.network.ip
        netns_path = _pod_netns(rt, api, sid)
        env = [api.KeyValue(key="POD_IP", value=ip)]
        kubelet_ports = {"io.kubernetes.container.ports": json.dumps([{"containerPort": 8081, "protocol": "TCP"}])}
        web = ("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | $b nc -w 3 127.0.0.1 8080 | $b tail -n 1" if c_http  # the body
               else "$b nc -w 3 127.0.0.1 8080 </dev/null")  # (busybox's wget needs the NSS this image lacks)
        specs = [
            ("guest", POD_GUEST, [], [*env, api.KeyValue(key="PORT", value="8081")], kubelet_ports),
            ("web", C_HTTP if c_http else POD_GUEST, [], [*env, api.KeyValue(key="PORT", value="8080")], {}),
            ("sidecar", cri.PAUSE, ["/bin/busybox", "sh", "-c", POD_SIDECAR.format(web=web)], [], {}),
        ]
        for name, image, command, envs, annotations in specs:
            config = api.ContainerConfig(metadata=api.ContainerMetadata(name=name), image=api.ImageSpec(image=image),
                                         command=command, envs=envs, annotations=annotations, log_path=f"{name}.log")
            containers[name] = rt.CreateContainer(api.CreateContainerRequest(
                pod_sandbox_id=sid, config=config, sandbox_config=sandbox)).container_id
            rt.StartContainer(api.StartContainerRequest(container_id=containers[name]))
        said = "the sidecar said: sidecar"
        linux_answer = f"guest kernel {guest.kernel_release()} on 8081; {said}"
        boot = time.monotonic() + 240  # two guests boot under TCG at once
        assert _ask(ip, 8081, said, boot) == linux_answer  # it called the sidecar at the pod's address
        web_answer = HELLO if c_http else f"guest kernel {guest.kernel_release()} on 8080; {said}"
        got = _http_get(ip, 8080, HELLO, boot) if c_http else _ask(ip, 8080, said, boot)
        assert got == web_answer, (got, _log(logs, "web"))
        deadline = time.monotonic() + 60
        assert _ask(ip, 9090, "sidecar", deadline) == "sidecar"  # the ordinary container's own listener
        local = ""
        while time.monotonic() < deadline and not (linux_answer in local and web_answer in local):
            local = _ask(ip, 9091, "localhost:8081", deadline)
        assert local == f"localhost:8081 [{linux_answer}] localhost:8080 [{web_answer}]", (local, _log(logs, "sidecar"))
        for cid in containers.values():
            status = rt.ContainerStatus(api.ContainerStatusRequest(container_id=cid)).status
            assert status.state == api.CONTAINER_RUNNING, status
        assert len(_ukrun_in(netns_path)) == 6, _ukrun_in(netns_path)  # a tap, a table, an address each
    finally:  # as a kubelet tears a pod down; a failure here fails the test too
        for cid in containers.values():
            rt.StopContainer(api.StopContainerRequest(container_id=cid, timeout=5))
            rt.RemoveContainer(api.RemoveContainerRequest(container_id=cid))
        left = _ukrun_in(netns_path) if netns_path else []
        if sid:
            rt.StopPodSandbox(api.StopPodSandboxRequest(pod_sandbox_id=sid))
            rt.RemovePodSandbox(api.RemovePodSandboxRequest(pod_sandbox_id=sid))
        channel.close()
    assert left == [], left  # the pod's namespace, before CNI tears it down, holds nothing of ukrun's
    assert not [m for m in host.mountinfo() if m.mount_point.startswith(str(tmp_path / "state"))]
    taps = subprocess.run(["ip", "-o", "link", "show", "type", "tun"], capture_output=True, text=True).stdout
    assert "tapuk" not in taps
