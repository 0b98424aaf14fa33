"""The shim calls ukrun for every verb of every container. This entry point serves its calls with a tiny
parser and no argparse: `state`, `start` and `kill` of ukrun's own containers with the standard library
only; `create` and `delete` without the operator CLI's imports; and any of them for a container that is
not ukrun's straight to runc (a node may run ukrun as its only runtime). runc's other verbs (exec, ps,
pause, ...) go to `verbargs`, which parses them without argparse too. Anything unusual (other flags,
operator verbs) returns None and goes through the full CLI, which behaves the same.
What create and delete take to a resident helper (ukrun.relay), and the shim's forced delete of a container
already gone, import posix, not os (see relay): os costs every such call 1.2 ms; the other paths import it.
"""

import gc
import posix
import sys

TYPE_CHECKING = False  # not typing's: importing typing would cost every state, start and kill ~10 ms
if TYPE_CHECKING:
    from collections.abc import Callable

    from ukrun.runtime.verbs import Context

# The cyclic GC's first threshold (CPython's is 700 allocations). Loading the cold create path makes ~18,000
# objects that live until the process ends, and at 700 the collector walked them 31 times: 3 ms of its 31 ms of
# imports (median of 30, alternating), and a whole create without a helper went from 71 to 64 ms. At this
# threshold a verb never collects, and the processes that outlive theirs (the container's init, an exec's relay,
# the helper) still do, after as many allocations.
GC_ALLOCATIONS = 100_000
HOT = ("state", "start", "kill")
RUNC_VERBS = ("exec", "ps", "pause", "resume", "update", "events", "checkpoint", "restore")  # see verbargs
VALUED = ("--root", "--log", "--log-format", "--criu", "--rootless")
SWITCHES = ("--debug", "--systemd-cgroup")
OPERATOR_VALUED = ("--config", "--address", "--namespace", "-n", "--state-root")  # the full CLI's own
CREATE_VALUED = ("--bundle", "-b", "--pid-file", "--console-socket")
CREATE_SWITCHES = ("--no-pivot", "--no-new-keyring")
DELETE_SWITCHES = ("--force", "-f")


class Globals:
    """runc's global flags, as the shim passes them."""

    __slots__ = ("config", "debug", "log", "log_format", "root", "systemd_cgroup")

    def __init__(self) -> None:
        self.root, self.log, self.log_format, self.config = "/run/ukrun/runtime", "", "text", ""
        self.debug = self.systemd_cgroup = False


class CreateArgs:
    __slots__ = ("bundle", "console_socket", "id", "pid_file")

    def __init__(self, bundle: str, pid_file: str, console_socket: str, container_id: str) -> None:
        self.bundle, self.pid_file, self.console_socket, self.id = bundle, pid_file, console_socket, container_id


def _flags(argv: list[str], valued: tuple[str, ...], switches: tuple[str, ...]) -> tuple[dict[str, str], int] | None:
    """Leading flags: (flag -> value, "" for a switch; the index of the first argument), or None when a
    flag is unknown, lacks its value or gives a switch a value."""
    found: dict[str, str] = {}
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        flag, eq, value = argv[i].partition("=")
        if flag in valued:
            if not eq:
                if i + 1 >= len(argv):
                    return None
                value = argv[i + 1]
                i += 1
            found[flag] = value
        elif flag in switches and not eq:
            found[flag] = ""
        else:
            return None
        i += 1
    return found, i


def parse(argv: list[str], valued: tuple[str, ...] = VALUED,
          verbs: tuple[str, ...] = (*HOT, "create", "delete", *RUNC_VERBS)) -> tuple[Globals, str, list[str]] | None:
    """(global flags, verb, the verb's arguments) for the verbs served here."""
    parsed = _flags(argv, valued, SWITCHES)
    if parsed is None:
        return None
    found, i = parsed
    if i >= len(argv) or argv[i] not in verbs:
        return None
    g = Globals()
    g.root = found.get("--root", g.root)
    g.log = found.get("--log", g.log)
    g.log_format = found.get("--log-format", g.log_format)
    g.config = found.get("--config", "")
    g.debug, g.systemd_cgroup = "--debug" in found, "--systemd-cgroup" in found
    return g, argv[i], argv[i + 1:]


def parse_create(rest: list[str]) -> CreateArgs | None:
    """create's flags come before the ID, as the shim passes them."""
    parsed = _flags(rest, CREATE_VALUED, CREATE_SWITCHES)
    if parsed is None:
        return None
    found, i = parsed
    if len(rest) != i + 1:
        return None
    return CreateArgs(found.get("--bundle", found.get("-b", ".")), found.get("--pid-file", ""),
                      found.get("--console-socket", ""), rest[i])


def parse_delete(rest: list[str]) -> tuple[bool, str] | None:
    """(force, ID)."""
    parsed = _flags(rest, (), DELETE_SWITCHES)
    if parsed is None or len(rest) != parsed[1] + 1:
        return None
    return bool(parsed[0]), rest[-1]


def run(argv: list[str]) -> int | None:
    parsed = parse(argv)
    if parsed is None:
        return None
    g, verb, rest = parsed
    if verb == "create":
        args = parse_create(rest)
        if args is None:
            return None
        code = _relayed("create", argv, g.root, args.id)
        return _create(g, args, argv) if code is None else code
    if verb == "delete":
        deleting = parse_delete(rest)
        if deleting is None:
            return None
        if deleting[0] and gone(g.root, deleting[1]):
            return 0
        code = bare_delete(g, *deleting)
        if code is None:
            code = _relayed("delete", argv, g.root, deleting[1])
        return full_delete(g, *deleting, lambda: context(g, argv)) if code is None else code
    if verb in RUNC_VERBS:
        from ukrun import verbargs

        return verbargs.run(g, verb, rest, argv)
    return hot(g, verb, rest, argv)


