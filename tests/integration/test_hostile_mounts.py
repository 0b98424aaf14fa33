"""Hostile images and pods against the spec's bind mounts, through `ctr run` and the stock runc v2 shim.

ukrun copies a spec's bind-mounted files and folders into a block rootfs while that rootfs is mounted on
the host, and reads those folders while other processes of the pod may change them. So an image's links
must resolve inside its rootfs as the guest sees them, never on the host; a folder swapped for a link in
the middle of the copy must never make ukrun read the host's files; and no destination may reach ukrun's
own `/.ukrun`, however it is spelled. Canary files in the test's temporary folder stand in for the host's
secrets: each case checks that none was read, written or replaced, and records its row for
docs/reliability.md.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed import containerd as ctd
from testbed import guest
from testbed import hostile as hb
from testbed.hostile import KERNEL, KERNEL_BYTES, Node, file, link
from testbed.reliability import Hostile, Report
from tests.integration import test_hostile
from tests.integration.conftest import SNAPSHOTTER, remove_containers
from tests.integration.runner import Runner
from tests.integration.test_hostile import HostBait, assert_no_leak, runtime_error

bait = test_hostile.bait  # the fixture: a folder of canary files on the host


@pytest.fixture
def runner(daemon: ctd.Daemon, ns: str, tmp_path: Path) -> Iterator[Runner]:
    r = Runner(daemon, ns, tmp_path / "runc", daemon.dir.parent / "ukrun-state")
    yield r
    remove_containers(r)


def folder_state(folder: Path) -> dict[str, bytes]:
    """Every entry below `folder`, by its path, with a file's content (what an escape would change)."""
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() and not p.is_symlink() else b"<not a file>"
            for p in sorted(folder.rglob("*"))}


def disk(runner: Runner, cid: str) -> Path:
    """The container's blockfile snapshot: the guest's disk, an ext4 image read here without mounting it
    (a mount on a busy host can be copied into other mount namespaces and outlive the test)."""
    from ukrun.containerd.client import Client

    with Client(runner.daemon.address, runner.ns) as c:
        (m,) = c.mounts(runner.snapshotter, cid)
    return Path(m.source)


def disk_file(image: Path, path: str) -> bytes:
    """A file of an ext4 image, read by debugfs (which resolves the path in the image, not on the host)."""
    proc = subprocess.run(["debugfs", "-R", f"cat {path}", str(image)], capture_output=True, check=True)
    return proc.stdout


def occurrences(image: Path, needle: bytes, chunk: int = 8 << 20) -> int:
    """How often `needle` is in the raw image (a file's content shows there, wherever the file is), reading
    only its data, not its holes."""
    found, keep = 0, len(needle) - 1
    fd = os.open(image, os.O_RDONLY | os.O_CLOEXEC)
    try:
        end, offset = os.fstat(fd).st_size, 0
        while offset < end:
            try:
                offset = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError:  # ENXIO: no data after offset
                break
            hole = os.lseek(fd, offset, os.SEEK_HOLE)
            tail = b""
            while offset < hole:
                data = tail + os.pread(fd, min(chunk, hole - offset), offset)
                found += data.count(needle)
                offset += len(data) - len(tail)
                tail = data[-keep:] if keep else b""
    finally:
        os.close(fd)
    return found


# -- an image's links under the spec's copies: the guest boots and reads them in its own rootfs -------------
@pytest.fixture(scope="module")
def initrd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return guest.build_initrd(tmp_path_factory.mktemp("hostile-guest") / "initrd.img")


def bootable(initrd: Path, *extra: Node) -> list[list[Node]]:
    """The linux test guest (busybox, booting from its block rootfs) with `extra` nodes."""
    cfg = hb.urunc_json(binary="/boot/vmlinuz", initrd="/boot/initrd", mountRootfs="true")
    return [[
        Node("/bin/busybox", data=guest.BUSYBOX.read_bytes(), mode=0o755), link("/bin/sh", "busybox"),
        *(Node(d, "dir", mode=0o755) for d in ("/proc", "/dev", "/sys", "/tmp", "/usr")),
        file("/boot/vmlinuz", guest.kernel().read_bytes()), file("/boot/initrd", initrd.read_bytes()),
        file("/urunc.json", cfg), *extra,
    ]]


