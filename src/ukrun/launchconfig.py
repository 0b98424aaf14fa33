"""The contract between `create` and the container's init (`launcher`): what the init needs to enter
the container and run its monitor, written by one side and read by the other as `launch.json`.
Standard library only: the init imports it at every container start."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

FILE = "launch.json"


class Namespace(NamedTuple):
    type: str
    path: str = ""


class LaunchConfig(NamedTuple):
    """Typed named tuples rather than dataclasses, like the records `create` imports: no code
    generation at import on the path of every container."""

    id: str
    monitor: tuple[str, ...]  # argv
    env: Mapping[str, str]
    cgroups: tuple[str, ...] = ()
    namespaces: tuple[Namespace, ...] = ()
    hostname: str = ""
    terminal: bool = False
    exit_decoding: str = "raw"  # hypervisors.base.ExitDecoding's value
    timing_log: str = ""
    views: str = ""  # the state root's views folder: a new mount namespace keeps only this container's view
    keep_mounts: tuple[str, ...] = ()
    virtiofsd: tuple[str, ...] = ()  # argv; empty: none (see runtime.shareplan)
    virtiofsd_socket: str = ""  # bound and listening before virtiofsd and the monitor start
    virtiofsd_log: str = ""
    late_network: bool = False  # `start` may rewrite the monitor's argv (runtime.startnet): read again then

    def write(self, state_dir: Path) -> None:
        data = {**self._asdict(), "env": dict(self.env), "namespaces": [n._asdict() for n in self.namespaces]}
        (state_dir / FILE).write_text(json.dumps(data))

    @classmethod
    def read(cls, state_dir: Path) -> LaunchConfig:
        data = json.loads((state_dir / FILE).read_text())
        return cls(
            id=data["id"], monitor=tuple(data["monitor"]), env=data["env"], cgroups=tuple(data["cgroups"]),
            namespaces=tuple(Namespace(**n) for n in data["namespaces"]), hostname=data["hostname"],
            terminal=data["terminal"], exit_decoding=data["exit_decoding"], timing_log=data["timing_log"],
            views=data["views"], keep_mounts=tuple(data["keep_mounts"]), virtiofsd=tuple(data["virtiofsd"]),
            virtiofsd_socket=data["virtiofsd_socket"], virtiofsd_log=data["virtiofsd_log"],
            late_network=data["late_network"],
        )
