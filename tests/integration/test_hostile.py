"""A hostile-image corpus: images built to escape the image, exhaust ukrun, or confuse its layer choice.

Each case runs through `ctr run` and the stock runc v2 shim, or through `ArtifactStore.acquire` / `ukrun view
acquire`, and asserts three things: the one-sentence error names the problem (or the valid image works),
no host file was read (a marker planted on the host, which an escape would reach, never shows up), and
nothing is left (views, mounts, loop devices, leases, labels), the container deletable.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from testbed import containerd as ctd
from testbed import guest
from testbed import hostile as hb
from testbed.hostile import INITRD, KERNEL, KERNEL_BYTES, Node, file, link
from testbed.reliability import Hostile, Report
from tests.integration.conftest import SNAPSHOTTER, daemon_config, load
from tests.integration.runner import UKRUN, Runner
from ukrun import errors, host
from ukrun.artifacts.store import ArtifactStore
from ukrun.artifacts.views import ACQUIRE_LABEL, user_label
from ukrun.containerd.client import Client
from ukrun.unikernel import PREFIX


# -- the host side: a marker that an escape would reach ------------------------------------------------------
@dataclass(frozen=True)
class HostBait:
    """Files on the host, outside every image, that an escaping path would reach. Each holds the marker; the
    urunc.json there is even a valid one (naming a kernel the images do hold), so following a link out of
    an image would make a hostile image *work*, which the tests would see."""

    dir: Path
    marker: str

    def path(self, name: str) -> str:
        return str(self.dir / name)

    def anonymous(self, text: str) -> str:
        """`text` with the bait's folder (a temporary path of this run) named generically."""
        return text.replace(str(self.dir).lstrip("/"), "<host folder>")

    def climb(self, name: str, depth: int = 30) -> str:
        """A relative path that, followed on the host from any folder, reaches the bait."""
        return "../" * depth + self.path(name).lstrip("/")


@pytest.fixture
def bait(tmp_path: Path) -> HostBait:
    d = tmp_path / "host"
    d.mkdir()
    marker = f"hostile-marker-{uuid.uuid4().hex}"
    for name in ("kernel", "initrd", "shadow"):
        (d / name).write_text(marker + "\n")
    (d / "urunc.json").write_bytes(hb.urunc_json(cmdline=f"console=ttyS0 {marker}"))
    return HostBait(d, marker)


def assert_no_leak(text: str, bait: HostBait, *roots: Path) -> None:
    assert bait.marker not in text, f"a host file was read: {text}"
    for root in roots:
        assert str(root) not in text, f"a host path ({root}) shows in: {text}"
    assert "internal error" not in text and "Traceback" not in text, text


def assert_no_copy_of_bait(state_root: Path, bait: HostBait) -> None:
    copies = state_root / "copies"
    for f in copies.rglob("*") if copies.is_dir() else []:
        if f.is_file() and not f.is_symlink():
            assert bait.marker.encode() not in f.read_bytes(), f"{f} holds a host file's content"


# -- through ctr and the stock shim -----------------------------------------------------------------------------
@pytest.fixture
def runner(daemon: ctd.Daemon, ns: str, tmp_path: Path) -> Iterator[Runner]:
    r = Runner(daemon, ns, tmp_path / "runc", daemon.dir.parent / "ukrun-state")
    yield r
    for line in r.ctr("task", "ls").stdout.splitlines()[1:]:
        r.ctr("task", "kill", "-s", "SIGKILL", line.split()[0])
        r.ctr("task", "delete", "--force", line.split()[0])


def runtime_error(stderr: str) -> str:
    """ukrun's sentence in ctr's report: `... OCI runtime create failed: <sentence>: unknown`."""
    m = re.search(r"OCI runtime create failed: (.*?)(?:: unknown)?\s*$", stderr, re.S)
    assert m, f"not a runtime create failure: {stderr!r}"
    return m.group(1)


@dataclass(frozen=True)
class Case:
    layers: Callable[[HostBait], Sequence[Sequence[Node]]]
    message: str
    marks: dict[int, tuple[str, ...]] = field(default_factory=dict)
    flags: tuple[str, ...] = ()
    args: tuple[str, ...] = ("/bin/sh",)


