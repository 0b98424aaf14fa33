"""A private containerd with its CRI plugin, CNI bridge networking and a `ukrun` runtime handler: what a
Kubernetes node runs, driven by the tests in place of the kubelet.

`restrict_oom_score_adj` keeps the pause container's oom_score_adj within what this process may set
(root here may not lower it: runc's init then dies writing -998). `handler(version, ukrun)` is the
runtime handler's configuration as the README's Kubernetes section
shows it, word for word (a test checks). The CNI bridge and its addresses (198.51.100.0/24, a
documentation range) exist only on this machine: the bridge in the host's namespace, the rest in the
pods' namespaces, and `stop` removes them.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from testbed import containerd as ctd

BRIDGE = "ukcni0"
SUBNET = "198.51.100.0/24"
PAUSE = "ukrun.test/pause:1"
CNI_BIN = "/usr/lib/cni"
POD_ANNOTATIONS = '["com.urunc.unikernel.*", "io.ukrun.*"]'
# and the kubelet's record of a container's `ports:` (network.ports)
CONTAINER_ANNOTATIONS = '["com.urunc.unikernel.*", "io.ukrun.*", "io.kubernetes.container.ports"]'

HANDLER = """\
[plugins."{plugin}".containerd.runtimes.ukrun]
  runtime_type = "io.containerd.runc.v2"
  pod_annotations = {pod}
  container_annotations = {container}
  [plugins."{plugin}".containerd.runtimes.ukrun.options]
    BinaryName = "{ukrun}"
"""
RUNTIME_PLUGIN = {"1.7": "io.containerd.grpc.v1.cri", "2": "io.containerd.cri.v1.runtime"}

CRI_1_7 = """
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{dir}/cni"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "blockfile"
    default_runtime_name = "runc"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
{handler}"""

CRI_2 = """
[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
[plugins."io.containerd.cri.v1.images"]
  snapshotter = "blockfile"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "{pause}"
[plugins."io.containerd.cri.v1.runtime"]
  restrict_oom_score_adj = true
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["{cni_bin}"]
    conf_dir = "{dir}/cni"
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
  [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
{handler}"""


def handler(version: str, ukrun: str) -> str:
    """The `ukrun` runtime handler of containerd's CRI plugin, for containerd 1.7 or 2.x."""
    return HANDLER.format(plugin=RUNTIME_PLUGIN[version], pod=POD_ANNOTATIONS, container=CONTAINER_ANNOTATIONS,
                          ukrun=ukrun)


def config_text(version: str, folder: Path, ukrun: str) -> str:
    base = ctd.config_text(folder, cri=True)
    if version != "1.7":
        base = base.replace("version = 2\n", "version = 3\n", 1)
    cri = (CRI_1_7 if version == "1.7" else CRI_2).format(
        pause=PAUSE, cni_bin=CNI_BIN, dir=folder, handler=_indent(handler(version, ukrun), 2))
    return base + cri


def _indent(text: str, n: int) -> str:
    return "".join(" " * n + line if line.strip() else line for line in text.splitlines(keepends=True))


def cni_config(folder: Path) -> None:
    conf = {
        "cniVersion": "1.0.0", "name": "ukrun-test",
        "plugins": [{"type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": False,
                     "ipam": {"type": "host-local", "ranges": [[{"subnet": SUBNET}]],
                              "routes": [{"dst": "0.0.0.0/0"}], "dataDir": str(folder / "cni-ipam")}}],
    }
    (folder / "cni").mkdir(parents=True, exist_ok=True)
    (folder / "cni" / "10-ukrun-test.conflist").write_text(json.dumps(conf, indent=1))


def start(version: str, folder: Path, ukrun: str, env: dict[str, str]) -> ctd.Daemon:
    folder.mkdir(parents=True, exist_ok=True)
    cni_config(folder.resolve())
    return ctd.start(version, folder, env=env, config=config_text(version, folder.resolve(), ukrun))


def stop(daemon: ctd.Daemon) -> None:
    ctd.stop(daemon.dir)
    subprocess.run(["ip", "link", "del", BRIDGE], check=False, capture_output=True)
