"""The monitor's own options from `[monitors.<name>]`, decided: a pure part of `runtime.plan`.

urunc v0.8's keys beside `path`, `default_memory_mb` and `default_vcpus` (its `docs/configuration.md`
and CHANGELOG):
- `vhost = true`: qemu's tap backend with `vhost=on` (qemu's `-netdev tap` documentation), which needs
  the host's `/dev/vhost-net` (the vhost_net module). Without that device qemu would fail to start, so
  the network keeps qemu's own backend and a note says why. Other monitors have no such switch.
- `socket_path`: a control socket per container (urunc v0.8.1): qemu's QMP (`-chardev socket,...,
  server=on,wait=off` and `-mon chardev=...,mode=control`, qemu's `docs/interop/qmp-spec`), firecracker's
  API socket (`--api-sock`, in place of `--no-api`; its `docs/getting-started.md`), cloud-hypervisor's
  (`--api-socket path=`, its `docs/api.md`). The key names a folder, the operator's: each container's
  socket is `<folder>/<namespace>.<container ID>.sock`, so two containers never share one (containerd's
  IDs are unique per namespace only; without containerd, as under Podman, `<container ID>.sock`). ukrun
  creates nothing else there and removes only that socket. A socket path must fit a unix socket's
  108-byte `sun_path`. Solo5's tenders and hyperlight-unikraft have no control socket: a note says so.
- `data_path`: where qemu's data files (firmware, option ROMs) are: `-L <data_path>/qemu`, the folder
  urunc binds over `/usr/share/qemu` for its monitor.
"""

from __future__ import annotations

import posixpath

from ukrun.errors import PlanError
from ukrun.tuples import NamedTuple

SUN_PATH = 108  # sockaddr_un's sun_path, with its terminating NUL
VHOST_DEVICE = "/dev/vhost-net"


class MonitorOptions(NamedTuple):
    vhost: bool = False
    control_socket: str = ""
    data_path: str = ""
    notes: tuple[str, ...] = ()


def options(monitor: str, control: bool, vhost: bool, vhost_net: bool, socket_dir: str, data_path: str,
            container: str, namespace: str, networked: bool) -> MonitorOptions:
    """`control`: the monitor has a control socket; `vhost_net`: the host has /dev/vhost-net."""
    notes: list[str] = []
    key = f"[monitors.{monitor}]"
    use_vhost = False
    if vhost and monitor != "qemu":
        notes.append(f"{key} vhost is qemu's option: {monitor} has no vhost-net switch, and it is not used")
    elif vhost and networked:
        use_vhost = vhost_net
        if not vhost_net:
            notes.append(f"{key} vhost: this host has no {VHOST_DEVICE} (load the vhost_net module), so the "
                         "guest's network uses qemu's own virtio-net backend")
    sock = ""
    if socket_dir and not control:
        notes.append(f"{key} socket_path: {monitor} has no control socket, and none is made")
    elif socket_dir:
        sock = posixpath.join(socket_dir, f"{namespace}.{container}.sock" if namespace else f"{container}.sock")
        if len(sock.encode()) >= SUN_PATH:
            raise PlanError(f"the control socket {sock} is {len(sock.encode())} bytes long, and a unix socket's "
                            f"path holds at most {SUN_PATH - 1}: set a shorter {key} socket_path")
    data = ""
    if data_path and monitor != "qemu":
        notes.append(f"{key} data_path is for qemu's data files: {monitor} reads none, and it is not used")
    elif data_path:
        data = posixpath.join(data_path, "qemu")
    return MonitorOptions(use_vhost, sock, data, tuple(notes))
