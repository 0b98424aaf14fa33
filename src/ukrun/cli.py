"""ukrun's command line: runc's global flags and verbs (as containerd's runc v2 shim calls them) and the
operator commands. It parses and dispatches; heavy modules are imported by the verbs that need them."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from ukrun import config as configmod
from ukrun import logs
from ukrun.errors import UkrunError
from ukrun.logs import log

if TYPE_CHECKING:
    from ukrun.artifacts.store import ArtifactStore
    from ukrun.fast import Globals

RUNTIME_VERBS = ("create", "start", "state", "kill", "delete", "features")
UNSUPPORTED = ("run", "list", "spec")  # runc's, for its own containers


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ukrun", description="Run unikernel images under containerd.")
    p.add_argument("--root", type=Path, default=Path("/run/ukrun/runtime"), help="container state (as runc's --root)")
    p.add_argument("--log", help="log file (the shim reads errors from it)")
    p.add_argument("--log-format", choices=("json", "text"), default="text")
    p.add_argument("--debug", action="store_true")
    p.add_argument("--systemd-cgroup", action="store_true")
    p.add_argument("--criu", help=argparse.SUPPRESS)
    p.add_argument("--rootless", help=argparse.SUPPRESS)
    p.add_argument("--config", type=Path, help="config file (default $UKRUN_CONFIG or /etc/ukrun/config.toml)")
    p.add_argument("--address", help="containerd socket (default: the shim's, $CONTAINERD_ADDRESS, the config)")
    p.add_argument("--namespace", "-n", help="containerd namespace (default: the shim's, $CONTAINERD_NAMESPACE)")
    p.add_argument("--state-root", type=Path, help="artifact views and copies (default: [artifacts] state_root)")
    sub = p.add_subparsers(dest="verb", required=True)

    c = sub.add_parser("create", help="create a container (its init waits for start)")
    c.add_argument("--bundle", "-b", type=Path, default=Path("."))
    c.add_argument("--pid-file", type=Path)
    c.add_argument("--console-socket", default="")
    c.add_argument("--no-pivot", action="store_true")
    c.add_argument("--no-new-keyring", action="store_true")
    c.add_argument("id")
    sub.add_parser("start", help="start a created container").add_argument("id")
    sub.add_parser("state", help="print a container's OCI state").add_argument("id")
    k = sub.add_parser("kill", help="send a signal to a container's init")
    k.add_argument("--all", "-a", action="store_true")
    k.add_argument("id")
    k.add_argument("signal", nargs="?", default="SIGTERM")
    d = sub.add_parser("delete", help="remove a container and what create made")
    d.add_argument("--force", "-f", action="store_true")
    d.add_argument("id")
    for verb, what in (("exec", "run a process in a container's Linux guest"), ("ps", "list a container's processes"),
                       ("pause", "freeze a container"), ("resume", "thaw a paused container"),
                       ("update", "apply CPU and pids limits"), ("events", "print a container's stats"),
                       ("checkpoint", "refused for unikernels"), ("restore", "refused for unikernels")):
        sub.add_parser(verb, help=f"{what} (runc's flags)", add_help=False)
    sub.add_parser("features", help="what this runtime supports, as JSON")

    b = sub.add_parser("build", help="write an OCI image layout tar for a unikernel from a TOML spec")
    b.add_argument("spec", type=Path)
    b.add_argument("-o", "--output", type=Path, required=True)

    v = sub.add_parser("view", help="acquire, release and list the artifact views")
    vs = v.add_subparsers(dest="view_verb", required=True)
    a = vs.add_parser("acquire", help="print the host paths of a container's kernel, initrd and urunc.json")
    a.add_argument("container")
    a.add_argument("--mode", choices=configmod.MODES, help="default: [artifacts] mode (shared)")
    a.add_argument("--rootfs", type=Path, help="the container's mounted rootfs (copy mode, fallback)")
    a.add_argument("--json", action="store_true")
    vs.add_parser("release", help="release what acquire gave a container").add_argument("container")
    ls = vs.add_parser("ls", help="list the views under the state root, and the end of the idle ones")
    ls.add_argument("--json", action="store_true")
    w = vs.add_parser("warm", help="make and mount an image's view before its first container, idle for it")
    w.add_argument("image")
    w.add_argument("--snapshotter", default=os.environ.get("CONTAINERD_SNAPSHOTTER") or "overlayfs",
                   help="the snapshotter its containers use (default $CONTAINERD_SNAPSHOTTER, else overlayfs, as ctr)")

    pl = sub.add_parser("plan", help="print what create would do for a bundle, changing nothing")
    pl.add_argument("--bundle", "-b", type=Path, default=Path("."))
    pl.add_argument("--id", help="the container's ID (default: the bundle folder's name)")
    pl.add_argument("--json", action="store_true")

    dr = sub.add_parser("doctor", help="check what ukrun needs on this node, with the fix for what fails")
    dr.add_argument("--json", action="store_true")

    h = sub.add_parser("helper", help="serve the shim's create and delete from one process that has imported ukrun "
                                      "(optional: without it, they run as before)")
    h.add_argument("--socket", help="default $UKRUN_HELPER, else /run/ukrun/helper.sock: where the verbs look")
    h.add_argument("--idle-exit", type=float, default=0.0, help="exit after this many seconds without a call")

    g = sub.add_parser("gc", help="reclaim views, mounts, leases and labels whose users are gone")
    g.add_argument("--dry-run", action="store_true")
    g.add_argument("--idle", action="store_true", help="also remove idle views before their end ([artifacts] idle)")
    g.add_argument("--all-namespaces", "-A", action="store_true", help="every namespace containerd has")
    return p


def _unsupported(argv: list[str]) -> str | None:
    """The verb, when argv names one that ukrun leaves to runc."""
    parsed = _split(argv, UNSUPPORTED)
    return parsed[1] if parsed is not None else None


def _split(argv: list[str], verbs: tuple[str, ...]) -> tuple[Globals, str, list[str]] | None:
    """Global flags (runc's and the operator's), and one of `verbs` with its arguments."""
    from ukrun.fast import OPERATOR_VALUED, VALUED, parse

    return parse(argv, (*VALUED, *OPERATOR_VALUED), verbs)


def _operator_store(args: argparse.Namespace, cfg: configmod.Config) -> ArtifactStore:
    from ukrun.artifacts.store import ArtifactStore
    from ukrun.containerd import connector

    namespace = args.namespace or cfg.namespace
    connect = connector(args.address or cfg.address, namespace, cfg.timeout)
    return ArtifactStore(args.state_root or cfg.state_root, namespace, connect, cfg.view_idle)


def _runtime(args: argparse.Namespace, cfg: configmod.Config, argv: list[str]) -> int:
    from ukrun.runtime import hot, verbs
    from ukrun.runtime import state as st

    ctx = verbs.Context(root=args.root, config=cfg, argv=argv, address=args.address or "",
                        namespace=args.namespace or "", systemd_cgroup=args.systemd_cgroup,
                        state_root=args.state_root)
    if args.verb == "features":
        print(json.dumps(verbs.features(), indent=1))
        return 0
    if args.verb != "create" and not st.is_ours(args.root, args.id):
        verbs.exec_runc(ctx)
    root = str(args.root)
    if args.verb == "create":
        from ukrun.runtime.create import create

        create(ctx, args.id, args.bundle.resolve(), args.pid_file, args.console_socket)
    elif args.verb == "start":
        hot.start(root, args.id)
    elif args.verb == "state":
        print(json.dumps(hot.state(root, args.id), indent=1))
    elif args.verb == "kill":
        hot.kill(root, args.id, hot.parse_signal(args.signal), args.all)
    elif args.verb == "delete":
        verbs.delete(ctx, args.id, args.force)
    return 0


def _operator(args: argparse.Namespace, cfg: configmod.Config) -> int:
    if args.verb == "build":
        from ukrun.image.build import build_from_spec

        digest = build_from_spec(args.spec, args.output)
        print(f"{args.output}: manifest {digest}")
        return 0
    if args.verb == "plan":
        return _plan(args, cfg)
    if args.verb == "helper":
        from ukrun import helper, relay

        return helper.serve(args.socket or relay.socket_path(), args.idle_exit)
    if args.verb == "doctor":
        from ukrun import doctor

        checks = doctor.run(cfg, args.address or cfg.address, args.namespace or cfg.namespace,
                            args.state_root or cfg.state_root)
        if args.json:
            print(json.dumps([c.to_json() for c in checks], indent=1))
        else:
            for c in checks:
                print(f"{c.status.upper():<4} {c.name}: {c.detail}" + (f"\n     fix: {c.fix}" if c.fix else ""))
        return 1 if any(c.status == "fail" for c in checks) else 0
    store = _operator_store(args, cfg)
    if args.verb == "gc":
        from ukrun.runtime import verbs

        ctx = verbs.Context(root=args.root, config=cfg, argv=[], address=args.address or "",
                            state_root=args.state_root)
        for action in verbs.gc(ctx, args.dry_run):
            print(("would " if args.dry_run else "") + action)
        namespaces = store.client.namespaces() if args.all_namespaces else [store.namespace]
        for ns in namespaces:
            if ns != store.namespace:
                args.namespace = ns
                store = _operator_store(args, cfg)
            for action in store.gc(dry_run=args.dry_run, idle=args.idle):
                prefix = f"[{ns}] " if args.all_namespaces else ""
                print(prefix + ("would " if args.dry_run else "") + action)
        return 0
    if args.view_verb == "acquire":
        art = store.acquire(args.container, mode=args.mode or cfg.artifact_mode, rootfs=args.rootfs)
        if args.json:
            print(json.dumps(art.to_json(), indent=1))
        else:
            print(f"kernel     {art.kernel}")
            print(f"initrd     {art.initrd or '-'}")
            print(f"urunc.json {art.urunc_json or '-'}")
            if art.view_key:
                print(f"view       {art.view_key} ({art.snapshotter}) at {art.mount_point}: {art.chain_reason}")
            print(f"copied     {art.bytes_copied} bytes")
        return 0
    if args.view_verb == "release":
        if not store.release(args.container):
            print(f"ukrun: container {args.container} holds no artifacts", file=sys.stderr)
        return 0
    if args.view_verb == "warm":
        from ukrun.artifacts.prewarm import warm

        warmed = warm(store, args.image, args.snapshotter)
        if warmed is None:
            print(f"nothing to warm: containers of {args.image} read their artifacts in place from their own "
                  "rootfs (the image does not set mountRootfs), with no view")
            return 0
        state, choice = warmed
        end = f"idle until {_when(state.idle_until)}" if not state.users else f"in use by {len(state.users)}"
        print(f"view {state.key} ({state.snapshotter}) of {args.image} at {state.mount_point}: {end}; {choice.reason}")
        return 0
    views = store.views()
    if args.json:
        print(json.dumps([v._asdict() for v in views], indent=1))
        return 0
    print(f"{'VIEW':<60} {'SNAPSHOTTER':<11} {'USERS':<5} {'MOUNTED':<7} {'IDLE UNTIL':<20} MOUNT POINT")
    for v in views:
        idle = _when(v.idle_until) if not v.users and v.idle_until else "-"
        print(f"{v.key:<60} {v.snapshotter:<11} {len(v.users):<5} {'yes' if v.mounted else 'no':<7} {idle:<20} "
              f"{v.mount_point}")
    return 0


def _when(t: float) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _plan(args: argparse.Namespace, cfg: configmod.Config) -> int:
    from ukrun.runtime import verbs
    from ukrun.runtime.create import plan_bundle

    bundle = args.bundle.resolve()
    ctx = verbs.Context(root=args.root, config=cfg, argv=[], address=args.address or "",
                        namespace=args.namespace or "", state_root=args.state_root)
    plan = plan_bundle(ctx, bundle, args.id or bundle.name).to_json()
    if args.json:
        print(json.dumps(plan, indent=1))
        return 0
    root = plan["root"]
    print(f"guest      {plan['guest']} on {plan['monitor']} ({plan['accel']}, {plan['memory_mib']} MiB, "
          f"{plan['vcpus']} vCPU, seccomp {'on' if plan['seccomp'] else 'off'})")
    print(f"root       {root['mode']}{' ' + root['device'] if root['device'] else ''}: {root['rule']}")
    print(f"artifacts  {plan['artifacts']['source']}: {plan['artifacts']['reason']}")
    print(f"cmdline    {plan['cmdline']}")
    for b in plan["blocks"]:
        print(f"block      {b['id']} = {b['path']}{' (read-only)' if b['read_only'] else ''}")
    for sh in plan["shares"]:
        print(f"share      {sh['tag']} = {sh['path']}{' (read-only)' if sh['read_only'] else ''}")
    for name in plan["guest_files"]["files"]:
        print(f"file       {name} -> {plan['guest_files']['target']}")
    if plan["virtiofsd"]:
        print(f"virtiofsd  {' '.join(plan['virtiofsd']['argv'])} (socket {plan['virtiofsd']['socket']})")
    for v in plan["volumes"]:
        print(f"volume     {v['id']} = {v['device']}, unmounted from {v['source']}, mounted at {v['destination']}")
    net = plan["network"]
    if net:
        print(f"network    {net['mode']}: the guest is {net['address']} via {net['gateway']} on tap {net['tap']} "
              f"in {net['netns']} (interface {net['interface']})")
        if net.get("private_link"):
            link, fwd = net["private_link"], net["forward"]
            print(f"link       {link['tap']}: {link['host']} (ukrun's end), {link['guest']} (the guest's)")
            print(f"forward    {', '.join(fwd['ports'])} from {' and '.join(fwd['from'])} (nftables table "
                  f"{fwd['table']})")
        elif net["publish"]:
            print(f"forward    {', '.join(net['publish'])} from {net['interface']}")
    if plan["joined_initrd"]:
        j = plan["joined_initrd"]
        print(f"initrd     {j['path']} = {j['image']} + {j['appended_bytes']} bytes of the spec's files")
    ports = plan["exec"]["ports"]
    print(f"exec       {f'{len(ports)} ports in {os.path.dirname(ports[0])}' if ports else plan['exec']['refusal']}")
    print(f"argv       {' '.join(plan['argv'])}")
    print(f"exit code  {plan['exit_decoding']}")
    for note in plan["notes"]:
        print(f"note       {note}")
    return 0


def run(argv: list[str]) -> int:
    from ukrun.fast import RUNC_VERBS

    runc_verb = _split(argv, RUNC_VERBS)
    if runc_verb is not None:
        from ukrun import verbargs

        return verbargs.run(*runc_verb, argv)
    verb = _unsupported(argv)
    if verb is not None:
        return _unsupported_verb(verb, argv)
    args = _parser().parse_args(argv)
    logs.setup(args.log, args.log_format, args.debug)
    cfg = configmod.load(args.config)
    if args.verb in RUNTIME_VERBS:
        return _runtime(args, cfg, argv)
    return _operator(args, cfg)


def _unsupported_verb(verb: str, argv: list[str]) -> int:
    """A verb ukrun does not implement: runc's business for other containers, refused for ours."""
    from ukrun.runtime import state as st
    from ukrun.runtime import verbs

    split = _split(argv, UNSUPPORTED)
    assert split is not None
    g, _, rest = split
    root = Path(g.root)
    container = next((a for a in rest if not a.startswith("-")), "")
    if container and st.is_ours(root, container):
        raise UkrunError(f"{verb} is not supported for unikernels (container {container})")
    verbs.exec_runc(verbs.Context(root=root, config=configmod.load(), argv=argv))


def main() -> None:
    code = 1
    try:
        code = run(sys.argv[1:])
    except UkrunError as exc:
        log.error("%s", exc)
    except KeyboardInterrupt:
        code = 130
    except Exception as exc:  # a bug: still give the shim (and so ctr) a reason
        log.exception("internal error: %s: %s", type(exc).__name__, exc)
    _exit(code)


def _exit(code: int) -> NoReturn:
    """Ends without the interpreter's teardown (finalizing every module and object, a few ms on every
    create and delete). Everything ukrun writes is flushed first."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