def hot(g: Globals, verb: str, rest: list[str], argv: list[str],
        make: "Callable[[], Context] | None" = None) -> int | None:
    """`state`, `start` or `kill` (a helper's worker too: `make` its context, for a container to hand to runc);
    None, before anything is done, for arguments these do not take."""
    call = hot_call(verb, rest)
    if call is None:
        return None
    container_id, signal, all_processes = call
    from ukrun.errors import UkrunError
    from ukrun.runtime import state as st

    try:
        if not st.is_ours(g.root, container_id):
            return _runc(g, argv, make)
        from ukrun.runtime import hot

        if verb == "state":
            import json

            sys.stdout.write(json.dumps(hot.state(g.root, container_id), indent=1) + "\n")
        elif verb == "start":
            hot.start(g.root, container_id)
        else:
            hot.kill(g.root, container_id, hot.parse_signal(signal), all_processes)
    except UkrunError as exc:
        _error(g, str(exc))
        return 1
    return 0


def hot_call(verb: str, rest: list[str]) -> tuple[str, str, bool] | None:
    """(container ID, kill's signal, kill's --all) from the arguments of `state`, `start` or `kill`."""
    all_processes = False
    if verb == "kill" and rest and rest[0] in ("--all", "-a"):
        all_processes, rest = True, rest[1:]
    if not rest or any(a.startswith("-") for a in rest) or len(rest) > (2 if verb == "kill" else 1):
        return None
    return rest[0], rest[1] if len(rest) > 1 else "SIGTERM", all_processes


def bare_delete(g: Globals, force: bool, container_id: str) -> int | None:
    """The delete of a container of ukrun's that holds nothing but its processes, cgroups and state folder
    (runtime.hot.bare), here and with the standard library's basics; None for any other: a helper's worker
    or the full delete does it."""
    from ukrun.errors import UkrunError
    from ukrun.runtime import hot
    from ukrun.runtime import state as st

    try:
        if not st.is_ours(g.root, container_id):
            return None
        return 0 if hot.delete(g.root, container_id, force) else None
    except UkrunError as exc:
        _error(g, str(exc))
        return 1


def _relayed(verb: str, argv: list[str], root: str, container_id: str) -> int | None:
    """The verb's exit code from a resident helper (ukrun.relay), or None: no helper, run it here."""
    from ukrun import relay

    return relay.run(verb, argv, join(root, container_id)) if valid_id(container_id) and relay.answering() else None


def valid_id(container_id: str) -> bool:
    """An ID that names a folder in the root (runc's own rule, and the compiled front's)."""
    return bool(container_id) and "/" not in container_id and container_id not in (".", "..")


def join(root: str, name: str) -> str:
    return root + name if root.endswith("/") else f"{root}/{name}"


def gone(root: str, container_id: str) -> bool:
    """Whether neither ukrun nor runc (they share the shim's --root) has anything of the container: a forced
    delete of it is then a no-op that succeeds, as runc's is. The shim's clean-up runs one after every
    delete, and answering it here spares it the configuration and an exec of runc."""
    if not valid_id(container_id):
        return False  # runc's error, through the usual path
    try:
        posix.lstat(join(root, container_id))
    except OSError:
        return True
    return False


def _error(g: Globals, message: str) -> None:
    from ukrun import logs

    logs.setup(g.log, g.log_format, g.debug)
    logs.log.error("%s", message)


def context(g: Globals, argv: list[str]) -> "Context":
    from pathlib import Path

    from ukrun import config as configmod
    from ukrun.runtime import verbs

    return verbs.Context(root=Path(g.root), config=configmod.load(Path(g.config) if g.config else None,
                                                                 cache_dir=Path(g.root)),
                         argv=argv, systemd_cgroup=g.systemd_cgroup)


def guarded(g: Globals, work: "Callable[[], int | None]") -> int:
    """What the full CLI does around a verb (see cli.main): errors logged where the shim reads them. The
    exit code is the work's (0 when it returns none), 1 when it fails."""
    from ukrun import logs
    from ukrun.errors import UkrunError

    logs.setup(g.log, g.log_format, g.debug)
    try:
        return work() or 0
    except UkrunError as exc:
        logs.log.error("%s", exc)
        return 1
    except Exception as exc:  # a bug: still give the shim (and so ctr) a reason
        logs.log.exception("internal error: %s: %s", type(exc).__name__, exc)
        return 1


def _create(g: Globals, args: CreateArgs, argv: list[str]) -> int:
    def work() -> None:
        from pathlib import Path

        from ukrun.runtime.create import create

        create(context(g, argv), args.id, Path(args.bundle).resolve(),
               Path(args.pid_file) if args.pid_file else None, args.console_socket)

    return guarded(g, work)


def full_delete(g: Globals, force: bool, container_id: str, make: "Callable[[], Context]") -> int:
    def work() -> None:
        from ukrun.runtime import state as st
        from ukrun.runtime import verbs

        ctx = make()
        if not st.is_ours(g.root, container_id):
            verbs.exec_runc(ctx)
        verbs.delete(ctx, container_id, force)

    return guarded(g, work)


def _runc(g: Globals, argv: list[str], make: "Callable[[], Context] | None" = None) -> int:
    """A container that is not ukrun's: the whole invocation goes to runc (never returns on success; a helper's
    worker hands it back to its caller instead)."""
    from ukrun.runtime import verbs

    return guarded(g, lambda: verbs.exec_runc(make() if make else context(g, argv)))


def main() -> None:
    gc.set_threshold(GC_ALLOCATIONS)
    code = run(sys.argv[1:])
    if code is None:
        from ukrun.cli import main as full

        full()
    sys.stdout.flush()
    posix._exit(code or 0)