def with_config(cfg: bytes, *extra: Node) -> Callable[[HostBait], Sequence[Sequence[Node]]]:
    return lambda h: [[file(KERNEL, KERNEL_BYTES), file(INITRD, hb.INITRD_BYTES), file("/urunc.json", cfg), *extra]]


def kernel_is(*nodes: Node) -> Callable[[HostBait], Sequence[Sequence[Node]]]:
    return lambda h: [[*nodes, file(INITRD, hb.INITRD_BYTES), file("/urunc.json", hb.urunc_json())]]


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def raw_config(**values: object) -> bytes:
    base: dict[str, object] = {**hb.urunc_values(unikernelType="linux", hypervisor="qemu", binary=KERNEL,
                                                initrd=INITRD)}
    base.update({PREFIX + k: v for k, v in values.items()})
    return json.dumps(base).encode()


MARKED: dict[int, tuple[str, ...]] = {0: (KERNEL, INITRD, "/urunc.json")}


def chain(links: int) -> list[Node]:
    """The kernel reached through exactly `links` symlinks: /unikernel/kernel -> /l/1 -> 2 ... -> /l/<links>."""
    return [link(KERNEL, "/l/1"), *(link(f"/l/{i}", str(i + 1)) for i in range(1, links)),
            file(f"/l/{links}", KERNEL_BYTES)]

LONG = "x" * 300


def SOUND(h: HostBait) -> Sequence[Sequence[Node]]:
    return [hb.artifacts()]


