"""runc's verbs beyond the hot ones, as containerd's shim and CRI call them: exec, ps, pause, resume,
update, events, checkpoint and restore (go-runc's command lines), and by hand.

Every call answers the way runc does: the shim reads a failure's reason from the last error line of the
`--log` file (ctr, crictl and the kubelet show it) and, for ps and update, from the output, so each
failure is one sentence written to both, never a parser's usage text. The flags are runc's; a flag
runc does not know either is refused naming it. Parsing stops at the first argument (the container's
ID), so an exec's command and ps's options pass through. A container that is not ukrun's goes to runc
with the very arguments it came with. Standard library only: an exec probe pays this on every call.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ukrun.fast import Globals

# verb -> flags taking a value, switches; runc's names and aliases
FLAGS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "exec": (("--process", "-p", "--pid-file", "--console-socket", "--cwd", "--env", "-e", "--user", "-u",
              "--additional-gids", "-g", "--process-label", "--apparmor", "--cap", "-c", "--preserve-fds",
              "--cgroup", "--pidfd-socket"),
             ("--detach", "-d", "--tty", "-t", "--no-new-privs", "--ignore-paused")),
    "ps": (("--format", "-f"), ()),
    "pause": ((), ()),
    "resume": ((), ()),
    "update": (("--resources", "-r", "--blkio-weight", "--cpu-period", "--cpu-quota", "--cpu-burst", "--cpu-share",
                "--cpu-rt-period", "--cpu-rt-runtime", "--cpuset-cpus", "--cpuset-mems", "--kernel-memory",
                "--kernel-memory-tcp", "--memory", "--cpu-idle", "--memory-reservation", "--memory-swap",
                "--pids-limit", "--l3-cache-schema", "--mem-bw-schema"), ()),
    "events": (("--interval",), ("--stats",)),
    "checkpoint": (("--image-path", "--work-path", "--parent-path", "--status-fd", "--page-server",
                    "--manage-cgroups-mode", "--empty-ns"),
                   ("--leave-running", "--tcp-established", "--tcp-skip-in-flight", "--link-remap", "--ext-unix-sk",
                    "--shell-job", "--lazy-pages", "--file-locks", "--pre-dump", "--auto-dedup")),
    "restore": (("--console-socket", "--image-path", "--work-path", "--manage-cgroups-mode", "--bundle", "-b",
                 "--pid-file", "--empty-ns", "--lsm-profile", "--lsm-mount-context"),
                ("--tcp-established", "--ext-unix-sk", "--shell-job", "--file-locks", "--detach", "-d",
                 "--no-subreaper", "--no-pivot", "--auto-dedup", "--lazy-pages")),
}
ALIASES = {"-p": "--process", "-e": "--env", "-u": "--user", "-g": "--additional-gids", "-c": "--cap",
           "-d": "--detach", "-t": "--tty", "-f": "--format", "-r": "--resources", "-b": "--bundle"}


class UsageError(Exception):
    pass


class Args:
    """A verb's flags (canonical name -> every value given, "" for a switch) and its arguments: the
    container's ID, then whatever follows it."""

    __slots__ = ("flags", "id", "rest")

    def __init__(self, flags: dict[str, list[str]], container_id: str, rest: list[str]) -> None:
        self.flags, self.id, self.rest = flags, container_id, rest

    def value(self, flag: str, default: str = "") -> str:
        return self.flags[flag][-1] if flag in self.flags else default

    def has(self, flag: str) -> bool:
        return flag in self.flags


def parse(verb: str, argv: list[str]) -> Args:
    valued, switches = FLAGS[verb]
    flags: dict[str, list[str]] = {}
    i = 0
    while i < len(argv) and argv[i].startswith("-") and argv[i] != "-":
        if argv[i] == "--":
            i += 1
            break
        flag, eq, value = argv[i].partition("=")
        if flag in valued:
            if not eq:
                if i + 1 >= len(argv):
                    raise UsageError(f"{verb}: flag {flag} needs a value")
                i += 1
                value = argv[i]
        elif flag in switches:
            if eq and value not in ("true", "false"):
                raise UsageError(f"{verb}: switch {flag} takes no value")
            if value == "false":
                i += 1
                continue
            value = ""
        else:
            raise UsageError(f"{verb}: unknown flag {flag} (runc's {verb} flags: {', '.join(valued + switches)})")
        flags.setdefault(ALIASES.get(flag, flag), []).append(value)
        i += 1
    if i >= len(argv):
        raise UsageError(f"{verb} needs a container ID")
    return Args(flags, argv[i], argv[i + 1:])


def run(g: Globals, verb: str, rest: list[str], argv: list[str]) -> int:
    """One of the verbs above; the process's exit code (runc's for a container that is not ours)."""
    from ukrun import fast
    from ukrun.errors import UkrunError
    from ukrun.runtime import state as st

    def work() -> int:
        try:
            args = parse(verb, rest)
        except UsageError as exc:
            named = [a for a in rest if not a.startswith("-") and _ours(g.root, a)]
            if not named:
                return _runc(g, argv)  # runc knows its own flags better
            raise UkrunError(f"{exc}; container {named[0]}") from None
        if verb == "restore":
            return _restore(g, args, argv)
        if not st.is_ours(g.root, args.id):
            return _runc(g, argv)
        return _dispatch(g, verb, args)

    return fast.guarded(g, work)


