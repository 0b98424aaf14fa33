"""ukrun's configuration: /etc/ukrun/config.toml (or $UKRUN_CONFIG), then environment, then flags.

    [containerd]
    address = "/run/containerd/containerd.sock"
    namespace = "default"
    timeout = 10            # seconds per request

    [artifacts]
    mode = "shared"         # shared | per-container | copy
    state_root = "/run/ukrun"
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from ukrun.errors import ConfigError

DEFAULT_PATH = Path("/etc/ukrun/config.toml")
MODES = ("shared", "per-container", "copy")


@dataclass(frozen=True)
class Config:
    address: str = "/run/containerd/containerd.sock"
    namespace: str = "default"
    timeout: float = 10.0
    artifact_mode: str = "shared"
    state_root: Path = Path("/run/ukrun")
    path: Path | None = None


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
    try:
        timeout = float(str(ctd.get("timeout", base.timeout)))
    except (TypeError, ValueError):
        raise ConfigError(f"{path}: [containerd] timeout must be a number of seconds") from None
    return Config(
        address=str(os.environ.get("CONTAINERD_ADDRESS") or ctd.get("address", base.address)),
        namespace=str(os.environ.get("CONTAINERD_NAMESPACE") or ctd.get("namespace", base.namespace)),
        timeout=timeout,
        artifact_mode=mode,
        state_root=Path(str(art.get("state_root", base.state_root))),
        path=path if data else None,
    )


def _table(data: dict[str, object], name: str, path: Path) -> dict[str, object]:
    table = data.get(name, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [{name}] must be a table")
    return table