CTR_CASES: dict[str, Case] = {
    "kernel-link-to-etc-shadow": Case(lambda h: kernel_is(link(KERNEL, "/etc/shadow"))(h),
                                      "kernel '/unikernel/kernel' does not exist in the image"),
    "kernel-link-to-host-marker": Case(lambda h: kernel_is(link(KERNEL, h.path("kernel")))(h),
                                       "kernel '/unikernel/kernel' does not exist in the image"),
    "kernel-relative-escape": Case(lambda h: kernel_is(link(KERNEL, h.climb("kernel")))(h),
                                   "kernel '/unikernel/kernel' climbs above the image's root"),
    "kernel-escape-through-several-links": Case(
        lambda h: kernel_is(link(KERNEL, "/a/one"), link("/a/one", "../b/two"), link("/b/two", "/c/three"),
                            link("/c/three", "../../../../../.." + h.path("kernel")))(h),
        "climbs above the image's root"),
    "kernel-symlink-loop": Case(kernel_is(link(KERNEL, "/loop/a"), link("/loop/a", "b"), link("/loop/b", "a")),
                                "goes through more than 40 symlinks"),
    "kernel-chain-of-41-links": Case(kernel_is(*chain(41)),
                                     "goes through more than 40 symlinks"),
    "kernel-is-a-directory": Case(kernel_is(Node(KERNEL, "dir", mode=0o755), file(KERNEL + "/x", b"x")),
                                  "kernel '/unikernel/kernel' is not a regular file in the image"),
    "kernel-is-a-fifo": Case(kernel_is(Node(KERNEL, "fifo")),
                             "kernel '/unikernel/kernel' is not a regular file in the image"),
    "kernel-is-dev-mem": Case(kernel_is(Node(KERNEL, "chr", major=1, minor=1)),
                              "kernel '/unikernel/kernel' is not a regular file in the image"),
    "initrd-is-a-block-device": Case(
        lambda h: [[file(KERNEL, KERNEL_BYTES), Node(INITRD, "blk", major=7, minor=0),
                    file("/urunc.json", hb.urunc_json())]],
        "initrd '/unikernel/initrd' is not a regular file in the image"),
    "initrd-link-to-proc-self": Case(
        lambda h: [[file(KERNEL, KERNEL_BYTES), Node("/proc", "dir", mode=0o555),
                    link(INITRD, "/proc/self/root" + h.path("initrd")), file("/urunc.json", hb.urunc_json())]],
        "initrd '/unikernel/initrd' does not exist in the image"),
    "urunc-json-of-10-mib": Case(with_config(b"{" + b" " * (10 << 20) + b"}"), "over the 65536-byte limit"),
    "urunc-json-not-json": Case(with_config(b"com.urunc.unikernel.binary=/etc/shadow\n"),
                                "/urunc.json is not valid JSON"),
    "urunc-json-an-array": Case(with_config(json.dumps([hb.urunc_values(binary=KERNEL)]).encode()),
                                "/urunc.json is not a JSON object"),
    "urunc-json-nested-objects": Case(with_config(raw_config(binary={"path": b64(KERNEL)})),
                                      "com.urunc.unikernel.binary must be a base64 string, got dict"),
    "urunc-json-bad-base64": Case(with_config(raw_config(binary="/unikernel/kernel!")),
                                  "com.urunc.unikernel.binary is not valid base64"),
    "urunc-json-number-value": Case(with_config(raw_config(hypervisor=7)),
                                    "com.urunc.unikernel.hypervisor must be a base64 string, got int"),
    "urunc-json-list-value": Case(with_config(raw_config(initrd=[b64(INITRD)])),
                                  "com.urunc.unikernel.initrd must be a base64 string, got list"),
    "urunc-json-is-a-directory": Case(
        lambda h: [[file(KERNEL, KERNEL_BYTES), Node("/urunc.json", "dir", mode=0o755),
                    file("/urunc.json/x", hb.urunc_json())]],
        "urunc.json '/urunc.json' is not a regular file in the image"),
    "urunc-json-link-to-host": Case(
        lambda h: [[file(KERNEL, KERNEL_BYTES), file(INITRD, hb.INITRD_BYTES),
                    link("/urunc.json", h.path("urunc.json"))]],
        "urunc.json '/urunc.json' does not exist in the image"),
    "urunc-json-relative-escape": Case(
        lambda h: [[file(KERNEL, KERNEL_BYTES), file(INITRD, hb.INITRD_BYTES),
                    link("/urunc.json", h.climb("urunc.json"))]],
        "urunc.json '/urunc.json' climbs above the image's root"),
    "unknown-unikernel-type": Case(with_config(hb.urunc_json(unikernelType="plan9")),
                                   "unknown unikernel type 'plan9'"),
    "unknown-hypervisor": Case(with_config(hb.urunc_json(hypervisor="bhyve")), "unknown hypervisor 'bhyve'"),
    # Solo5's tenders take `--net:NAME=IFACE` and `--block:NAME=PATH`: a name carrying "=" would let the image
    # choose the host interface or file
    "solo5-net-name-choosing-the-interface": Case(
        with_config(hb.urunc_json(unikernelType="mirage", hypervisor="hvt", initrd="", solo5NetDev="service=eth0")),
        "solo5NetDev='service=eth0' is not a Solo5 device name"),
    "solo5-block-name-choosing-the-file": Case(
        with_config(hb.urunc_json(unikernelType="mirage", hypervisor="hvt", initrd="",
                                  solo5BlkDev="storage=/etc/shadow,data")),
        "solo5BlkDev='storage=/etc/shadow,data' is not a comma-separated list of them"),
    "kernel-path-with-nul": Case(with_config(hb.urunc_json(binary=KERNEL + "\0/../../etc/shadow")),
                                 "com.urunc.unikernel.binary contains a control character (U+0000)"),
    "kernel-path-with-dotdot": Case(
        lambda h: with_config(hb.urunc_json(binary="/unikernel/../../../../.." + h.path("kernel")))(h),
        "climbs above the image's root"),
    "kernel-path-relative": Case(with_config(hb.urunc_json(binary="unikernel/kernel")),
                                 "com.urunc.unikernel.binary must be an absolute path in the rootfs"),
    "kernel-path-component-over-255": Case(with_config(hb.urunc_json(binary=f"/unikernel/{LONG}")),
                                           "a file name holds at most 255"),
    "kernel-path-over-4096": Case(with_config(hb.urunc_json(binary="/" + "/".join(["d" * 200] * 25))),
                                  "over the 4096 a path may have"),
    "link-target-component-over-255": Case(kernel_is(link(KERNEL, f"/boot/{LONG}/kernel")),
                                           "a file name holds at most 255"),
    "marked-kernel-whited-out-later": Case(
        lambda h: [hb.artifacts(), [file("/unikernel/.wh.kernel", b"")]],
        "kernel '/unikernel/kernel' does not exist in the image", marks=MARKED),
    "marked-folder-made-opaque-later": Case(
        lambda h: [hb.artifacts(), [file("/unikernel/.wh..wh..opq", b""), file("/unikernel/other", b"o")]],
        "kernel '/unikernel/kernel' does not exist in the image", marks=MARKED),
    "marked-folder-replaced-by-host-link": Case(
        lambda h: [hb.artifacts(), [link("/unikernel", str(h.dir))]],
        "kernel '/unikernel/kernel' does not exist in the image", marks=MARKED),
    "copy-mode-link-to-host": Case(
        lambda h: kernel_is(link(KERNEL, h.path("kernel")))(h),
        "kernel '/unikernel/kernel' does not exist in the image",
        flags=("--annotation", "io.ukrun.artifacts.mode=copy")),
    "per-container-mode-relative-escape": Case(
        lambda h: kernel_is(link(KERNEL, h.climb("kernel")))(h), "climbs above the image's root",
        flags=("--annotation", "io.ukrun.artifacts.mode=per-container")),
    "cmdline-with-nul": Case(with_config(hb.urunc_json(cmdline="console=ttyS0\0init=/evil")),
                             "control character", args=()),
    "cmdline-with-escape-and-newline": Case(
        with_config(hb.urunc_json(cmdline="console=ttyS0\x1b[2J\nukrun.process=/evil")),
        "control character", args=()),
    "argv0-with-newline-injecting-a-parameter": Case(
        SOUND, "control character",
        args=("/bin/sh\nukrun.process=/evil",)),
    "annotation-cmdline-with-control-character": Case(
        SOUND, "control character", args=(),
        flags=("--annotation", f"{PREFIX}unikernelType=linux", "--annotation", f"{PREFIX}hypervisor=qemu",
               "--annotation", f"{PREFIX}binary={KERNEL}", "--annotation", f"{PREFIX}initrd={INITRD}",
               "--annotation", f"{PREFIX}cmdline=console=ttyS0\x1b[2J\ninit=/evil")),
    "annotation-config-and-no-layers": Case(  # its rootfs may go to the VM: a view would hold the artifacts
        lambda h: [], "snapshot has no committed parent to view",
        flags=("--annotation", f"{PREFIX}unikernelType=linux", "--annotation", f"{PREFIX}hypervisor=qemu",
               "--annotation", f"{PREFIX}binary={KERNEL}", "--annotation", f"{PREFIX}mountRootfs=true")),
    "annotation-config-and-no-layers-read-in-place": Case(  # no mountRootfs: read in place from the rootfs
        lambda h: [], f"kernel '{KERNEL}' does not exist in the image",
        flags=("--annotation", f"{PREFIX}unikernelType=linux", "--annotation", f"{PREFIX}hypervisor=qemu",
               "--annotation", f"{PREFIX}binary={KERNEL}")),
}

