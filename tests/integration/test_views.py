"""The core's promises, against a real containerd with the blockfile snapshotter."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from testbed import containerd as ctd
from testbed import images
from tests.integration.conftest import SNAPSHOTTER, daemon_config, load
from ukrun import errors, host
from ukrun.artifacts.store import ArtifactStore
from ukrun.artifacts.views import ACQUIRE_LABEL, user_label
from ukrun.containerd.client import Client
from ukrun.containerd.records import SnapshotKind
from ukrun.image.build import Entry

REPO = Path(__file__).resolve().parents[2]


# containerd's GC keeps its pauses under 2% of time: on a loaded machine one slow collection can push the
# next past 15 s. The waits return as soon as the condition holds.
GC_WAIT = 60.0


def force_gc(client: Client) -> None:
    """Runs containerd's GC now (a synchronous lease deletion does): its scheduler may defer a collection
    by many times the length of the previous one on a daemon that other tests keep busy."""
    client.create_lease("ukrun-test/gc-now")
    client.delete_lease("ukrun-test/gc-now", sync=True)


def views(client: Client) -> list[str]:
    return [s.name for s in client.list_snapshots(SNAPSHOTTER, ["kind==view"])]


def image_chains(tar: Path) -> list[str]:
    return images.Layout(tar).chain_ids()


def source_kernel(image_dir: Path, seed: str = "k") -> bytes:
    return (image_dir / f"kernel-{seed}").read_bytes()


def test_two_containers_share_one_view_of_the_marked_layer(
    daemon: ctd.Daemon, ns: str, client: Client, store: ArtifactStore, basic_image: Path, image_dir: Path
) -> None:
    load(daemon, ns, basic_image, "ukrun/basic:1", ["c1", "c2"])
    chains = image_chains(basic_image)
    # Our chain IDs are containerd's: the container's parent is our top chain.
    assert client.stat_snapshot(SNAPSHOTTER, "c1").parent == chains[-1]

    a1 = store.acquire("c1")
    a2 = store.acquire("c2")
    assert views(client) == [a1.view_key]
    assert a1.view_key == a2.view_key and a1.kernel == a2.kernel and a1.mount_point == a2.mount_point
    assert a1.chain_id == chains[0] != chains[-1]  # the marked artifact layer, below the top
    view = client.stat_snapshot(SNAPSHOTTER, a1.view_key)
    assert view.kind == SnapshotKind.VIEW
    assert client.stat_snapshot(SNAPSHOTTER, view.parent).kind == SnapshotKind.COMMITTED
    assert a1.kernel.read_bytes() == source_kernel(image_dir)
    assert a1.initrd is not None and a1.initrd.read_bytes() == (image_dir / "initrd-k").read_bytes()
    assert a1.bytes_copied == 0
    mount = host.mounts_at(a1.mount_point)  # type: ignore[arg-type]
    assert len(mount) == 1 and "ro" in mount[0].options.split(",")
    with pytest.raises(OSError):
        (a1.mount_point / "x").write_text("no")  # type: ignore[operator]
    labels = client.get_container("c2").labels
    assert labels[user_label(SNAPSHOTTER)] == a1.view_key
    assert [v.users for v in store.views()] == [("c1", "c2")]

    assert store.release("c1")
    assert views(client) == [a1.view_key] and a1.kernel.exists()
    assert user_label(SNAPSHOTTER) not in client.get_container("c1").labels
    assert store.release("c2")
    assert views(client) == []
    assert not host.mounts_at(a1.mount_point)  # type: ignore[arg-type]
    assert not any(b.startswith(str(daemon.dir)) for b in host.loop_devices().values())
    assert not client.list_leases([f'labels."{ACQUIRE_LABEL}"'])
    assert not store.release("c2")  # idempotent


def test_view_survives_a_forced_gc_while_in_use(
    daemon: ctd.Daemon, ns: str, client: Client, store: ArtifactStore, basic_image: Path, image_dir: Path
) -> None:
    load(daemon, ns, basic_image, "ukrun/basic:1", ["c1", "scratch"])
    art = store.acquire("c1")
    # A control view with neither lease nor label, exactly what `ctr snapshots view` makes: GC must take it.
    daemon.ctr(ns, "snapshots", "--snapshotter", SNAPSHOTTER, "view", "control", art.chain_id)
    assert "control" in views(client)
    daemon.delete_container(ns, "scratch")  # any deletion schedules a GC
    force_gc(client)
    gc_ran = ctd.wait_for(lambda: "control" not in views(client), timeout=GC_WAIT)
    assert gc_ran, "GC never ran: the test proves nothing"
    assert art.view_key in views(client)
    assert art.kernel.read_bytes() == source_kernel(image_dir)
    store.release("c1")


def test_later_layer_replacing_the_kernel_selects_the_top_chain(
    daemon: ctd.Daemon, ns: str, client: Client, store: ArtifactStore, image_dir: Path
) -> None:
    tar = images.unikernel_image(image_dir, "ukrun/override:1", seed="o",
                                 above=[[Entry(images.KERNEL_PATH, data=b"replaced kernel")]])
    load(daemon, ns, tar, "ukrun/override:1", ["c1"])
    art = store.acquire("c1")
    assert art.chain_id == image_chains(tar)[-1] and "touches" in art.chain_reason
    assert art.kernel.read_bytes() == b"replaced kernel"
    store.release("c1")
    assert views(client) == []


def test_unmarked_image_uses_the_top_chain(
    daemon: ctd.Daemon, ns: str, client: Client, store: ArtifactStore, image_dir: Path
) -> None:
    cfg = images.config(initrd="")
    tar = images.raw_image(image_dir, "ukrun/plain:1",
                           [[Entry("/etc/os-release", data=b"x")], [Entry(images.KERNEL_PATH, data=b"kernel")]], cfg)
    load(daemon, ns, tar, "ukrun/plain:1", ["c1"])
    art = store.acquire("c1")
    assert art.chain_id == image_chains(tar)[-1] and art.kernel.read_bytes() == b"kernel" and art.initrd is None
    store.release("c1")


@pytest.mark.parametrize(
    ("link", "message"),
    [("/etc/shadow", "does not exist in the image"), ("../../..", "climbs above"),
     ("../../../../../../../etc/passwd", "climbs above"), ("/boot/" + "x" * 300, "a file name holds at most 255")],
)
def test_hostile_kernel_symlink_is_refused_and_leaves_nothing(
    daemon: ctd.Daemon, ns: str, client: Client, store: ArtifactStore, image_dir: Path, link: str, message: str
) -> None:
    cfg = images.config(initrd="")
    name = f"ukrun/hostile-{len(link)}:1"
    tar = images.raw_image(image_dir, name, [[Entry(images.KERNEL_PATH, symlink=link)]], cfg)
    load(daemon, ns, tar, name, ["c1"])
    with pytest.raises(errors.ImageError, match=message) as exc:
        store.acquire("c1")
    assert str(store.root) not in str(exc.value), "an image's error never shows the host's paths"
    assert views(client) == [] and store.views() == []
    assert user_label(SNAPSHOTTER) not in client.get_container("c1").labels


def test_copy_mode_gives_the_same_bytes_and_cleans_up(
    daemon: ctd.Daemon, ns: str, client: Client, store: ArtifactStore, basic_image: Path, state_root: Path
) -> None:
    load(daemon, ns, basic_image, "ukrun/basic:1", ["c1", "c2"])
    view = store.acquire("c1")
    copy = store.acquire("c2", mode="copy")
    assert copy.kernel.read_bytes() == view.kernel.read_bytes()
    assert copy.initrd and view.initrd and copy.initrd.read_bytes() == view.initrd.read_bytes()
    assert copy.bytes_copied == copy.kernel.stat().st_size + copy.initrd.stat().st_size + copy.urunc_json.stat().st_size  # type: ignore[union-attr]
    assert str(copy.kernel).startswith(str(state_root / "copies"))
    store.release("c2")
    store.release("c1")
    assert not (state_root / "copies" / ns / "c2").exists()


def test_per_container_mode_makes_one_view_each(
    daemon: ctd.Daemon, ns: str, client: Client, store: ArtifactStore, basic_image: Path
) -> None:
    load(daemon, ns, basic_image, "ukrun/basic:1", ["c1", "c2"])
    a1 = store.acquire("c1", mode="per-container")
    a2 = store.acquire("c2", mode="per-container")
    assert a1.view_key != a2.view_key and sorted(views(client)) == sorted([a1.view_key, a2.view_key])
    assert a1.kernel.read_bytes() == a2.kernel.read_bytes()
    store.release("c1")
    store.release("c2")
    assert views(client) == []


def test_read_in_place_when_containerd_is_unreachable(tmp_path: Path, state_root: Path, basic_image: Path) -> None:
    rootfs = tmp_path / "rootfs"
    for layer in images.Layout(basic_image).layer_blobs():
        with tarfile.open(fileobj=io.BytesIO(layer)) as lt:
            # filter= exists from Python 3.11.4 on; the image is ours, so plain extraction is safe too.
            lt.extractall(rootfs, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))  # type: ignore[arg-type]

    def connect() -> Client:
        return Client(str(tmp_path / "no.sock"), "x")

    store = ArtifactStore(state_root, "x", connect)
    with pytest.raises(errors.ContainerdUnavailable, match="no containerd socket"):
        store.acquire("c1")
    art = store.acquire("c1", rootfs=rootfs)
    assert art.mode == "in-place" and art.kernel == rootfs / "unikernel" / "kernel"
    assert "containerd is unreachable" in art.reason
    assert not store.release("c1") and not any(state_root.iterdir()), "in place: nothing held, nothing written"


def test_concurrent_acquires_make_exactly_one_view(
    daemon: ctd.Daemon, ns: str, client: Client, basic_image: Path, state_root: Path
) -> None:
    ids = [f"c{i}" for i in range(6)]
    load(daemon, ns, basic_image, "ukrun/basic:1", ids)
    env = {**daemon.env(), "CONTAINERD_NAMESPACE": ns, "UKRUN_CONFIG": str(daemon_config(daemon))}
    cmd = [sys.executable, "-m", "ukrun", "--state-root", str(state_root), "view", "acquire", "--json"]
    procs = [subprocess.Popen([*cmd, cid], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for cid in ids]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1].decode() for o in outs]
    keys = {json.loads(o[0])["view_key"] for o in outs}
    assert len(keys) == 1 and views(client) == list(keys)
    for cid in ids:
        subprocess.run([*cmd[:6], "release", cid], env=env, check=True)
    assert views(client) == []


@pytest.mark.parametrize("step", ["acquire-after-view", "acquire-after-label", "acquire-after-mount"])
def test_gc_reclaims_everything_after_a_crash(
    daemon: ctd.Daemon, ns: str, client: Client, basic_image: Path, state_root: Path, step: str
) -> None:
    load(daemon, ns, basic_image, "ukrun/basic:1", ["c1"])
    env = {**daemon.env(), "CONTAINERD_NAMESPACE": ns, "UKRUN_CONFIG": str(daemon_config(daemon)),
           "UKRUN_CRASH_AT": step}
    base = [sys.executable, "-m", "ukrun", "--state-root", str(state_root)]
    proc = subprocess.run([*base, "view", "acquire", "c1"], env=env, capture_output=True)
    assert proc.returncode == -9, proc.stderr.decode()
    assert views(client), "the crash happened before View: nothing to reclaim"
    env.pop("UKRUN_CRASH_AT")
    out = subprocess.run([*base, "gc"], env=env, capture_output=True, text=True, check=True).stdout
    assert "remove view" in out
    assert views(client) == []
    assert not client.list_leases([f'labels."{ACQUIRE_LABEL}"'])
    assert user_label(SNAPSHOTTER) not in client.get_container("c1").labels
    assert not [m for m in host.mountinfo() if m.mount_point.startswith(str(state_root))]
    assert list((state_root / "views").iterdir()) == []
    again = subprocess.run([*base, "gc"], env=env, capture_output=True, text=True, check=True).stdout
    assert again == ""


@pytest.mark.parametrize("step", ["acquire-before-user", "acquire-after-user"])
def test_release_reclaims_an_acquire_killed_around_recording_its_user(
    daemon: ctd.Daemon, ns: str, client: Client, basic_image: Path, state_root: Path, step: str
) -> None:
    # The container still exists, so gc must leave its hold alone: release (the shim's delete) takes it.
    load(daemon, ns, basic_image, "ukrun/basic:1", ["c1"])
    env = {**daemon.env(), "CONTAINERD_NAMESPACE": ns, "UKRUN_CONFIG": str(daemon_config(daemon)),
           "UKRUN_CRASH_AT": step}
    base = [sys.executable, "-m", "ukrun", "--state-root", str(state_root)]
    proc = subprocess.run([*base, "view", "acquire", "c1"], env=env, capture_output=True)
    assert proc.returncode == -9, proc.stderr.decode()
    assert views(client) and user_label(SNAPSHOTTER) in client.get_container("c1").labels
    env.pop("UKRUN_CRASH_AT")
    out = subprocess.run([*base, "view", "release", "c1"], env=env, capture_output=True, text=True)
    assert out.returncode == 0 and "holds no artifacts" not in out.stderr, out.stderr
    assert views(client) == []
    assert user_label(SNAPSHOTTER) not in client.get_container("c1").labels
    assert not [m for m in host.mountinfo() if m.mount_point.startswith(str(state_root))]
    assert subprocess.run([*base, "gc"], env=env, capture_output=True, text=True, check=True).stdout == ""


def test_view_of_a_deleted_container_is_reclaimed(
    daemon: ctd.Daemon, ns: str, client: Client, store: ArtifactStore, basic_image: Path
) -> None:
    load(daemon, ns, basic_image, "ukrun/basic:1", ["c1"])
    store.acquire("c1")
    daemon.delete_container(ns, "c1")  # deleted behind ukrun's back
    actions = store.gc()
    assert any("container gone" in a for a in actions)
    assert views(client) == [] and store.views() == []


def test_cli_acquire_ls_release(daemon: ctd.Daemon, ns: str, basic_image: Path, state_root: Path) -> None:
    load(daemon, ns, basic_image, "ukrun/basic:1", ["c1"])
    env = {**daemon.env(), "CONTAINERD_NAMESPACE": ns, "UKRUN_CONFIG": str(daemon_config(daemon))}
    base = [sys.executable, "-m", "ukrun", "--state-root", str(state_root)]

    def run(*args: str) -> str:
        return subprocess.run([*base, *args], env=env, capture_output=True, text=True, check=True).stdout

    art = json.loads(run("view", "acquire", "c1", "--json"))
    assert Path(art["kernel"]).is_file() and art["bytes_copied"] == 0
    (ls,) = json.loads(run("view", "ls", "--json"))
    assert ls["key"] == art["view_key"] and ls["users"] == ["c1"] and ls["mounted"]
    assert art["view_key"] in run("view", "ls")
    run("view", "release", "c1")
    assert json.loads(run("view", "ls", "--json")) == []


def test_errors_name_the_problem_and_the_fix(daemon: ctd.Daemon, ns: str, client: Client, tmp_path: Path,
                                            basic_image: Path) -> None:
    with pytest.raises(errors.ContainerdUnavailable, match="CONTAINERD_ADDRESS"):
        Client(str(tmp_path / "missing.sock"), ns)
    plain = tmp_path / "plain"
    plain.write_text("")
    with pytest.raises(errors.ContainerdUnavailable, match="is not a socket"):
        Client(str(plain), ns)
    import socket

    fake = socket.socket(socket.AF_UNIX)
    fake.bind(str(tmp_path / "fake.sock"))
    fake.listen()
    try:
        with pytest.raises(errors.ContainerdUnavailable, match="is it containerd"):
            Client(str(tmp_path / "fake.sock"), ns, timeout=2).version()
    finally:
        fake.close()
    with pytest.raises(errors.NamespaceMissing, match="CONTAINERD_NAMESPACE"):
        Client(daemon.address, "no-such-namespace").get_container("c1")
    load(daemon, ns, basic_image, "ukrun/basic:1", [])
    with pytest.raises(errors.NotFound, match="container 'nope' does not exist"):
        client.get_container("nope")
    with pytest.raises(errors.SnapshotterNotLoaded, match="no snapshotter 'zfs' loaded"):
        client.view("zfs", "k", "p")
    assert client.version()[0].startswith(daemon.version)
    assert os.path.exists(daemon.address)


def test_marked_view_is_shared_across_images_with_the_same_artifact_layer(
    daemon: ctd.Daemon, ns: str, client: Client, store: ArtifactStore, image_dir: Path
) -> None:
    # Two images: same artifact layer, different app layers above it. One view serves both.
    t1 = images.unikernel_image(image_dir, "ukrun/app1:1", seed="s", above=[[Entry("/app", data=b"one")]])
    t2 = images.unikernel_image(image_dir, "ukrun/app2:1", seed="s", above=[[Entry("/app", data=b"two")]])
    load(daemon, ns, t1, "ukrun/app1:1", ["c1"])
    load(daemon, ns, t2, "ukrun/app2:1", ["c2"])
    a1, a2 = store.acquire("c1"), store.acquire("c2")
    assert image_chains(t1)[-1] != image_chains(t2)[-1]
    assert a1.view_key == a2.view_key and views(client) == [a1.view_key]
    store.release("c1")
    store.release("c2")


def test_doctor_reports_each_check_with_its_fix(daemon: ctd.Daemon, tmp_path: Path) -> None:
    base = [sys.executable, "-m", "ukrun", "--state-root", str(tmp_path / "state"), "doctor", "--json"]
    ok = subprocess.run(base, env=daemon.env(), capture_output=True, text=True)
    checks = {c["name"]: c for c in json.loads(ok.stdout)}
    assert ok.returncode == 0, ok.stdout
    assert checks["containerd"]["status"] == "ok" and daemon.version in checks["containerd"]["detail"]
    assert checks["snapshotter blockfile"]["status"] == "ok"
    assert checks["monitor qemu"]["status"] == "ok" and checks["kvm"]["status"] in ("ok", "warn")
    bad = subprocess.run([*base[:-2], "--address", str(tmp_path / "none.sock"), "doctor", "--json"],
                         env=daemon.env(), capture_output=True, text=True)
    failed = {c["name"]: c for c in json.loads(bad.stdout)}
    assert bad.returncode == 1 and failed["containerd"]["status"] == "fail" and failed["containerd"]["fix"]


def test_release_completes_when_containerd_is_down_and_gc_finishes_the_job(
    daemon: ctd.Daemon, ns: str, client: Client, store: ArtifactStore, basic_image: Path, state_root: Path,
    tmp_path: Path,
) -> None:
    load(daemon, ns, basic_image, "ukrun/basic:1", ["c1"])
    art = store.acquire("c1")
    offline = ArtifactStore(state_root, ns, lambda: Client(str(tmp_path / "down.sock"), ns))
    assert offline.release("c1")  # no error: unmounted and forgotten locally
    assert not host.mounts_at(art.mount_point) and offline.views() == []  # type: ignore[arg-type]
    assert views(client) == [art.view_key]  # containerd still has it, held by the container's label
    daemon.delete_container(ns, "c1")  # the label's holder goes: containerd's own GC takes the view
    force_gc(client)
    assert ctd.wait_for(lambda: views(client) == [], timeout=GC_WAIT)


@pytest.mark.parametrize("snapshotter", ["overlayfs", "native"])
def test_views_on_directory_snapshotters(daemon: ctd.Daemon, ns: str, client: Client, store: ArtifactStore,
                                         basic_image: Path, image_dir: Path, snapshotter: str) -> None:
    # Views of directory snapshotters come back as bind (one layer) or overlay (several) mounts.
    daemon.import_image(ns, basic_image, snapshotter)
    for cid in ("d1", "d2"):
        daemon.create_container(ns, "ukrun/basic:1", cid, snapshotter)
    a1, a2 = store.acquire("d1"), store.acquire("d2")
    assert a1.view_key == a2.view_key and a1.snapshotter == snapshotter
    assert a1.kernel.read_bytes() == source_kernel(image_dir)
    assert [s.name for s in client.list_snapshots(snapshotter, ["kind==view"])] == [a1.view_key]
    with pytest.raises(OSError):
        (a1.mount_point / "x").write_text("no")  # type: ignore[operator]
    store.release("d1")
    store.release("d2")
    assert not host.mounts_at(a1.mount_point)  # type: ignore[arg-type]
    assert client.list_snapshots(snapshotter, ["kind==view"]) == []


def test_gc_all_namespaces(daemon: ctd.Daemon, ns: str, basic_image: Path, state_root: Path) -> None:
    other = ns + "b"
    env = {**daemon.env(), "CONTAINERD_NAMESPACE": ns, "UKRUN_CONFIG": str(daemon_config(daemon))}
    base = [sys.executable, "-m", "ukrun", "--state-root", str(state_root)]
    for namespace in (ns, other):
        load(daemon, namespace, basic_image, "ukrun/basic:1", ["c1"])
        crash = subprocess.run([*base, "--namespace", namespace, "view", "acquire", "c1"],
                               env={**env, "UKRUN_CRASH_AT": "acquire-after-label"}, capture_output=True)
        assert crash.returncode == -9
    out = subprocess.run([*base, "gc", "--all-namespaces"], env=env, capture_output=True, text=True, check=True).stdout
    assert f"[{ns}] remove view" in out and f"[{other}] remove view" in out
    for namespace in (ns, other):
        with Client(daemon.address, namespace) as c:
            assert views(c) == [] and user_label(SNAPSHOTTER) not in c.get_container("c1").labels
    assert list((state_root / "views").iterdir()) == []


def test_gc_leaves_alone_what_another_state_root_holds(
    daemon: ctd.Daemon, ns: str, client: Client, store: ArtifactStore, basic_image: Path, tmp_path: Path
) -> None:
    # An operator's gc run with another state root (say the default /run/ukrun while the runtime's config
    # names another) must not take views, labels or leases that the runtime's root is using.
    load(daemon, ns, basic_image, "ukrun/basic:1", ["c1"])
    art = store.acquire("c1")
    other = ArtifactStore(tmp_path / "other-root", ns, lambda: Client(daemon.address, ns))
    assert other.gc() == []
    assert views(client) == [art.view_key]
    assert client.get_container("c1").labels[user_label(SNAPSHOTTER)] == art.view_key
    assert art.kernel.read_bytes() == source_kernel(basic_image.parent)
    store.release("c1")
    assert views(client) == []


def test_views_on_the_erofs_snapshotter(daemon: ctd.Daemon, ns: str, client: Client, store: ArtifactStore,
                                        basic_image: Path, image_dir: Path) -> None:
    # containerd 2.1's erofs snapshotter keeps each committed layer as one erofs image file, mounted by
    # the snapshotter; a view of the marked layer is a mount of it, shared like any other.
    if daemon.version == "1.7":
        pytest.skip("containerd 1.7 has no erofs snapshotter")
    daemon.import_image(ns, basic_image, "erofs")
    for cid in ("e1", "e2"):
        daemon.create_container(ns, "ukrun/basic:1", cid, "erofs")
    a1, a2 = store.acquire("e1"), store.acquire("e2")
    assert a1.view_key == a2.view_key and a1.snapshotter == "erofs" and "marked layer" in a1.chain_reason
    assert a1.kernel.read_bytes() == source_kernel(image_dir)
    store.release("e1")
    store.release("e2")
    assert not host.mounts_at(a1.mount_point)  # type: ignore[arg-type]
    assert client.list_snapshots("erofs", ["kind==view"]) == []
