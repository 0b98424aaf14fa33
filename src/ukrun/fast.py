"""The shim calls `state`, `start` and `kill` for every container, often. This entry point serves them
for ukrun's own containers with a tiny parser and the standard library only; anything unusual (other
flags, other verbs, a container that is not ours) returns None and goes through the full CLI."""

from __future__ import annotations

import os
import sys

HOT = ("state", "start", "kill")
VALUED = ("--root", "--log", "--log-format")
SWITCHES = ("--debug", "--systemd-cgroup")


def parse(argv: list[str]) -> tuple[dict[str, str], str, list[str]] | None:
    opts: dict[str, str] = {"--root": "/run/ukrun/runtime", "--log": "", "--log-format": "text"}
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        flag, eq, value = argv[i].partition("=")
        if flag in VALUED:
            if not eq:
                if i + 1 >= len(argv):
                    return None
                value = argv[i + 1]
                i += 1
            opts[flag] = value
        elif flag not in SWITCHES or eq:
            return None
        i += 1
    if i >= len(argv) or argv[i] not in HOT:
        return None
    return opts, argv[i], argv[i + 1:]


def _log_error(opts: dict[str, str], message: str) -> None:
    """What logs.JsonFormatter writes, without importing logging: the shim reads the last error line."""
    import json
    import time

    sys.stderr.write(f"ukrun: {message}\n")
    if not opts["--log"]:
        return
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if opts["--log-format"] == "json":
        line = json.dumps({"level": "error", "msg": message, "time": stamp})
    else:
        line = f"{stamp} ERROR {message}"
    with open(opts["--log"], "a") as f:
        f.write(line + "\n")


def run(argv: list[str]) -> int | None:
    parsed = parse(argv)
    if parsed is None:
        return None
    opts, verb, rest = parsed
    all_processes = False
    if verb == "kill" and rest and rest[0] in ("--all", "-a"):
        all_processes, rest = True, rest[1:]
    if not rest or any(a.startswith("-") for a in rest) or len(rest) > (2 if verb == "kill" else 1):
        return None
    root, container_id = opts["--root"], rest[0]
    from ukrun.errors import UkrunError
    from ukrun.runtime import state as st

    try:
        if not st.is_ours(root, container_id):
            return None
        from ukrun.runtime import hot

        if verb == "state":
            import json

            sys.stdout.write(json.dumps(hot.state(root, container_id), indent=1) + "\n")
        elif verb == "start":
            hot.start(root, container_id)
        else:
            hot.kill(root, container_id, hot.parse_signal(rest[1] if len(rest) > 1 else "SIGTERM"), all_processes)
    except UkrunError as exc:
        _log_error(opts, str(exc))
        return 1
    return 0


def main() -> None:
    code = run(sys.argv[1:])
    if code is None:
        from ukrun.cli import main as full

        full()
    sys.stdout.flush()
    os._exit(code or 0)