@pytest.mark.reliability("hostile")
@pytest.mark.parametrize("name", list(CTR_CASES))
def test_hostile_image_through_ctr(runner: Runner, tmp_path: Path, bait: HostBait, report: Report, name: str) -> None:
    case = CTR_CASES[name]
    image = f"ukrun/hostile-{name}:1"
    tar = hb.image(tmp_path / "img", image, case.layers(bait), marks=case.marks)
    runner.daemon.import_image(runner.ns, tar, SNAPSHOTTER)
    cid = "h1"
    proc = runner.run(cid, *case.args, image=image, flags=("--rm", *case.flags))
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, f"the hostile image was accepted: {out}"
    sentence = runtime_error(proc.stderr or f"(exit {proc.returncode}, no reason, stdout {proc.stdout[-2000:]!r})")
    assert case.message in sentence, sentence
    assert "\n" not in sentence.strip(), f"not one sentence: {sentence!r}"
    assert_no_leak(out, bait, runner.state_root, runner.daemon.dir)
    assert_no_copy_of_bait(runner.state_root, bait)
    runner.ctr("containers", "delete", cid)
    assert cid not in runner.ctr("containers", "ls", "-q").stdout.split()
    runner.assert_clean(cid)
    assert not (runner.state_root / "copies" / runner.ns / cid).exists()
    report.hostile.append(Hostile(name, "ctr", runner.daemon.version, bait.anonymous(sentence.strip())))


