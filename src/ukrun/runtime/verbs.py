"""The runtime's verbs and what they share: the context of one invocation, handing a container that is
not a unikernel to runc, reading a unikernel's configuration, and `delete`'s teardown. `create` lives in
`runtime.create`, the only place that composes artifacts, rootfs, guest type and monitor.

`state`, `start` and `kill` run for every container, often: they import nothing beyond the standard
library and `runtime.state`. `create` and `delete` talk to containerd and import its client on demand.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from ukrun import config as configmod
from ukrun import crashpoints, tree
from ukrun.errors import UkrunError
from ukrun.logs import log
from ukrun.runtime import hot
from ukrun.runtime import state as st
from ukrun.timing import Timer
from ukrun.tuples import NamedTuple

TYPE_CHECKING = False  # not typing's, whose import costs a create without a helper about 2 ms
if TYPE_CHECKING:
    from typing import NoReturn

    from ukrun.artifacts.idle import IdleViews
    from ukrun.artifacts.store import ArtifactStore
    from ukrun.containerd.client import Client
    from ukrun.unikernel import UnikernelConfig

MODE_ANNOTATION = "io.ukrun.artifacts.mode"  # per container: shared, per-container or copy
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class Context(NamedTuple):
    root: Path
    config: configmod.Config
    argv: list[str]  # our own arguments, to hand a container that is not a unikernel to runc
    address: str = ""
    namespace: str = ""
    systemd_cgroup: bool = False
    state_root: Path | None = None  # artifact views; default [artifacts] state_root
    shim: int = 0  # the shim's PID (its mount namespace is the host's), when this process is not its child
    relayed: bool = False  # a helper's worker (ukrun.helper): the shim's child execs runc, not this process

    @property
    def artifacts_root(self) -> Path:
        return self.state_root or self.config.state_root

    def containerd_address(self) -> str:
        # The shim exports the address of the containerd that runs this container: the surest source.
        return self.address or os.environ.get("GRPC_ADDRESS") or self.config.address

    def containerd_named(self) -> bool:
        """Whether a containerd manages this invocation's containers: the shim's GRPC_ADDRESS, --address,
        or an address the configuration chose. Podman, CRI-O and other callers of the OCI runtime name
        none, and ukrun then asks no containerd (artifacts.source)."""
        return bool(self.address or os.environ.get("GRPC_ADDRESS") or self.config.address_set)

    def containerd_namespace(self, bundle: Path | None = None) -> str:
        """--namespace, else the shim's NAMESPACE, else the bundle's place in containerd's layout
        (<state>/io.containerd.runtime.v2.task/<namespace>/<id>), else --root's last component
        (/run/containerd/runc/<namespace>), else the config."""
        if self.namespace or os.environ.get("NAMESPACE"):
            return self.namespace or os.environ["NAMESPACE"]
        if bundle is not None and bundle.parent.parent.name.startswith("io.containerd.runtime"):
            return bundle.parent.name
        return self.root.name or self.config.namespace

    def timer(self, container: str, verb: str) -> Timer:
        return Timer(self.config.timing_log, container, verb)

    def shim_pid(self) -> int:
        return self.shim or os.getppid()


class HandToRunc(BaseException):
    """runc, for a container that is not a unikernel, in a helper's worker (ukrun.helper): the shim's child
    execs it. A BaseException, like SystemExit: it leaves the verb, and no handler of errors takes it."""

    def __init__(self, runc: str) -> None:
        super().__init__(runc)
        self.runc = runc


def exec_runc(ctx: Context) -> NoReturn:
    """Hands the whole invocation to runc: for containers that are not unikernels. Never to ukrun itself (a node
    may install it as `runc`): the file this process was started as, which the compiled front, when it hands a
    call to the interpreter, makes its own (sys.argv[0]), as a helper started through it does."""
    me = os.path.realpath(sys.argv[0]) if sys.argv else ""
    search = os.environ.get("PATH") or DEFAULT_PATH  # Podman runs kill and delete with no PATH
    runc = ctx.config.runc or next(
        (p for d in search.split(":") if (p := os.path.join(d, "runc"))
         and os.access(p, os.X_OK) and os.path.realpath(p) != me),
        "",
    )
    if not runc:
        raise UkrunError("this container is not a unikernel and no runc was found: install runc or set [runtime] runc")
    if ctx.relayed:
        raise HandToRunc(runc)
    try:
        os.execv(runc, [runc, *ctx.argv])
    except OSError as exc:
        raise UkrunError(f"this container is not a unikernel and runc {runc} cannot run ({exc.strerror}): install "
                         "runc or set [runtime] runc") from None


def store(ctx: Context, namespace: str, connect: Callable[[], Client] | None = None) -> ArtifactStore:
    """`connect`: the client to use, when the caller has one or makes one (else connected at first use)."""
    from ukrun.artifacts.store import ArtifactStore
    from ukrun.containerd import connector

    connect = connect or connector(ctx.containerd_address(), namespace, ctx.config.timeout)
    return ArtifactStore(ctx.artifacts_root, namespace, connect, ctx.config.view_idle)


def views(ctx: Context, namespace: str) -> IdleViews:
    """What `delete` needs of the artifacts: releasing, without acquire's imports."""
    from ukrun.artifacts.idle import IdleViews
    from ukrun.containerd import connector

    connect = connector(ctx.containerd_address(), namespace, ctx.config.timeout)
    return IdleViews(ctx.artifacts_root, namespace, connect, ctx.config.view_idle)


