"""The parts of an OCI runtime spec (`config.json`) that ukrun reads."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from ukrun.errors import UkrunError
from ukrun.tuples import NamedTuple

TYPE_CHECKING = False  # not typing's, whose import costs a create without a helper about 2 ms
if TYPE_CHECKING:
    from typing import Any

SPEC_LIMIT = 4 * 1024 * 1024
EMPTY: Mapping[str, str] = MappingProxyType({})


class Process(NamedTuple):
    args: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    cwd: str = "/"
    terminal: bool = False
    uid: int = 0
    gid: int = 0


class SpecMount(NamedTuple):
    destination: str
    type: str
    source: str
    options: tuple[str, ...] = ()


class Namespace(NamedTuple):
    type: str
    path: str = ""


class Spec(NamedTuple):
    bundle: Path
    annotations: Mapping[str, str] = EMPTY
    process: Process = Process()
    root_path: str = "rootfs"
    mounts: tuple[SpecMount, ...] = ()
    namespaces: tuple[Namespace, ...] = ()
    cgroups_path: str = ""
    memory_limit: int = 0
    cpu_quota: int = 0
    cpu_period: int = 0
    hostname: str = ""
    seccomp: bool = False  # the spec carries a seccomp profile (none: `seccomp=unconfined`)

    @property
    def rootfs(self) -> Path:
        p = Path(self.root_path)
        return p if p.is_absolute() else self.bundle / p


def load(bundle: Path) -> Spec:
    path = bundle / "config.json"
    try:
        if path.stat().st_size > SPEC_LIMIT:
            raise UkrunError(f"{path} is larger than {SPEC_LIMIT} bytes")
        doc = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise UkrunError(f"no config.json in bundle {bundle}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UkrunError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise UkrunError(f"{path} is not a JSON object")
    return parse(bundle, doc)


def _d(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def parse(bundle: Path, doc: dict[str, Any]) -> Spec:
    proc = _d(doc.get("process"))
    linux = _d(doc.get("linux"))
    resources = _d(linux.get("resources"))
    cpu = _d(resources.get("cpu"))
    return Spec(
        bundle=bundle,
        annotations={str(k): str(v) for k, v in _d(doc.get("annotations")).items()},
        process=Process(
            args=tuple(str(a) for a in proc.get("args") or ()),
            env=tuple(str(e) for e in proc.get("env") or ()),
            cwd=str(proc.get("cwd") or "/"),
            terminal=bool(proc.get("terminal", False)),
            uid=int(_d(proc.get("user")).get("uid") or 0),
            gid=int(_d(proc.get("user")).get("gid") or 0),
        ),
        root_path=str(_d(doc.get("root")).get("path") or "rootfs"),
        mounts=tuple(
            SpecMount(str(m.get("destination", "")), str(m.get("type", "")), str(m.get("source", "")),
                      tuple(str(o) for o in m.get("options") or ()))
            for m in doc.get("mounts") or () if isinstance(m, dict)
        ),
        namespaces=_namespaces(linux),
        cgroups_path=str(linux.get("cgroupsPath") or ""),
        memory_limit=int(_d(resources.get("memory")).get("limit") or 0),
        cpu_quota=int(cpu.get("quota") or 0),
        cpu_period=int(cpu.get("period") or 0),
        hostname=str(doc.get("hostname") or ""),
        seccomp=linux.get("seccomp") is not None,
    )


def _namespaces(linux: dict[str, Any]) -> tuple[Namespace, ...]:
    """The spec's namespaces; a type named twice is refused, as the OCI runtime specification requires: which of
    the two the init would get would otherwise depend on the order ukrun makes them in."""
    found = tuple(Namespace(str(n.get("type", "")), str(n.get("path") or ""))
                  for n in linux.get("namespaces") or () if isinstance(n, dict))
    for i, n in enumerate(found):
        if any(m.type == n.type for m in found[:i]):
            raise UkrunError(f"the spec names the {n.type!r} namespace more than once (linux.namespaces): each type "
                             "may appear once; remove the extra entries")
    return found
