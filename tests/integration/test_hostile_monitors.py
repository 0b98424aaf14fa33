"""Hostile images and specs against the monitors' option grammars and the node's own network, through
`ctr`, the stock runc v2 shim and ukrun (hypervisors.base: no string reaches a monitor unescaped).

- A multiboot kernel's `-initrd` is a list of modules to qemu: an image whose initrd path is
  `/boot/m,<host file>` (a real file of the image, under a folder named `m,`) would make qemu load the host
  file into the guest. The kernel here is a tiny multiboot one that prints every module it was given; with
  a plain initrd it prints the image's module (so it would print a host file too), with the comma it is
  refused at create and no host content ever shows.
- cloud-hypervisor cannot run here: a recording stand-in, configured as its binary, keeps its argv, which
  is read back with cloud-hypervisor's own option grammar (tests/unit/test_monitor_args.py). A block path
  `/b,path=/dev/vda` stays one path, in the image; one with a double quote is refused.
- Static mode names the pod's interface in nftables rules: a name with a quote (which would end the rule's
  string) or a trailing * (a wildcard) is refused at create, and no tap or table is made.
- A spec naming the node's own network namespace is refused at create, and nothing of that namespace's
  links or tc changes. The node here is a private containerd run inside a network namespace the test makes
  (so that a failure could only ever touch that namespace); `ukrun plan` is also asked, in the real host
  namespace, about the test's own namespace (the host's) and PID 1's where the sandbox shows it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed import containerd as ctd
from testbed import hostile as hb
from testbed import netns
from testbed.hostile import INITRD, KERNEL, KERNEL_BYTES, file
from testbed.reliability import Hostile, Report
from tests.integration.conftest import SNAPSHOTTER, remove_containers, write_ukrun_config
from tests.integration.runner import UKRUN, Runner
from tests.integration.test_hostile import runtime_error
from tests.unit.test_monitor_args import ch_option

MODULE = b"image module: the initrd the image holds\n"


@pytest.fixture
def canary(tmp_path: Path) -> Path:
    """A host file, outside every image, that an escape would load into a guest."""
    path = tmp_path / "host" / "canary"
    path.parent.mkdir()
    path.write_text(f"host-canary-{uuid.uuid4().hex}\n")
    return path


@pytest.fixture
def bare(daemon: ctd.Daemon, ns: str, tmp_path: Path) -> Iterator[Runner]:
    r = Runner(daemon, ns, tmp_path / "runc", daemon.dir.parent / "ukrun-state")
    yield r
    remove_containers(r)


def _anonymous(text: str, *folders: Path) -> str:
    for folder in folders:
        text = text.replace(str(folder), "<host folder>")
    return text


def _multiboot_image(bare: Runner, tmp_path: Path, name: str, initrd: str, canary: Path) -> str:
    decoy = "/boot/m," + str(canary)  # the image's own file, so that ukrun resolves the path inside it
    layer = [file("/boot/mb", hb.multiboot_kernel()), file("/boot/m", MODULE), file(decoy, b"the image's decoy\n"),
             file("/urunc.json", hb.urunc_json(binary="/boot/mb", initrd=initrd, unikernelType="unikraft"))]
    image = f"ukrun/hostile-{name}:1"
    bare.daemon.import_image(bare.ns, hb.image(tmp_path / "img", image, [layer]), SNAPSHOTTER)
    return image


@pytest.mark.reliability("hostile")
def test_a_multiboot_initrd_list_never_loads_a_host_file(bare: Runner, tmp_path: Path, canary: Path,
                                                        report: Report) -> None:
    plain = _multiboot_image(bare, tmp_path, "multiboot-plain", "/boot/m", canary)
    proc = bare.run("mb0", "hello", image=plain, flags=("--rm",))
    assert proc.returncode == 0 and MODULE.decode() in proc.stdout, (proc.returncode, proc.stdout, proc.stderr)

    name = "initrd-list-naming-a-host-file"
    hostile = _multiboot_image(bare, tmp_path, name, "/boot/m," + str(canary), canary)
    proc = bare.run("mb1", "hello", image=hostile, flags=("--rm",))
    out = proc.stdout + proc.stderr
    assert canary.read_text() not in out, f"the guest was given the host file: {out[-2000:]}"
    assert proc.returncode != 0, f"the hostile image was accepted: {out[-2000:]}"
    sentence = runtime_error(proc.stderr)
    assert sentence == (f"the image's initrd '/boot/m,{canary}' (com.urunc.unikernel.initrd) holds a comma, which "
                        "qemu's -initrd cannot carry (a multiboot kernel reads a comma-separated list of modules "
                        "there, each with a command line after a space) (-initrd of qemu): rename it in the image")
    assert str(bare.state_root) not in out and str(bare.daemon.dir) not in out and "Traceback" not in out
    bare.ctr("containers", "delete", "mb1")
    bare.assert_clean("mb1")
    report.hostile.append(Hostile(name, "ctr", bare.daemon.version, _anonymous(sentence, canary.parent)))


STAND_IN = """#!/bin/sh
# cloud-hypervisor's stand-in: keeps its argv, NUL-separated, and exits as a guest that powered off would.
for a in "$@"; do printf '%s\\0' "$a"; done > {record}
"""


@pytest.fixture
def cloud_hypervisor(daemon: ctd.Daemon, tmp_path: Path) -> Iterator[Path]:
    """Where the stand-in configured as cloud-hypervisor's binary records its argv; the configuration
    is restored after."""
    if not os.path.exists("/dev/kvm"):
        pytest.skip("ukrun refuses cloud-hypervisor without /dev/kvm (it needs KVM), before any argv is made")
    record = tmp_path / "argv"
    stand_in = tmp_path / "cloud-hypervisor"
    stand_in.write_text(STAND_IN.format(record=record))
    stand_in.chmod(0o755)
    config = daemon.dir.parent / "ukrun.toml"
    before = config.read_text()
    with open(config, "a") as f:
        f.write(f'[monitors."cloud-hypervisor"]\npath = "{stand_in}"\n')
    try:
        yield record
    finally:
        config.write_text(before)


def _block_image(bare: Runner, tmp_path: Path, name: str, block: str) -> str:
    config = hb.urunc_json(hypervisor="cloud-hypervisor", block=block, blkMntPoint="/data")
    layer = [file(KERNEL, KERNEL_BYTES), file(INITRD, hb.INITRD_BYTES), file(block, b"the image's block\n"),
             file("/urunc.json", config)]
    image = f"ukrun/hostile-{name}:1"
    bare.daemon.import_image(bare.ns, hb.image(tmp_path / "img", image, [layer]), SNAPSHOTTER)
    return image


@pytest.mark.reliability("hostile")
def test_cloud_hypervisor_gets_each_path_as_one_value(bare: Runner, cloud_hypervisor: Path, tmp_path: Path,
                                                      report: Report) -> None:
    image = _block_image(bare, tmp_path, "ch-disk-path-with-its-own-path-option", "/b,path=/dev/vda")
    proc = bare.run("ch1", "/bin/sh", image=image, flags=("--rm",))
    assert proc.returncode == 0, proc.stderr
    argv = cloud_hypervisor.read_bytes().decode().split("\0")[:-1]
    disks = [argv[i + 1] for i, a in enumerate(argv) if a == "--disk"]
    assert len(disks) == 1, argv
    disk = ch_option(disks[0], {"path", "readonly", "id"})  # as cloud-hypervisor reads it, old and new
    assert disk["path"].endswith("/rootfs/b,path=/dev/vda") and disk["readonly"] == "off", disks
    bare.assert_clean("ch1")

    name = "ch-disk-path-with-a-double-quote"
    quoted = _block_image(bare, tmp_path, name, '/b",path="/dev/vda')
    cloud_hypervisor.unlink()
    proc = bare.run("ch2", "/bin/sh", image=quoted, flags=("--rm",))
    assert proc.returncode != 0 and not cloud_hypervisor.exists(), f"the monitor ran: {proc.stderr}"
    sentence = runtime_error(proc.stderr)
    assert sentence == ("the image's block '/b\",path=\"/dev/vda' (com.urunc.unikernel.block) holds a double "
                        "quote, which cloud-hypervisor's option parser cannot carry (--disk path= of "
                        "cloud-hypervisor): rename it in the image"), sentence
    bare.ctr("containers", "delete", "ch2")
    bare.assert_clean("ch2")
    report.hostile.append(Hostile(name, "ctr", bare.daemon.version, sentence))


# -- the node's own network namespace ----------------------------------------------------------------------------
def _links_and_tc(namespace: str) -> str:
    inside = ["ip", "netns", "exec", namespace]
    links = subprocess.run([*inside, "ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    tc = subprocess.run([*inside, "tc", "qdisc", "show"], capture_output=True, text=True, check=True).stdout
    return links + tc


@pytest.fixture
def node(daemon: ctd.Daemon, ns: str, tmp_path: Path, guest_image: Path) -> Iterator[tuple[Runner, netns.Pod]]:
    """A private containerd run inside a network namespace of the test's, standing in for a node."""
    pod = netns.make(ns + "-node")
    config = write_ukrun_config(tmp_path / "ukrun.toml", tmp_path / "state")
    private = ctd.start(daemon.version, tmp_path / "d", env={"UKRUN_CONFIG": str(config)}, netns=pod.path)
    try:
        r = Runner(private, ns, tmp_path / "runc", tmp_path / "state")
        private.import_image(ns, guest_image, SNAPSHOTTER)
        yield r, pod
        remove_containers(r)
    finally:
        ctd.stop(private.dir)
        netns.remove(pod)