# -- create -------------------------------------------------------------------------------------------
def unikernel_config(spec_annotations: Mapping[str, str], rootfs: Path) -> UnikernelConfig | None:
    """The spec's annotations, else `/urunc.json` in the rootfs, else None: not a unikernel.

    An image that carries a `/urunc.json` is a unikernel image whatever that entry is: one ukrun cannot
    use (a link out of the image, a folder, bad content) is refused with the reason, never handed to runc.
    """
    from ukrun.artifacts import paths
    from ukrun.unikernel import URUNC_JSON, URUNC_JSON_LIMIT, from_annotations, parse_urunc_json

    found = from_annotations(spec_annotations)
    if found is not None:
        return found
    if not os.path.lexists(rootfs / URUNC_JSON.lstrip("/")):
        return None
    return parse_urunc_json(paths.read_file(rootfs, URUNC_JSON, URUNC_JSON_LIMIT, "urunc.json"))


def reclaim_leftover(ctx: Context, container_id: str) -> None:
    """A state folder for this ID: a create that crashed before its delete ran is reclaimed; anything
    alive, or not ours, is an error."""
    if not st.is_ours(ctx.root, container_id):
        raise UkrunError(f"container {container_id} already exists in {ctx.root}")
    old = st.load(ctx.root, container_id)
    if st.alive(old) or st.creating(old) or old.started:
        raise UkrunError(f"container {container_id} already exists in {ctx.root}: delete it first")
    log.warning("%s: reclaiming what an earlier create of this ID left", container_id)
    teardown(ctx, old)


# -- delete -----------------------------------------------------------------------------------------------
def delete(ctx: Context, container_id: str, force: bool) -> None:
    timer = ctx.timer(container_id, "delete")
    timer.mark("start")
    record = st.load(ctx.root, container_id)
    hot.deletable(ctx.root, record, force)
    teardown(ctx, record, timer)
    timer.mark("done")
    timer.flush()


def teardown(ctx: Context, record: st.ContainerState, timer: Timer | None = None) -> None:
    """Removes everything a create made, whatever step it reached: its processes and cgroups (hot.stop), its
    network, the artifacts and the state folder. Idempotent. `timer`: delete's phases."""
    if record.paused:  # frozen processes would not die
        from ukrun.runtime import control

        with contextlib.suppress(UkrunError):
            control.set_frozen(record, False)
    hot.stop(record)
    if timer:
        timer.mark("stopped")
    if record.tap:
        _disconnect(record)
        crashpoints.point("teardown-after-network")
    if record.control_socket:
        remove_socket(record.control_socket)
    for device, source in record.volumes:  # visible in the log: ukrun never remounts a volume
        log.info("%s: block volume %s stays unmounted from %s; remounting it is its owner's job", record.id,
                 device, source)
    # Where create acquired, whoever deletes. Idempotent, and without a record it connects to nothing.
    # A container no containerd managed has no namespace and acquired nothing (artifacts.source).
    if record.namespace and record.acquired:
        views(ctx, record.namespace).release(record.id)
    crashpoints.point("teardown-after-release")
    if timer:
        timer.mark("released")
    tree.remove_tree(st.container_dir(ctx.root, record.id))


def remove_socket(path: str) -> None:
    """Removes a control socket the monitor left, and nothing else: the folder is the operator's."""
    import stat

    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)


def _disconnect(record: st.ContainerState) -> None:
    from ukrun.network import connect

    if record.netns == f"/proc/{record.pid}/ns/net":
        return  # the container's own (runtime.startnet), which takes the tap with it
    connect.disconnect(record.netns, record.tap, record.nat)


def gc(ctx: Context, dry_run: bool) -> list[str]:
    """Reclaims what creates that crashed left under the runtime root: a container never started, whose
    create and init are both gone."""
    actions = []
    for name in sorted(os.listdir(ctx.root)) if ctx.root.is_dir() else []:
        if not st.is_ours(ctx.root, name):
            continue
        record = st.load(ctx.root, name)
        if record.started or st.alive(record) or st.creating(record):
            continue
        actions.append(f"remove container {name} (its create did not finish) from {ctx.root}")
        if not dry_run:
            teardown(ctx, record)
    return actions


def features() -> dict[str, object]:
    return {
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.1.0",
        "hooks": [],
        "mountOptions": [],
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "uts"],
            "capabilities": [],
            "cgroup": {"v1": True, "v2": True, "systemd": False},
        },
        "annotations": {"io.ukrun.unikernels": "com.urunc.unikernel.*"},
    }
