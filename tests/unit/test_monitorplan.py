"""Golden plans for urunc v0.8.1's `[monitors.<name>]` options (runtime.monitorplan): vhost, socket_path and
data_path, checked against each monitor's documentation.

Sources: qemu `docs/system/invocation` (-netdev tap,...,vhost=on; -chardev socket,path=,server=on,wait=off;
-mon chardev=,mode=control; -L), `docs/interop/qmp-spec`; firecracker `docs/getting-started.md` (--api-sock,
--config-file, --no-api); cloud-hypervisor `docs/api.md` and `--help` (--api-socket path=<path>; values in
double quotes hold commas, its option_parser crate); urunc's CHANGELOG (v0.8.0 vhost, v0.8.1 control sockets)
and `docs/configuration.md` (data_path: qemu's data files).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.unit.test_plan import BINARIES, BLOCK_ROOT, STATE, TAP, facts, networked
from ukrun.errors import PlanError, UkrunError
from ukrun.runtime.plan import Facts, plan

SOCKETS = "/run/uk-sockets"


def configured(f: Facts, *, vhost: bool = False, vhost_net: bool = False, socket_dir: str = "",
               data_path: str = "") -> Facts:
    return f._replace(monitor=f.monitor._replace(vhost=vhost, vhost_net=vhost_net, socket_dir=socket_dir,
                                                 data_path=data_path))


def test_vhost_on_qemu_where_the_host_has_vhost_net() -> None:
    f = networked("linux", "qemu", rootfs=BLOCK_ROOT, mount_rootfs=True)
    p = plan(configured(f, vhost=True, vhost_net=True))
    assert f"tap,id=net0,ifname={TAP},script=no,downscript=no,vhost=on" in p.argv and not p.notes[1:]


def test_vhost_without_dev_vhost_net_keeps_qemus_backend_and_says_why() -> None:
    p = plan(configured(networked("linux", "qemu", rootfs=BLOCK_ROOT, mount_rootfs=True), vhost=True))
    assert f"tap,id=net0,ifname={TAP},script=no,downscript=no" in p.argv
    assert ("[monitors.qemu] vhost: this host has no /dev/vhost-net (load the vhost_net module), so the guest's "
            "network uses qemu's own virtio-net backend") in p.notes
    fc = plan(configured(networked("linux", "firecracker", rootfs=BLOCK_ROOT, mount_rootfs=True), vhost=True))
    assert "[monitors.firecracker] vhost is qemu's option: firecracker has no vhost-net switch, and it is not used" \
        in fc.notes


def test_qemu_serves_qmp_on_the_containers_own_socket() -> None:
    p = plan(configured(facts("linux", "qemu", rootfs=BLOCK_ROOT, mount_rootfs=True), socket_dir=SOCKETS))
    sock = f"{SOCKETS}/default.c1.sock"
    i = p.argv.index("-chardev")
    assert p.argv[i:i + 4] == ("-chardev", f"socket,id=qmp,path={sock},server=on,wait=off", "-mon",
                               "chardev=qmp,mode=control")
    assert p.control_socket == sock and p.to_json()["control_socket"] == sock
    other = plan(configured(facts("linux", "qemu", rootfs=BLOCK_ROOT, mount_rootfs=True), socket_dir=SOCKETS)
                 ._replace(namespace="k8s.io"))
    assert other.control_socket == f"{SOCKETS}/k8s.io.c1.sock"  # containerd's IDs are unique per namespace only


def test_a_comma_in_the_socket_folder_is_escaped_for_qemu() -> None:
    p = plan(configured(facts("linux", "qemu", rootfs=BLOCK_ROOT, mount_rootfs=True), socket_dir="/run/a,b"))
    assert "socket,id=qmp,path=/run/a,,b/default.c1.sock,server=on,wait=off" in p.argv


def test_firecracker_serves_its_api_instead_of_no_api() -> None:
    p = plan(configured(facts("linux", "firecracker", rootfs=BLOCK_ROOT, mount_rootfs=True), socket_dir=SOCKETS))
    assert list(p.argv) == [BINARIES["firecracker"], "--api-sock", f"{SOCKETS}/default.c1.sock", "--config-file",
                            f"{STATE}/firecracker.json", "--no-seccomp"]
    assert json.loads(dict(p.files)[f"{STATE}/firecracker.json"])["boot-source"]["boot_args"] == p.cmdline


def test_cloud_hypervisor_gets_its_api_socket_in_double_quotes() -> None:
    p = plan(configured(facts("linux", "cloud-hypervisor", rootfs=BLOCK_ROOT, mount_rootfs=True),
                        socket_dir="/run/a,b"))
    i = p.argv.index("--api-socket")
    assert p.argv[i + 1] == 'path="/run/a,b/default.c1.sock"'
    refusal = (r"^the monitor's control socket /run/\"x/default.c1.sock holds a double quote, which "
               r"cloud-hypervisor's option parser cannot carry \(--api-socket path= of cloud-hypervisor\): "
               r"set a \[monitors.cloud-hypervisor\] socket_path")
    with pytest.raises(UkrunError, match=refusal):
        plan(configured(facts("linux", "cloud-hypervisor", rootfs=BLOCK_ROOT, mount_rootfs=True),
                        socket_dir='/run/"x'))


def test_solo5_has_no_control_socket_and_a_socket_path_too_long_is_refused() -> None:
    p = plan(configured(facts("mirage", "spt", args=()), socket_dir=SOCKETS))
    assert "[monitors.spt] socket_path: spt has no control socket, and none is made" in p.notes
    assert p.control_socket == ""
    with pytest.raises(PlanError, match=r"the control socket /run/x+/default.c1.sock is 110 bytes long, and a unix "
                                        r"socket's path holds at most 107: set a shorter \[monitors.qemu\] "
                                        "socket_path"):
        plan(configured(facts("linux", "qemu", rootfs=BLOCK_ROOT, mount_rootfs=True), socket_dir="/run/" + "x" * 89))


def test_data_path_is_qemus_data_folder() -> None:
    p = plan(configured(facts("linux", "qemu", rootfs=BLOCK_ROOT, mount_rootfs=True), data_path="/opt/urunc/share"))
    i = p.argv.index("-L")
    assert p.argv[i + 1] == "/opt/urunc/share/qemu"
    fc = plan(configured(facts("linux", "firecracker", rootfs=BLOCK_ROOT, mount_rootfs=True), data_path="/opt/x"))
    assert "-L" not in fc.argv and any("data_path is for qemu's data files" in n for n in fc.notes)


def test_create_frees_only_a_leftover_socket_and_delete_removes_only_a_socket(tmp_path: Path) -> None:
    import socket

    from ukrun.runtime.create import _free_control_socket
    from ukrun.runtime.verbs import remove_socket

    path = tmp_path / "default.c1.sock"
    with pytest.raises(UkrunError, match="does not exist: create it"):
        _free_control_socket(str(tmp_path / "absent" / "x.sock"))
    path.write_text("the operator's")
    with pytest.raises(UkrunError, match="is taken by something that is not a socket"):
        _free_control_socket(str(path))
    remove_socket(str(path))
    assert path.read_text() == "the operator's"
    path.unlink()
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))
    _free_control_socket(str(path))  # a leftover of this container's name
    assert not path.exists()
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))
    remove_socket(str(path))
    assert not path.exists()
