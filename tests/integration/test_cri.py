"""Kubernetes' path: containerd's real CRI plugin with CNI bridge networking and a `ukrun` runtime handler
(runc v2 shim, BinaryName), driven through the CRI gRPC API as the kubelet drives it. A pod of a unikernel
(static network mode, its port published) and an ordinary container: both answer TCP requests sent from
the host to the pod's IP."""

from __future__ import annotations

import importlib
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
from tests.integration.conftest import write_ukrun_config
from tests.integration.runner import UKRUN
from ukrun import host
from ukrun.image.build import Entry

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