# case -> (the image's link: path, target with {host} for the host folder; the guest path the pod mounts;
# whether the mount is a folder)
LINKED = {
    "etc-link-to-a-host-folder-and-a-file-mount-at-etc-hosts": ("/etc", "{host}", "/etc/hosts", False),
    "etc-link-through-usr-dotdot-and-a-file-mount-at-etc-hosts": ("/etc", "/usr/..{host}", "/etc/hosts", False),
    "cfg-link-to-a-host-folder-and-a-folder-mount-at-cfg": ("/cfg", "{host}", "/cfg/authorized_keys", True),
}


@pytest.mark.reliability("hostile")
@pytest.mark.parametrize("name", list(LINKED))
def test_an_images_link_keeps_the_spec_copies_in_its_own_rootfs(runner: Runner, tmp_path: Path, initrd: Path,
                                                               report: Report, name: str) -> None:
    at, target, read, folder_mount = LINKED[name]
    victim = tmp_path / "host-etc"  # the host folder the image's link names
    victim.mkdir()
    (victim / "hosts").write_text("127.0.0.1 the-host's-own-hosts-file\n")
    (victim / "passwd").write_text("root:x:0:0:the host:/root:/bin/sh\n")
    before = folder_state(victim)
    pod = tmp_path / "pod"
    pod.mkdir()
    content = f"written by the pod {uuid.uuid4().hex}\n"
    if folder_mount:
        (pod / "cfg").mkdir()
        (pod / "cfg" / "authorized_keys").write_text(content)
        mount = f"type=bind,src={pod / 'cfg'},dst={at},options=rbind:ro"
    else:
        (pod / "hosts").write_text(content)
        mount = f"type=bind,src={pod / 'hosts'},dst={read},options=rbind:ro"
    image = f"ukrun/hostile-{name}:1"
    layers = bootable(initrd, link(at, target.format(host=victim)))
    runner.daemon.import_image(runner.ns, hb.image(tmp_path / "img", image, layers), SNAPSHOTTER)
    proc = runner.run("l1", "/bin/busybox", "sh", "-c", f"cat {read}; exit 3", image=image,
                      flags=("--mount", mount))
    assert folder_state(victim) == before, "ukrun wrote into the host folder an image's link names"
    assert proc.returncode == 3, (proc.returncode, proc.stdout[-3000:], proc.stderr)
    assert content in proc.stdout.replace("\r", ""), proc.stdout[-3000:]
    assert "the-host's-own" not in proc.stdout
    inside = target.format(host=victim).replace("/usr/..", "") + read.removeprefix(at)
    assert disk_file(disk(runner, "l1"), inside) == content.encode()
    assert runner.ctr("containers", "delete", "l1").returncode == 0
    runner.assert_clean("l1")
    shown = inside.replace(str(victim), "/<host folder>")
    report.hostile.append(Hostile(name, "ctr", runner.daemon.version,
                                  f"accepted: the guest reads {read} from {shown} in its own rootfs; "
                                  "the host folder is untouched"))


# -- a folder swapped for a link while create copies it ---------------------------------------------------
SWAPPER = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
a, b = os.fsencode(sys.argv[1]), os.fsencode(sys.argv[2])
print("swapping", flush=True)
while True:
    libc.renameat2(-100, a, -100, b, 2)  # AT_FDCWD, RENAME_EXCHANGE
