"""How a folder rootfs reaches the guest, decided: a pure part of `runtime.plan`. virtio-9p is served by
the monitor itself; virtio-fs by a virtiofsd per container, which the container's init starts before the
monitor (see ukrun.launcher) and which this module names completely.

The choice: the annotation `io.ukrun.rootfs.share`, else `[runtime] rootfs_share`. `auto` is urunc's rule:
virtio-fs when the guest and the monitor support it and a virtiofsd is configured
(`[extra_binaries.virtiofsd] path`), else 9p. `virtiofs` chosen explicitly is refused, with the fix, when
any of those is missing; unless 9p is chosen, a configured virtiofsd that is not an executable file is
refused, never passed over.

virtiofsd's options, chosen here and why (the configured `options` come after them and replace any of
them they name; the ones ukrun must own are refused there):
- `--fd=3`: the init binds and listens on the socket before it starts virtiofsd and the monitor, so the
  monitor's connection never races the daemon's start (qemu fails at once if nobody listens).
- `--sandbox=namespace` (virtiofsd's default, stated): new mount, PID and network namespaces with the
  shared folder as their root (pivot_root), so a guest that subverts virtiofsd still sees only its rootfs.
- `--cache=always`: the folder is the container's own and only its guest writes to it while it runs,
  so the guest may keep what it read; writes still go through to the folder at once (no `--writeback`).
- `--log-level=warn` to a log file in the state folder: virtiofsd's routine messages stay off the
  container's console, its warnings stay readable until the container is deleted.
- `--modcaps=-mknod:-setfcap`: virtiofsd runs as root, so that the guest's files keep their owners, with
  the capabilities it keeps by default; without CAP_MKNOD and CAP_SETFCAP the guest cannot make device
  nodes (which would open the host's disks to whoever later uses the folder) or give files capabilities.
  No capability keeps an owner from setting the set-user-ID and set-group-ID bits of its own file, so
  the init also runs virtiofsd under ukrun.fsguard's seccomp filter, which refuses those modes (and device
  nodes, whatever `options` say): the folder on the host never gets a set-ID file from the guest.
Where fsguard does not know the machine's system calls, virtio-fs is not offered (`auto` takes 9p).
"""

from __future__ import annotations

import enum

from ukrun.errors import PlanError
from ukrun.hypervisors import base as hv
from ukrun.tuples import NamedTuple
from ukrun.unikernels import base as guests
from ukrun.unikernels.base import RootMode

SHARE_ANNOTATION = "io.ukrun.rootfs.share"
SOCKET = "virtiofs.sock"  # in the container's state folder
LOG = "virtiofsd.log"
SOCKET_FD = 3
SUN_PATH_MAX = 107  # a Unix socket's path, in bytes, without its terminating NUL
DEFAULTS = (("--sandbox", "namespace"), ("--cache", "always"), ("--log-level", "warn"),
            ("--modcaps", "-mknod:-setfcap"))
OWNED = ("--fd", "--socket-path", "--socket", "--shared-dir", "--socket-group", "--syslog")


class ShareChoice(enum.Enum):
    AUTO = "auto"
    NINEP = "9p"
    VIRTIOFS = "virtiofs"


class VirtiofsdFacts(NamedTuple):
    path: str = ""  # [extra_binaries.virtiofsd] path; "" when not configured
    executable: bool = False  # the path is an executable file
    options: str = ""  # [extra_binaries.virtiofsd] options
    confined: bool = True  # ukrun.fsguard knows this machine's system calls


class VirtiofsdPlan(NamedTuple):
    """The container's virtiofsd: the init binds `socket`, hands it over as fd SOCKET_FD, runs `argv`
    with its stderr on `log`, and ends it when the monitor ends (or dies with the init)."""

    argv: tuple[str, ...]
    socket: str
    shared_dir: str
    log: str


def choose(guest: guests.UnikernelType, monitor: hv.Hypervisor, configured: str,
           annotations: tuple[tuple[str, str], ...], vfsd: VirtiofsdFacts) -> tuple[RootMode, tuple[str, ...]]:
    """SHARED (9p) or VIRTIOFS for a folder rootfs, and a note on why."""
    given = dict(annotations).get(SHARE_ANNOTATION, "")
    where = f"annotation {SHARE_ANNOTATION}" if given else "[runtime] rootfs_share"
    try:
        choice = ShareChoice(given or configured)
    except ValueError:
        choices = ", ".join(c.value for c in ShareChoice)
        raise PlanError(f"{where}={given or configured!r} is not one of {choices}") from None
    if choice is ShareChoice.NINEP:
        return RootMode.SHARED, (f"{where} chose 9p",)
    if vfsd.path and not vfsd.executable:
        raise PlanError(f"[extra_binaries.virtiofsd] path {vfsd.path!r} is not an executable file: install "
                        "virtiofsd there, or correct or remove that path in ukrun's config.toml")
    missing = _missing(guest, monitor, vfsd)
    if choice is ShareChoice.AUTO:
        if missing:
            return RootMode.SHARED, (f"the rootfs folder goes over 9p: {missing}",)
        return RootMode.VIRTIOFS, ("the rootfs folder goes over virtio-fs: guest, monitor and virtiofsd support it",)
    if missing:
        raise PlanError(f"{where} chose virtiofs, but {missing}: "
                        + ("configure [extra_binaries.virtiofsd] path in ukrun's config.toml"
                           if not vfsd.path else f"set {SHARE_ANNOTATION}=9p"))
    return RootMode.VIRTIOFS, (f"{where} chose virtiofs",)


def _missing(guest: guests.UnikernelType, monitor: hv.Hypervisor, vfsd: VirtiofsdFacts) -> str:
    if not guest.virtiofs_root:
        return f"a {guest.name} guest has no virtio-fs driver"
    if not monitor.can_virtiofs:
        return f"ukrun shares folders over virtio-fs on qemu only, not on {monitor.name}"
    if not vfsd.path:
        return "no virtiofsd is configured ([extra_binaries.virtiofsd] path)"
    if not vfsd.confined:
        return "ukrun cannot confine virtiofsd on this machine's architecture (ukrun.fsguard)"
    return ""


def virtiofsd(vfsd: VirtiofsdFacts, shared_dir: str, state_dir: str) -> VirtiofsdPlan:
    """The container's virtiofsd command, serving `shared_dir` on a socket in the state folder."""
    socket = f"{state_dir}/{SOCKET}"
    if len(socket.encode()) > SUN_PATH_MAX:
        raise PlanError(f"the virtio-fs socket path {socket} is over {SUN_PATH_MAX} bytes, a Unix socket's "
                        "limit: use a shorter runtime root (the shim's --root) or 9p")
    import shlex  # only for a container that goes over virtio-fs

    try:
        extra = tuple(shlex.split(vfsd.options))
    except ValueError as exc:
        raise PlanError(f"[extra_binaries.virtiofsd] options: {exc}") from None
    keys = {word.split("=", 1)[0] for word in extra if word.startswith("--")}
    owned = sorted(keys & set(OWNED))
    if owned:
        raise PlanError(f"[extra_binaries.virtiofsd] options name {', '.join(owned)}, which ukrun sets per "
                        "container: remove them from options")
    ours = tuple(f"{k}={v}" for k, v in DEFAULTS if k not in keys)
    argv = (vfsd.path, f"--fd={SOCKET_FD}", f"--shared-dir={shared_dir}", *ours, *extra)
    return VirtiofsdPlan(argv, socket, shared_dir, f"{state_dir}/{LOG}")
