"""`exec`: a process in a running container's guest, held on the host by a process of its own, as runc's
model has it (containerd's shim calls `exec --process FILE --detach --pid-file F [--console-socket S] ID`).

A guest that cannot run a second process, or a container whose guest does not serve exec, gets the
sentence its `create` recorded (runtime.execplan), at once. Otherwise the process is read (the OCI
process file, or runc's flags and the container's own process), and the exec's host process is forked
(runtime.execrelay): it joins the container's cgroups, takes one of the guest's exec ports, has the
guest start the process, and then relays its stdio, signals and window size until it ends, exiting
with its code (or dying of its signal). With --detach, `exec` waits only until the guest has started
the process (or said why not: that sentence is the error), writes the host process's PID to the pid
file and leaves: the shim, a subreaper, adopts that process and reaps its exit as the exec's.
While `exec` waits, its host process dies with it (PR_SET_PDEATHSIG), so a killed `exec` leaves nothing.
"""

from __future__ import annotations

import json
import os

from ukrun.errors import UkrunError
from ukrun.execwire import MAX_GROUPS, NO_UMASK, Process
from ukrun.runtime import state as st

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ukrun.verbargs import Args

PROCESS_LIMIT = 4 << 20
OLD_RECORD = "it was created by an older ukrun, which did not prepare its guest for exec: create it again"


def exec_(root: str, args: Args) -> int:
    record = st.load(root, args.id)
    if not record.exec_ports:
        raise UkrunError(f"exec is not possible in container {args.id}: {record.exec_refusal or OLD_RECORD}")
    status = st.status(root, record)
    if status == "paused":  # even with --ignore-paused: a frozen guest starts nothing, and would hold `exec`
        raise UkrunError(f"container {args.id} is paused, its VM frozen: resume it before exec")
    if status != "running":
        raise UkrunError(f"container {args.id} is {status}: exec needs a running container")
    for unsupported in ("--preserve-fds", "--pidfd-socket", "--cgroup"):
        if args.value(unsupported) not in ("", "0"):
            raise UkrunError(f"exec {unsupported} is not supported for container {args.id}: its process runs in a "
                             "VM, beyond the host's file descriptors and cgroups")
    proc = process(args, record.bundle)
    console = args.value("--console-socket")
    if proc.terminal and not console:
        raise UkrunError(f"exec in container {args.id} asks for a terminal: give --console-socket (the shim does)")
    from ukrun.runtime import execrelay

    return execrelay.launch(root, record, proc, args.has("--detach"), args.value("--pid-file"), console)


def process(args: Args, bundle: str) -> Process:
    """The process to run: the --process file, else the container's own process with args' command; then
    runc's flags over it (--cwd, --env, --user, --additional-gids, --tty)."""
    path = args.value("--process")
    if path:
        doc = _load(path, f"exec's process file {path}")
    else:
        if not args.rest:
            raise UkrunError(f"exec in container {args.id} needs a command, or a process file (--process)")
        spec = _load(os.path.join(bundle, "config.json"), f"container {args.id}'s config.json")
        own = spec.get("process")
        doc = {**(own if isinstance(own, dict) else {}), "args": args.rest, "terminal": False}
    p = parse_process(doc, path or "the command line")
    if args.has("--cwd"):
        p.cwd = args.value("--cwd")
    p.env = [*p.env, *args.flags.get("--env", [])]
    if args.has("--user"):
        uid, _, gid = args.value("--user").partition(":")
        p.uid, p.gid = _id(uid, "--user"), _id(gid, "--user") if gid else p.gid
    if args.has("--additional-gids"):
        p.groups = tuple(_id(g, "--additional-gids") for g in args.flags["--additional-gids"])
    if args.has("--tty"):
        p.terminal = True
    _check(p, path or "the command line")
    return p


def _load(path: str, what: str) -> dict[str, object]:
    try:
        with open(path, "rb") as f:
            data = f.read(PROCESS_LIMIT + 1)
        doc = json.loads(data) if len(data) <= PROCESS_LIMIT else None
    except (OSError, ValueError) as exc:
        raise UkrunError(f"cannot read {what}: {exc}") from None
    if not isinstance(doc, dict):
        raise UkrunError(f"{what} is not a JSON object of at most {PROCESS_LIMIT} bytes")
    return doc


def parse_process(doc: dict[str, object], where: str) -> Process:
    """The fields of an OCI process that reach the guest, each checked for its type."""
    user = _field(doc, "user", dict, {}, where)
    size = _field(doc, "consoleSize", dict, {}, where)
    assert isinstance(user, dict) and isinstance(size, dict)
    umask = user.get("umask")
    return Process(
        args=_strings(doc.get("args"), "args", where), env=_strings(doc.get("env") or [], "env", where),
        cwd=str(_field(doc, "cwd", str, "/", where)),
        uid=_id(user.get("uid", 0), "user.uid"), gid=_id(user.get("gid", 0), "user.gid"),
        groups=tuple(_id(g, "user.additionalGids") for g in _list(user.get("additionalGids"), where)),
        umask=NO_UMASK if umask is None else _id(umask, "user.umask") & 0o777,
        terminal=bool(_field(doc, "terminal", bool, False, where)),
        rows=_id(size.get("height", 0), "consoleSize.height") & 0xFFFF,
        cols=_id(size.get("width", 0), "consoleSize.width") & 0xFFFF,
    )


def _check(p: Process, where: str) -> None:
    if not p.args or not p.args[0]:
        raise UkrunError(f"exec's process ({where}) has no command: args is empty")
    if not p.cwd.startswith("/"):
        raise UkrunError(f"exec's process ({where}) has a relative cwd {p.cwd!r}: it must be absolute")
    if len(p.groups) > MAX_GROUPS:
        raise UkrunError(f"exec's process ({where}) has {len(p.groups)} additional groups, over {MAX_GROUPS}")
    for s in (p.cwd, *p.args, *p.env):
        if "\0" in s:
            raise UkrunError(f"exec's process ({where}) has a string with a NUL byte: {s[:40]!r}")


def _field(doc: dict[str, object], key: str, kind: type, default: object, where: str) -> object:
    value = doc.get(key, default)
    if value is None:
        return default
    if not isinstance(value, kind):
        raise UkrunError(f"exec's process ({where}): {key} must be a {kind.__name__}")
    return value


def _list(value: object, where: str) -> list[object]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise UkrunError(f"exec's process ({where}): user.additionalGids must be a list")
    return value


def _strings(value: object, key: str, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise UkrunError(f"exec's process ({where}): {key} must be a list of strings")
    return list(value)


def _id(value: object, what: str) -> int:
    try:
        number = int(value) if isinstance(value, (int, str)) and not isinstance(value, bool) else -1
    except ValueError:
        number = -1
    if not 0 <= number < 1 << 32:
        raise UkrunError(f"exec: {what} {value!r} is not a number from 0 to 4294967295")
    return number