@pytest.mark.reliability("hostile")
def test_a_spec_naming_a_namespace_twice_is_refused_through_ctr(runner: Runner, tmp_path: Path,
                                                               report: Report) -> None:
    """`ctr run --config` hands over a whole spec: here a new network namespace, and the host's by path. Which
    one the init would get would depend on the order ukrun makes them in; the OCI runtime specification
    requires an error."""
    spec = json.loads(runner.ctr("oci", "spec").stdout)
    spec["linux"]["namespaces"].append({"type": "network", "path": "/proc/1/ns/net"})
    spec["annotations"] = {f"{PREFIX}unikernelType": "linux", f"{PREFIX}hypervisor": "qemu",
                           f"{PREFIX}binary": KERNEL}
    (tmp_path / "rootfs").mkdir()
    spec["root"] = {"path": str(tmp_path / "rootfs")}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    cid = "h2"
    proc = runner.ctr("run", "--runc-binary", UKRUN, "--runc-root", str(runner.runc_root), "--fifo-dir",
                      str(runner.fifo_dir), "--rm", "--config", str(tmp_path / "spec.json"), cid)  # no image
    assert proc.returncode != 0, f"the spec was accepted: {proc.stdout + proc.stderr}"
    sentence = runtime_error(proc.stderr or f"(exit {proc.returncode}, no reason)")
    assert "names the 'network' namespace more than once (linux.namespaces)" in sentence, sentence
    runner.ctr("containers", "delete", cid)
    runner.assert_clean(cid)
    report.hostile.append(Hostile("spec-network-namespace-twice", "ctr", runner.daemon.version, sentence.strip()))


# -- through ArtifactStore.acquire and `ukrun view acquire` ----------------------------------------------------
def views(client: Client) -> list[str]:
    return [s.name for s in client.list_snapshots(SNAPSHOTTER, ["kind==view"])]


def assert_store_clean(daemon: ctd.Daemon, ns: str, client: Client, store: ArtifactStore, cid: str) -> None:
    assert views(client) == [] and store.views() == []
    assert not client.list_leases([f'labels."{ACQUIRE_LABEL}"'])
    assert user_label(SNAPSHOTTER) not in client.get_container(cid).labels
    assert not [m for m in host.mountinfo() if m.mount_point.startswith(str(store.root))]
    assert not [d for d, b in host.loop_devices().items() if b.startswith(str(daemon.dir) + "/")]
    daemon.delete_container(ns, cid)
    assert cid not in daemon.ctr(ns, "containers", "ls", "-q").split()


def _load(daemon: ctd.Daemon, ns: str, tmp_path: Path, name: str, layers: Sequence[Sequence[Node]],
          marks: dict[int, tuple[str, ...]] | None = None) -> None:
    image = f"ukrun/hostile-{name}:1"
    load(daemon, ns, hb.image(tmp_path / "img", image, layers, marks=marks or {}), image, ["c1"])


STORE_REFUSED: dict[str, tuple[Callable[[HostBait], Sequence[Sequence[Node]]], dict[int, tuple[str, ...]], str]] = {
    "kernel-link-to-etc-shadow": (kernel_is(link(KERNEL, "/etc/shadow")), {}, "does not exist in the image"),
    "marked-layer-lacks-every-file": (
        lambda h: [[file("/etc/os-release", b"x")], [file("/urunc.json", hb.urunc_json())]],
        {0: MARKED[0]}, "kernel '/unikernel/kernel' does not exist in the image"),
    "kernel-link-to-host-marker": (lambda h: kernel_is(link(KERNEL, h.path("kernel")))(h), {},
                                   "kernel '/unikernel/kernel' does not exist in the image"),
    "initrd-link-through-proc-self-root": (
        lambda h: [[file(KERNEL, KERNEL_BYTES), Node("/proc", "dir", mode=0o555),
                    link(INITRD, "/proc/self/root" + h.path("initrd")), file("/urunc.json", hb.urunc_json())]],
        {}, "initrd '/unikernel/initrd' does not exist in the image"),
    "urunc-json-link-to-host": (
        lambda h: [[file(KERNEL, KERNEL_BYTES), file(INITRD, hb.INITRD_BYTES),
                    link("/urunc.json", h.path("urunc.json"))]],
        {}, "urunc.json '/urunc.json' does not exist in the image"),
}


