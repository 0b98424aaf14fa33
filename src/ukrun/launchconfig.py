"""The contract between `create` and the container's init (`launcher`): what the init needs to enter
the container and run its monitor, written by one side and read by the other as `launch.json`.
Standard library only: the init imports it at every container start."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

FILE = "launch.json"


@dataclass(frozen=True)
class Namespace:
    type: str
    path: str = ""


@dataclass(frozen=True)
class LaunchConfig:
    id: str
    monitor: list[str]  # argv
    env: dict[str, str]
    cgroups: list[str] = field(default_factory=list)
    namespaces: list[Namespace] = field(default_factory=list)
    hostname: str = ""
    terminal: bool = False
    exit_decoding: str = "raw"  # hypervisors.base.ExitDecoding's value
    timing_log: str = ""
    views: str = ""  # the state root's views folder: a new mount namespace keeps only this container's view
    keep_mounts: list[str] = field(default_factory=list)
    virtiofsd: list[str] = field(default_factory=list)  # argv; empty: none (see runtime.shareplan)
    virtiofsd_socket: str = ""  # bound and listening before virtiofsd and the monitor start
    virtiofsd_log: str = ""

    def write(self, state_dir: Path) -> None:
        (state_dir / FILE).write_text(json.dumps(asdict(self)))

    @classmethod
    def read(cls, state_dir: Path) -> LaunchConfig:
        data = json.loads((state_dir / FILE).read_text())
        data["namespaces"] = [Namespace(**n) for n in data.get("namespaces", [])]
        return cls(**data)
