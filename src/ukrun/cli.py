"""ukrun's command line. Parses flags and dispatches; heavy modules are imported by the verbs that need them."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ukrun import config as configmod
from ukrun.errors import UkrunError

if TYPE_CHECKING:
    from ukrun.artifacts.store import ArtifactStore


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ukrun", description="Run unikernel images under containerd.")
    p.add_argument("--config", type=Path, help="config file (default $UKRUN_CONFIG or /etc/ukrun/config.toml)")
    p.add_argument("--address", help="containerd socket (default $CONTAINERD_ADDRESS, then the config)")
    p.add_argument("--namespace", "-n", help="containerd namespace (default $CONTAINERD_NAMESPACE, then the config)")
    p.add_argument("--root", type=Path, help="state root (default [artifacts] state_root, /run/ukrun)")
    p.add_argument("--debug", action="store_true")
    sub = p.add_subparsers(dest="verb", required=True)

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
    r = vs.add_parser("release", help="release what acquire gave a container")
    r.add_argument("container")
    ls = vs.add_parser("ls", help="list the views under the state root")
    ls.add_argument("--json", action="store_true")

    g = sub.add_parser("gc", help="reclaim views, mounts, leases and labels whose users are gone")
    g.add_argument("--dry-run", action="store_true")
    return p


def _store(args: argparse.Namespace, cfg: configmod.Config) -> ArtifactStore:
    from ukrun.artifacts.store import ArtifactStore

    address = args.address or cfg.address
    namespace = args.namespace or cfg.namespace

    def connect():  # type: ignore[no-untyped-def]
        from ukrun.containerd.client import Client

        return Client(address, namespace, timeout=cfg.timeout)

    return ArtifactStore(args.root or cfg.state_root, namespace, connect)


def run(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING, format="ukrun: %(message)s")
    cfg = configmod.load(args.config)
    if args.verb == "build":
        from ukrun.image.build import build_from_spec

        digest = build_from_spec(args.spec, args.output)
        print(f"{args.output}: manifest {digest}")
        return 0
    store = _store(args, cfg)
    if args.verb == "gc":
        for action in store.gc(dry_run=args.dry_run):
            print(("would " if args.dry_run else "") + action)
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
    views = store.views()
    if args.json:
        print(json.dumps([v.__dict__ for v in views], indent=1))
        return 0
    print(f"{'VIEW':<60} {'SNAPSHOTTER':<11} {'USERS':<5} {'MOUNTED':<7} MOUNT POINT")
    for v in views:
        print(f"{v.key:<60} {v.snapshotter:<11} {len(v.users):<5} {'yes' if v.mounted else 'no':<7} {v.mount_point}")
    return 0


def main() -> None:
    try:
        sys.exit(run(sys.argv[1:]))
    except UkrunError as exc:
        print(f"ukrun: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