@pytest.mark.reliability("hostile")
@pytest.mark.parametrize("name", list(STORE_REFUSED))
def test_hostile_image_through_acquire(daemon: ctd.Daemon, ns: str, client: Client, store: ArtifactStore,
                                       tmp_path: Path, bait: HostBait, report: Report, name: str) -> None:
    layers, marks, message = STORE_REFUSED[name]
    _load(daemon, ns, tmp_path, name, layers(bait), marks)
    for mode in ("shared", "per-container", "copy"):
        with pytest.raises(errors.ImageError, match=re.escape(message)) as exc:
            store.acquire("c1", mode=mode)
        assert "\n" not in str(exc.value), f"not one sentence: {exc.value}"
        assert_no_leak(str(exc.value), bait, store.root, daemon.dir)
        assert_no_copy_of_bait(store.root, bait)
        store.release("c1")
    assert_store_clean(daemon, ns, client, store, "c1")
    report.hostile.append(Hostile(name, "acquire", daemon.version, bait.anonymous(str(exc.value))))


def _acquire_ok(daemon: ctd.Daemon, ns: str, client: Client, store: ArtifactStore, bait: HostBait,
                expect: bytes = KERNEL_BYTES) -> None:
    for mode in ("shared", "per-container", "copy"):
        art = store.acquire("c1", mode=mode)
        assert art.kernel.read_bytes() == expect
        assert bait.marker not in json.dumps(art.to_json())
        assert_no_copy_of_bait(store.root, bait)
        store.release("c1")
    assert_store_clean(daemon, ns, client, store, "c1")


@pytest.mark.parametrize(
    "name",
    ["chain-of-exactly-40-links", "hard-linked-kernel", "hard-link-named-like-a-host-file", "unknown-keys-are-ignored",
     "dotdot-that-stays-inside",
     "marked-layer-lacks-the-files-a-later-layer-holds"],
)
def test_valid_but_odd_images_are_accepted(daemon: ctd.Daemon, ns: str, client: Client, store: ArtifactStore,
                                           tmp_path: Path, bait: HostBait, name: str) -> None:
    rest = [file(INITRD, hb.INITRD_BYTES), file("/urunc.json", hb.urunc_json())]
    layers: list[list[Node]]
    marks: dict[int, tuple[str, ...]] = {}
    if name == "chain-of-exactly-40-links":
        layers = [[*chain(40), *rest]]
    elif name == "hard-linked-kernel":
        layers = [[file("/boot/vmlinuz", KERNEL_BYTES), Node(KERNEL, "hardlink", target="/boot/vmlinuz"), *rest]]
    elif name == "hard-link-named-like-a-host-file":  # its target is the image's copy of that path, not the host's
        layers = [[file(bait.path("kernel"), KERNEL_BYTES), Node(KERNEL, "hardlink", target=bait.path("kernel")),
                   *rest]]
    elif name == "unknown-keys-are-ignored":
        cfg = json.loads(hb.urunc_json())
        cfg.update({PREFIX + "futureKey": b64("x"), "notOurs": [1, {"a": 2}], "also": 3.5})
        layers = [[file(KERNEL, KERNEL_BYTES), rest[0], file("/urunc.json", json.dumps(cfg).encode())]]
    elif name == "dotdot-that-stays-inside":
        layers = [[file(KERNEL, KERNEL_BYTES), rest[0],
                   file("/urunc.json", hb.urunc_json(binary="/unikernel/../unikernel/./kernel"))]]
    else:  # a lying mark on a layer without the artifacts; a later layer brings them: the top chain serves
        layers = [[file("/etc/os-release", b"x")], hb.artifacts()]
        marks = {0: MARKED[0]}
    _load(daemon, ns, tmp_path, name, layers, marks)
    if name.startswith("hard-link"):
        art = store.acquire("c1")
        assert art.kernel.stat().st_nlink == 2
        store.release("c1")
    if name == "marked-layer-lacks-the-files-a-later-layer-holds":
        art = store.acquire("c1")
        assert art.chain_reason.endswith("top chain"), art.chain_reason
        store.release("c1")
    _acquire_ok(daemon, ns, client, store, bait)


