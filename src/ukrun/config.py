"""ukrun's configuration: /etc/ukrun/config.toml (or $UKRUN_CONFIG), then environment, then flags.

    [containerd]
    address = "/run/containerd/containerd.sock"
    namespace = "default"
    timeout = 30                 # seconds per request

    [artifacts]
    mode = "shared"              # shared | per-container | copy
    state_root = "/run/ukrun"

    [monitors.qemu]
    path = ""                    # default: qemu-system-<arch> on PATH
    default_memory_mb = 256
    default_vcpus = 1
    accel = "auto"               # auto (probe KVM once per boot) | kvm | tcg

    [runtime]
    runc = ""                    # the runc for containers that are not unikernels; default: on PATH
    image_config = true          # no unikernel keys in the spec or /urunc.json: ask containerd for the
                                 # image's annotations and labels (a gRPC round trip per plain container)
    rootfs_share = "auto"        # a folder rootfs: auto (virtio-fs where configured and supported, else
                                 # 9p, as urunc chooses) | 9p | virtiofs

    [extra_binaries.virtiofsd]   # urunc's key names
    path = ""                    # virtiofsd; unset: no virtio-fs
    options = ""                 # extra virtiofsd options, appended (a key given here replaces ukrun's)

    [timing]
    log = ""                     # JSON lines of per-phase timestamps, one file for every verb
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from ukrun.errors import ConfigError

DEFAULT_PATH = Path("/etc/ukrun/config.toml")
MODES = ("shared", "per-container", "copy")
ACCELS = ("auto", "kvm", "tcg")
SHARES = ("auto", "9p", "virtiofs")


@dataclass(frozen=True)
class Virtiofsd:
    path: str = ""
    options: str = ""


@dataclass(frozen=True)
class Monitor:
    path: str = ""
    memory_mb: int = 256
    vcpus: int = 1
    accel: str = "auto"


@dataclass(frozen=True)
class Config:
    address: str = "/run/containerd/containerd.sock"
    namespace: str = "default"
    timeout: float = 30.0
    artifact_mode: str = "shared"
    state_root: Path = Path("/run/ukrun")
    monitors: dict[str, Monitor] = field(default_factory=dict)
    runc: str = ""
    image_config: bool = True
    rootfs_share: str = "auto"
    virtiofsd: Virtiofsd = Virtiofsd()
    timing_log: str = ""
    path: Path | None = None
    address_set: bool = False  # the file or CONTAINERD_ADDRESS chose the address

    def monitor(self, name: str) -> Monitor:
        return self.monitors.get(name, Monitor())


def load(path: Path | None = None) -> Config:
    explicit = path is not None or "UKRUN_CONFIG" in os.environ
    path = path or Path(os.environ.get("UKRUN_CONFIG", DEFAULT_PATH))
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        if explicit:
            raise ConfigError(f"config file {path} does not exist; create it or unset UKRUN_CONFIG") from None
        data = {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    ctd = _table(data, "containerd", path)
    art = _table(data, "artifacts", path)
    base = Config()
    mode = str(art.get("mode", base.artifact_mode))
    if mode not in MODES:
        raise ConfigError(f"{path}: [artifacts] mode = {mode!r} is not one of {', '.join(MODES)}")
    monitors = {}
    for name, table in _table(data, "monitors", path).items():
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: [monitors.{name}] must be a table")
        accel = str(table.get("accel", "auto"))
        if accel not in ACCELS:
            raise ConfigError(f"{path}: [monitors.{name}] accel = {accel!r} is not one of {', '.join(ACCELS)}")
        monitors[name] = Monitor(
            path=str(table.get("path", "")),
            memory_mb=_number(table, "default_memory_mb", 256, path, int),
            vcpus=_number(table, "default_vcpus", 1, path, int),
            accel=accel,
        )
    runtime = _table(data, "runtime", path)
    share = str(runtime.get("rootfs_share", base.rootfs_share))
    if share not in SHARES:
        raise ConfigError(f"{path}: [runtime] rootfs_share = {share!r} is not one of {', '.join(SHARES)}")
    vfsd = _table(_table(data, "extra_binaries", path), "virtiofsd", path)
    env_address = os.environ.get("CONTAINERD_ADDRESS")
    return Config(
        address=str(env_address or ctd.get("address", base.address)),
        namespace=str(os.environ.get("CONTAINERD_NAMESPACE") or ctd.get("namespace", base.namespace)),
        timeout=_number(ctd, "timeout", base.timeout, path, float),
        artifact_mode=mode,
        state_root=Path(str(art.get("state_root", base.state_root))),
        monitors=monitors,
        runc=str(runtime.get("runc", "")),
        image_config=bool(runtime.get("image_config", True)),
        rootfs_share=share,
        virtiofsd=Virtiofsd(str(vfsd.get("path", "")), str(vfsd.get("options", ""))),
        timing_log=str(os.environ.get("UKRUN_TIMING_LOG") or _table(data, "timing", path).get("log", "")),
        path=path if data else None,
        address_set=bool(env_address or "address" in ctd),
    )


N = TypeVar("N", int, float)


def _number(table: dict[str, object], key: str, default: N, path: Path, kind: type[N]) -> N:
    try:
        return kind(str(table.get(key, default)))
    except (TypeError, ValueError):
        raise ConfigError(f"{path}: {key} must be a number") from None


def _table(data: dict[str, object], name: str, path: Path) -> dict[str, object]:
    table = data.get(name, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [{name}] must be a table")
    return table
