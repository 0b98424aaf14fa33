"""Kubernetes' exec through containerd's real CRI plugin and the `ukrun` runtime handler, as the kubelet
calls it: `ExecSync` (an exec probe) and `Exec` (kubectl exec, its stream opened as a WebSocket) run in a
Linux guest's VM; on a Unikraft pod an exec probe fails at once with the reason, and an update of its
resources applies the CPU limit and refuses a new memory size."""

from __future__ import annotations

import time
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import pytest

from testbed import containerd as ctd
from testbed import guest, wsexec
from testbed.unikernels import UNIKRAFT, need
from tests.integration.test_cri import GUEST, NS, cri_images, node, pb  # noqa: F401 - fixtures
from ukrun.image.build import build_unikernel_image
from ukrun.runtime import state as st
from ukrun.unikernel import UnikernelConfig

UNIKRAFT_IMAGE = "ukrun.test/c-http:1"


def _pod(api: Any, rt: Any, name: str, logs: Path) -> tuple[str, Any]:
    sandbox = api.PodSandboxConfig(metadata=api.PodSandboxMetadata(name=name, uid=f"uid-{name}", namespace="default"),
                                   hostname=name, log_directory=str(logs), linux=api.LinuxPodSandboxConfig())
    sid = rt.RunPodSandbox(api.RunPodSandboxRequest(config=sandbox, runtime_handler="ukrun")).pod_sandbox_id
    return sid, sandbox


def _container(api: Any, rt: Any, sid: str, sandbox: Any, image: str) -> str:
    config = api.ContainerConfig(metadata=api.ContainerMetadata(name="app"), image=api.ImageSpec(image=image),
                                 log_path="app.log")
    cid: str = rt.CreateContainer(api.CreateContainerRequest(pod_sandbox_id=sid, config=config,
                                                             sandbox_config=sandbox)).container_id
    rt.StartContainer(api.StartContainerRequest(container_id=cid))
    return cid


def _teardown(api: Any, rt: Any, sid: str, cid: str) -> None:
    if cid:
        rt.StopContainer(api.StopContainerRequest(container_id=cid, timeout=5))
        rt.RemoveContainer(api.RemoveContainerRequest(container_id=cid))
    if sid:
        rt.StopPodSandbox(api.StopPodSandboxRequest(pod_sandbox_id=sid))
        rt.RemovePodSandbox(api.RemovePodSandboxRequest(pod_sandbox_id=sid))


def test_exec_sync_and_exec_run_in_a_linux_guest_in_a_pod(node: ctd.Daemon, tmp_path: Path,  # noqa: F811
                                                          pb: tuple[ModuleType, ModuleType]) -> None:  # noqa: F811
    api, stubs = pb
    channel = grpc.insecure_channel(f"unix://{node.address}")
    rt = stubs.RuntimeServiceStub(channel)
    sid = cid = ""
    try:
        sid, sandbox = _pod(api, rt, "ex", tmp_path)
        cid = _container(api, rt, sid, sandbox, GUEST)
        # the first exec waits for the guest to boot and start its exec agent (seconds under TCG)
        probe = rt.ExecSync(api.ExecSyncRequest(container_id=cid, timeout=120, cmd=[
            "/bin/sh", "-c", "echo probe $HOSTNAME $(/bin/busybox uname -r); echo e >&2; exit 3"]))
        assert (probe.exit_code, probe.stderr) == (3, b"e\n"), probe
        assert probe.stdout.decode() == f"probe ex {guest.kernel_release()}\n"
        t0 = time.monotonic()
        again = rt.ExecSync(api.ExecSyncRequest(container_id=cid, timeout=60, cmd=["/bin/busybox", "true"]))
        took = time.monotonic() - t0
        assert again.exit_code == 0
        url = rt.Exec(api.ExecRequest(container_id=cid, stdout=True, stderr=True, cmd=[
            "/bin/sh", "-c", "echo streamed; echo to-stderr >&2; exit 4"])).url
        streamed = wsexec.run(url)
        assert (streamed.stdout, streamed.stderr, streamed.exit_code) == (b"streamed\n", b"to-stderr\n", 4), (
            streamed.stdout, streamed.stderr, streamed.status)
        print(f"ExecSync of a booted guest: {took * 1000:.0f} ms")
    finally:
        _teardown(api, rt, sid, cid)
        channel.close()


def test_an_exec_probe_on_a_unikraft_pod_fails_at_once_naming_the_reason(node: ctd.Daemon,  # noqa: F811
                                                                          tmp_path: Path,
                                                                          pb: tuple[ModuleType, ModuleType]  # noqa: F811
                                                                          ) -> None:
    kernel = need(UNIKRAFT / "c-http_qemu-x86_64")
    config = UnikernelConfig("unikraft", "qemu", "/unikernel/kernel", version="0.16.3")
    tar = tmp_path / "c-http.tar"
    build_unikernel_image(tar, UNIKRAFT_IMAGE, config, kernel, cmd=("c-http",))  # CRI needs a command
    node.import_image(NS, tar, "blockfile")
    api, stubs = pb
    channel = grpc.insecure_channel(f"unix://{node.address}")
    rt = stubs.RuntimeServiceStub(channel)
    sid = cid = ""
    try:
        sid, sandbox = _pod(api, rt, "uk", tmp_path)
        cid = _container(api, rt, sid, sandbox, UNIKRAFT_IMAGE)
        t0 = time.monotonic()
        with pytest.raises(grpc.RpcError) as refused:
            rt.ExecSync(api.ExecSyncRequest(container_id=cid, cmd=["/bin/true"], timeout=1))
        took = time.monotonic() - t0
        assert (f"exec is not possible in container {cid}: a Unikraft unikernel runs a single application and "
                "cannot start another process") in str(refused.value.details()), refused.value.details()
        record = st.load(Path("/run/containerd/runc") / NS, cid)
        quota = next(Path(g, "cpu.cfs_quota_us") for g in record.cgroups if Path(g, "cpu.cfs_quota_us").exists())
        rt.UpdateContainerResources(api.UpdateContainerResourcesRequest(
            container_id=cid, linux=api.LinuxContainerResources(cpu_period=100000, cpu_quota=40000)))
        assert quota.read_text().strip() == "40000"
        with pytest.raises(grpc.RpcError) as resized:
            rt.UpdateContainerResources(api.UpdateContainerResourcesRequest(
                container_id=cid, linux=api.LinuxContainerResources(memory_limit_in_bytes=1 << 30)))
        assert "a running guest cannot be resized to 1024 MiB" in str(resized.value.details())
        print(f"exec probe refused after {took * 1000:.0f} ms")
    finally:
        _teardown(api, rt, sid, cid)
        channel.close()