def _ours(root: str, name: str) -> bool:
    from ukrun.errors import UkrunError
    from ukrun.runtime import state as st

    try:
        return st.is_ours(root, name)
    except UkrunError:
        return False


def _dispatch(g: Globals, verb: str, args: Args) -> int:
    from ukrun.errors import UkrunError

    if verb == "exec":
        from ukrun.runtime import execverb

        return execverb.exec_(g.root, args)
    from ukrun.runtime import control

    if verb == "ps":
        fmt = args.value("--format", "table")
        if fmt not in ("table", "json"):
            raise UkrunError(f"ps: format {fmt!r} is not table or json")
        sys.stdout.write(control.ps(g.root, args.id, fmt, args.rest))
    elif verb in ("pause", "resume"):
        control.freeze(g.root, args.id, verb == "pause")
    elif verb == "update":
        control.update(g.root, args.id, _resources(args))
    elif verb == "events":
        control.events(g.root, args.id, args.has("--stats"), _seconds(args.value("--interval", "5s")))
    elif verb == "checkpoint":
        raise UkrunError(f"checkpoint is not supported for container {args.id}: {_guest_label(g.root, args.id)} runs "
                         "in a VM, whose memory and devices CRIU cannot save; stop the container and run a new one "
                         "from its image instead")
    return 0


def _guest_label(root: str, container_id: str) -> str:
    from ukrun.runtime import state as st
    from ukrun.unikernels.base import REGISTRY, get

    name = st.load(root, container_id).guest
    if name and name not in REGISTRY:
        get(name)  # registers the guest types
    cls = REGISTRY.get(name)
    return f"its guest ({cls.label})" if cls else "its guest"


def _restore(g: Globals, args: Args, argv: list[str]) -> int:
    """runc's restore for a plain container; a unikernel bundle is refused (it was never checkpointed)."""
    from pathlib import Path

    from ukrun.errors import UkrunError
    from ukrun.runtime import spec as specmod
    from ukrun.runtime import verbs

    bundle = Path(args.value("--bundle", ".")).resolve()
    spec = specmod.load(bundle)
    if verbs.unikernel_config(spec.annotations, spec.rootfs) is not None:
        raise UkrunError(f"restore is not supported for container {args.id}: its bundle is a unikernel, which ukrun "
                         "cannot checkpoint; create and start it instead")
    return _runc(g, argv)


def _resources(args: Args) -> dict[str, object]:
    """update's resources: the JSON of --resources (a file, or - for stdin), else runc's flags."""
    import json

    from ukrun.errors import UkrunError

    source = args.value("--resources")
    if source:
        try:
            text = sys.stdin.read() if source == "-" else open(source).read()  # noqa: SIM115 - read once
            given = json.loads(text)
        except (OSError, ValueError) as exc:
            raise UkrunError(f"update: cannot read the resources of container {args.id} from {source}: {exc}") from None
        if not isinstance(given, dict):
            raise UkrunError(f"update: the resources of container {args.id} are not a JSON object")
        return given
    cpu = {k: args.value(f) for k, f in (("shares", "--cpu-share"), ("quota", "--cpu-quota"),
                                          ("period", "--cpu-period"), ("cpus", "--cpuset-cpus"),
                                          ("mems", "--cpuset-mems")) if args.has(f)}
    doc: dict[str, object] = {"cpu": {k: v if k in ("cpus", "mems") else _int(v, k) for k, v in cpu.items()}}
    if args.has("--memory"):
        doc["memory"] = {"limit": _int(args.value("--memory"), "memory")}
    if args.has("--pids-limit"):
        doc["pids"] = {"limit": _int(args.value("--pids-limit"), "pids-limit")}
    other = sorted(f for f in args.flags if f not in ("--cpu-share", "--cpu-quota", "--cpu-period", "--cpuset-cpus",
                                                      "--cpuset-mems", "--memory", "--pids-limit"))
    if other:
        raise UkrunError(f"update {', '.join(other)} is not supported for container {args.id}: ukrun applies CPU, "
                         "cpuset and pids limits to its VM's cgroup and checks the memory limit")
    return doc


def _int(text: str, what: str) -> int:
    from ukrun.errors import UkrunError

    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    scale = units.get(text[-1:].lower(), 1) if what == "memory" else 1
    try:
        return int(text[:-1] if scale > 1 else text) * scale
    except ValueError:
        raise UkrunError(f"update: {what} {text!r} is not a number") from None


def _seconds(text: str) -> float:
    from ukrun.errors import UkrunError

    for suffix, scale in (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0)):
        if text.endswith(suffix):
            try:
                return float(text[: -len(suffix)]) * scale
            except ValueError:
                break
    raise UkrunError(f"events: interval {text!r} is not a duration such as 5s")


def _runc(g: Globals, argv: list[str]) -> int:
    from ukrun.fast import _runc as runc

    return runc(g, argv)