@pytest.mark.reliability("hostile")
def test_the_nodes_own_network_namespace_is_refused(node: tuple[Runner, netns.Pod], report: Report) -> None:
    r, pod = node
    # The veth's carrier comes up a moment after the pod is made: the node's state is taken once it has.
    assert ctd.wait_for(lambda: "NO-CARRIER" not in _links_and_tc(pod.name), 10), _links_and_tc(pod.name)
    before = _links_and_tc(pod.name)
    for i, path in enumerate((f"/proc/{r.daemon.pid}/ns/net", pod.path)):  # a node process's, and a bind of it
        cid = f"n{i}"
        proc = r.run(cid, "/bin/sh", "/app/run.sh", "exit", "x", "0",
                     flags=("--rm", "--with-ns", f"network:{path}"))
        assert proc.returncode != 0, f"a container got the node's network: {proc.stdout[-2000:]}"
        sentence = runtime_error(proc.stderr)
        assert sentence == (f"the spec's network namespace {path} is ukrun's own network namespace, not a "
                            "container's: the guest would take over the node's interface; give the container a "
                            "namespace of its own (a pod's, or one made with `ip netns add NAME` and named as "
                            "/run/netns/NAME)"), sentence
        assert _links_and_tc(pod.name) == before, "the node's links or tc changed"
        r.ctr("containers", "delete", cid)
        r.assert_clean(cid)
    report.hostile.append(Hostile("spec-names-the-nodes-network-namespace", "ctr", r.daemon.version,
                                  sentence.replace(pod.path, "/run/netns/<node>")))