def test_cli_acquire_of_a_symlink_loop_says_one_sentence(daemon: ctd.Daemon, ns: str, client: Client,
                                                         store: ArtifactStore, tmp_path: Path,
                                                         bait: HostBait) -> None:
    _load(daemon, ns, tmp_path, "cli-loop", kernel_is(link(KERNEL, "/loop/a"), link("/loop/a", "/loop/b"),
                                                      link("/loop/b", "../loop/a"))(bait))
    env = {**daemon.env(), "CONTAINERD_NAMESPACE": ns, "UKRUN_CONFIG": str(daemon_config(daemon))}
    for mode in ("shared", "copy"):
        proc = subprocess.run([UKRUN, "--state-root", str(store.root), "view", "acquire", "--mode", mode, "c1"],
                              env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 1 and proc.stdout == ""
        lines = proc.stderr.splitlines()
        assert len(lines) == 1 and "goes through more than 40 symlinks" in lines[0], proc.stderr
        assert_no_leak(proc.stderr, bait, store.root, daemon.dir)
        subprocess.run([UKRUN, "--state-root", str(store.root), "view", "release", "c1"], env=env,
                       capture_output=True, check=True)
    assert_store_clean(daemon, ns, client, store, "c1")


def test_a_view_removed_behind_ukruns_back_is_made_again(daemon: ctd.Daemon, ns: str, client: Client,
                                                         store: ArtifactStore, tmp_path: Path,
                                                         bait: HostBait) -> None:
    image = "ukrun/hostile-vanishing:1"
    load(daemon, ns, hb.image(tmp_path / "img", image, [hb.artifacts()], marks=MARKED), image, ["c1", "c2"])
    first = store.acquire("c1")
    client.remove_snapshot(SNAPSHOTTER, first.view_key)  # containerd (or an operator) removes it
    assert views(client) == []
    second = store.acquire("c2")  # a new container of the image: the view is made again, not trusted
    assert views(client) == [second.view_key] and second.kernel.read_bytes() == KERNEL_BYTES
    assert store.release("c1") and store.release("c2")
    daemon.create_container(ns, image, "c3")  # and once more, from nothing
    third = store.acquire("c3")
    assert third.kernel.read_bytes() == KERNEL_BYTES
    store.release("c3")
    assert_store_clean(daemon, ns, client, store, "c1")
    for cid in ("c2", "c3"):
        daemon.delete_container(ns, cid)


# -- a valid odd image boots through ctr ------------------------------------------------------------------------
APP = "#!/bin/sh\necho \"guest got [$1] [$2]\"; exit 5\n"


def test_links_hard_links_and_a_newline_argument_boot_through_ctr(runner: Runner, tmp_path: Path,
                                                                  bait: HostBait) -> None:
    workdir = tmp_path / "guest"
    workdir.mkdir()
    initrd = guest.build_initrd(workdir / "initrd.img")
    cfg = hb.urunc_json(binary="/boot/../boot/k0", initrd="/boot/initrd", mountRootfs="true")
    layers = [[
        Node("/bin/busybox", data=guest.BUSYBOX.read_bytes(), mode=0o755), link("/bin/sh", "busybox"),
        *(Node(d, "dir", mode=0o755) for d in ("/proc", "/dev", "/sys", "/tmp", "/etc")),
        file("/app/run.sh", APP.encode(), 0o755),
        file("/real/vmlinuz", guest.kernel().read_bytes()),
        *(link(f"/boot/k{i}", f"k{i + 1}") for i in range(39)), link("/boot/k39", "/real/../real/vmlinuz"),
        file("/real/initrd", initrd.read_bytes()), Node("/boot/initrd", "hardlink", target="/real/initrd"),
        file("/urunc.json", cfg),
    ]]
    image = "ukrun/hostile-odd-but-valid:1"
    runner.daemon.import_image(runner.ns, hb.image(tmp_path / "img", image, layers), SNAPSHOTTER)
    proc = runner.run("v1", "/bin/sh", "/app/run.sh", "two\nlines", "it's", image=image, flags=("--rm",))
    assert "guest got [two\nlines] [it's]" in proc.stdout, proc.stdout[-3000:] + proc.stderr
    assert proc.returncode == 5, (proc.returncode, proc.stderr)
    assert_no_leak(proc.stdout + proc.stderr, bait, runner.state_root)
    runner.assert_clean("v1")