"""
FILES = 200
RUNS = 20
POD_DATA = b"the pod's own data\n"


@pytest.mark.reliability("hostile")
def test_a_folder_swapped_for_a_host_link_during_create_never_copies_host_files(
        runner: Runner, tmp_path: Path, bait: HostBait, report: Report) -> None:
    victim = tmp_path / "secrets"  # same file names as the mounted folder's, each holding the marker
    victim.mkdir()
    shared = tmp_path / "emptydir"  # what another container of the pod shares with this one
    (shared / "sub").mkdir(parents=True)
    for i in range(FILES):
        (victim / f"f{i:03}").write_text(f"{bait.marker}\n")
        (shared / "sub" / f"f{i:03}").write_bytes(POD_DATA)
    (shared / "swap").symlink_to(victim)
    image = "ukrun/hostile-swapped-folder:1"
    layers = [[*hb.artifacts(hb.urunc_json(mountRootfs="true"))]]
    runner.daemon.import_image(runner.ns, hb.image(tmp_path / "img", image, layers), SNAPSHOTTER)
    swapper = subprocess.Popen([sys.executable, "-c", SWAPPER, str(shared / "sub"), str(shared / "swap")],
                               stdout=subprocess.PIPE, text=True)
    copied = 0
    try:
        assert swapper.stdout is not None and swapper.stdout.readline().strip() == "swapping"
        for n in range(RUNS):
            cid = f"r{n}"
            proc = runner.run(cid, "/bin/sh", image=image,
                              flags=("--mount", f"type=bind,src={shared},dst=/data,options=rbind:ro"))
            out = proc.stdout + proc.stderr  # a busy host may fail a create for its own reasons: not a leak
            assert bait.marker not in out and "Traceback" not in out and "internal error" not in out, out
            image_file = disk(runner, cid)
            leaked = occurrences(image_file, bait.marker.encode())
            assert not leaked, f"run {n}: {leaked} host files reached the guest's disk"
            copied += occurrences(image_file, POD_DATA)
            assert runner.ctr("containers", "delete", cid).returncode == 0
            runner.assert_clean(cid)
    finally:
        swapper.kill()
        swapper.wait()
    assert copied, "no run copied anything: the test proves nothing"
    report.hostile.append(Hostile("folder-mount-swapped-for-a-host-link-during-create", "ctr", runner.daemon.version,
                                  f"accepted: {RUNS} creates while a subfolder and a link to a host folder swap "
                                  f"places ({copied} files copied); no host byte on the guest's disk"))


# -- destinations and links that reach ukrun's own folder, or the guest's /proc ---------------------------------
def refused_image(*extra: Node) -> list[list[Node]]:
    return [[file(KERNEL, KERNEL_BYTES), file(hb.INITRD, hb.INITRD_BYTES),
             file("/urunc.json", hb.urunc_json(mountRootfs="true")), *extra]]


# case -> (the image's extra nodes, {host} for the host folder; the mount's destination; a folder mount;
# the expected sentence's words)
REFUSED = {
    "destination-double-slash-ukrun-file": ((), "//.ukrun/x", False, "lies in /.ukrun"),
    "destination-double-slash-ukrun-itself": ((), "//.ukrun", False, "lies in /.ukrun"),
    "destination-double-slash-ukrun-folder": ((), "//.ukrun", True, "lies in /.ukrun"),
    "image-link-into-ukrun-under-a-file-mount": ((("/x", "/.ukrun"),), "/x/process.sh", False,
                                                 "'/x/process.sh' resolves, through the image's links, to "
                                                 "'/.ukrun/process.sh'"),
    "image-link-to-proc-1-root-under-a-folder-mount": ((("/cfg", "/proc/1/root{host}"),), "/cfg", True,
                                                       "resolves, through the image's links, to '/proc/1/root/"),
}


@pytest.mark.reliability("hostile")
@pytest.mark.parametrize("name", list(REFUSED))
def test_a_copy_that_would_reach_ukruns_folder_or_the_guests_proc_is_refused(
        runner: Runner, tmp_path: Path, bait: HostBait, report: Report, name: str) -> None:
    links, destination, folder_mount, words = REFUSED[name]
    before = folder_state(bait.dir)
    pod = tmp_path / "pod"
    (pod / "dir").mkdir(parents=True)
    (pod / "dir" / "authorized_keys").write_text("from the pod\n")
    (pod / "file").write_text("from the pod\n")
    source = pod / ("dir" if folder_mount else "file")
    image = f"ukrun/hostile-{name}:1"
    nodes = [link(at, target.format(host=bait.dir)) for at, target in links]
    if any(at == "/cfg" for at, _ in links):
        nodes.append(Node("/proc", "dir", mode=0o555))
    runner.daemon.import_image(runner.ns, hb.image(tmp_path / "img", image, refused_image(*nodes)), SNAPSHOTTER)
    proc = runner.run("d1", "/bin/sh", image=image,
                      flags=("--mount", f"type=bind,src={source},dst={destination},options=rbind:ro"))
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, f"accepted: {out}"
    sentence = runtime_error(proc.stderr)
    assert words in sentence, sentence
    assert "\n" not in sentence.strip(), f"not one sentence: {sentence!r}"
    assert_no_leak(out, bait, runner.state_root, runner.daemon.dir)
    assert folder_state(bait.dir) == before
    assert runner.ctr("containers", "delete", "d1").returncode == 0
    runner.assert_clean("d1")
    report.hostile.append(Hostile(name, "ctr", runner.daemon.version,
                                  bait.anonymous(sentence.strip()).replace(str(tmp_path), "<spec folder>")))