# -- a pod interface named for nftables --------------------------------------------------------------------------
@pytest.fixture
def pod(ns: str) -> Iterator[netns.Pod]:
    made = netns.make(ns + "-up")
    try:
        yield made
    finally:
        netns.remove(made)


def _rename_uplink(pod: netns.Pod, name: str) -> None:
    """The pod's eth0 renamed (as a process of the pod with CAP_NET_ADMIN may), its default route put back."""
    for args in (("link", "set", "eth0", "down"), ("link", "set", "eth0", "name", name), ("link", "set", name, "up"),
                 ("route", "add", "default", "via", netns.CLIENT_IP)):
        subprocess.run(["ip", "-n", pod.name, *args], check=True, capture_output=True)


@pytest.mark.reliability("hostile")
@pytest.mark.parametrize(("name", "what"), [('up"x', "quote"), ("up*", "wildcard")])
def test_static_mode_refuses_an_uplink_whose_name_nftables_would_misread(
        bare: Runner, pod: netns.Pod, guest_image: Path, report: Report, name: str, what: str) -> None:
    """Static mode's nftables rules name the pod's interface between quotes: a quote in its name would end the
    string there (what follows would be read as rules), a trailing * would make a wildcard of it (DNAT and
    masquerading on every interface whose name it begins). Create refuses such a name; no tap, no table."""
    bare.daemon.import_image(bare.ns, guest_image, SNAPSHOTTER)
    _rename_uplink(pod, name)
    cid = f"nft-{what}"
    proc = bare.run(cid, "/bin/sh", "/app/run.sh", "exit", "x", "0",
                    flags=("--rm", "--with-ns", f"network:{pod.path}", "--annotation", "io.ukrun.network=static"))
    assert proc.returncode != 0, f"the interface was accepted: {proc.stdout[-2000:]}"
    sentence = runtime_error(proc.stderr)
    assert sentence.startswith(f"static network: the interface {name!r} of {pod.path}, which its rules would name, "
                               "holds characters that nftables would not read as a name"), sentence
    tables = pod.inside("nft", "list", "tables").stdout
    assert "ukrun_" not in tables and "tapuk" not in pod.inside("ip", "-o", "link").stdout
    bare.ctr("containers", "delete", cid)
    bare.assert_clean(cid)
    report.hostile.append(Hostile(f"static-network-uplink-named-with-a-{what}", "ctr", bare.daemon.version,
                                  sentence.replace(pod.path, "/run/netns/<pod>")))


def test_ukrun_plan_refuses_the_hosts_network_namespace(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    (bundle / "rootfs" / "unikernel").mkdir(parents=True)
    (bundle / "rootfs" / "unikernel" / "kernel").write_bytes(KERNEL_BYTES)
    (bundle / "rootfs" / "unikernel" / "initrd").write_bytes(hb.INITRD_BYTES)
    (bundle / "rootfs" / "urunc.json").write_bytes(hb.urunc_json())
    config = write_ukrun_config(tmp_path / "ukrun.toml", tmp_path / "state")
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "UKRUN_CONFIG": str(config),
           "CONTAINERD_ADDRESS": str(tmp_path / "no-containerd.sock")}
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    # This test's own namespace is the host's, and ukrun's; PID 1's, where this sandbox lets it be seen.
    paths = [f"/proc/{os.getpid()}/ns/net"] + ["/proc/1/ns/net"] * os.access("/proc/1/ns/net", os.F_OK)
    for path in paths:
        spec = {"ociVersion": "1.0.2", "root": {"path": "rootfs"}, "process": {"args": ["/bin/sh"], "cwd": "/"},
                "linux": {"namespaces": [{"type": "network", "path": path}]}}
        (bundle / "config.json").write_text(json.dumps(spec))
        proc = subprocess.run([UKRUN, "plan", "--bundle", str(bundle), "--json"], capture_output=True, text=True,
                              env=env, timeout=60)
        assert proc.returncode == 1, proc.stdout
        assert re.search(f"the spec's network namespace {path} is (ukrun's own|the host's) network namespace, not "
                         "a container's", proc.stderr), proc.stderr
    assert subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout == links
