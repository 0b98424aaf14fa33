"""ukrun's configuration: /etc/ukrun/config.toml (or $UKRUN_CONFIG), then environment, then flags.

    [containerd]
    address = "/run/containerd/containerd.sock"
    namespace = "default"
    timeout = 30                 # seconds per request

    [artifacts]
    mode = "shared"              # shared | per-container | copy
    state_root = "/run/ukrun"
    idle = 300                   # seconds a shared view stays mounted after its last user, for the next
                                 # container of the image (bounded by a lease's gc.expire); 0: released at once

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

    [volumes]
    block_devices = []           # glob patterns of host block devices a VM may be handed as a volume
                                 # (the spec's bind mount of a device's file system); default: none

    [timing]
    log = ""                     # JSON lines of per-phase timestamps, one file for every verb
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import NamedTuple, TypeVar

from ukrun.errors import ConfigError

DEFAULT_PATH = Path("/etc/ukrun/config.toml")
CACHE_NAME = ".ukrun-config.json"  # in the runtime root: no containerd ID starts with a dot
MODES = ("shared", "per-container", "copy")
ACCELS = ("auto", "kvm", "tcg")
SHARES = ("auto", "9p", "virtiofs")


class Virtiofsd(NamedTuple):
    path: str = ""
    options: str = ""


class Monitor(NamedTuple):
    path: str = ""
    memory_mb: int = 256
    vcpus: int = 1
    accel: str = "auto"


NO_MONITORS: Mapping[str, Monitor] = MappingProxyType({})


class Config(NamedTuple):
    address: str = "/run/containerd/containerd.sock"
    namespace: str = "default"
    timeout: float = 30.0
    artifact_mode: str = "shared"
    state_root: Path = Path("/run/ukrun")
    view_idle: float = 300.0
    monitors: Mapping[str, Monitor] = NO_MONITORS
    runc: str = ""
    image_config: bool = True
    rootfs_share: str = "auto"
    virtiofsd: Virtiofsd = Virtiofsd()
    timing_log: str = ""
    block_devices: tuple[str, ...] = ()
    path: Path | None = None
    address_set: bool = False  # the file or CONTAINERD_ADDRESS chose the address

    def monitor(self, name: str) -> Monitor:
        return self.monitors.get(name, Monitor())


def load(path: Path | None = None, cache_dir: Path | None = None) -> Config:
    """`cache_dir`: where the parsed file may be kept (see _read); create passes its runtime root."""
    explicit = path is not None or "UKRUN_CONFIG" in os.environ
    path = path or Path(os.environ.get("UKRUN_CONFIG", DEFAULT_PATH))
    try:
        data = _read(path, cache_dir)
    except FileNotFoundError:
        if explicit:
            raise ConfigError(f"config file {path} does not exist; create it or unset UKRUN_CONFIG") from None
        data = {}
    except (OSError, ValueError) as exc:  # tomllib.TOMLDecodeError is a ValueError
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    ctd = _table(data, "containerd", path)
    art = _table(data, "artifacts", path)
    base = Config()
    mode = str(art.get("mode", base.artifact_mode))
    if mode not in MODES:
        raise ConfigError(f"{path}: [artifacts] mode = {mode!r} is not one of {', '.join(MODES)}")
    idle = _number(art, "idle", base.view_idle, path, float)
    if not 0 <= idle < float("inf"):
        raise ConfigError(f"{path}: [artifacts] idle = {idle:g} must be 0 (views released at once) or a number "
                          "of seconds")
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
    devices = _table(data, "volumes", path).get("block_devices", [])
    if not isinstance(devices, list) or not all(isinstance(d, str) and d.startswith("/") for d in devices):
        raise ConfigError(f"{path}: [volumes] block_devices must be a list of absolute paths or glob patterns, "
                          'such as ["/dev/mapper/vol-*"]')
    env_address = os.environ.get("CONTAINERD_ADDRESS")
    return Config(
        address=str(env_address or ctd.get("address", base.address)),
        namespace=str(os.environ.get("CONTAINERD_NAMESPACE") or ctd.get("namespace", base.namespace)),
        timeout=_number(ctd, "timeout", base.timeout, path, float),
        artifact_mode=mode,
        state_root=Path(str(art.get("state_root", base.state_root))),
        view_idle=idle,
        monitors=monitors,
        runc=str(runtime.get("runc", "")),
        image_config=bool(runtime.get("image_config", True)),
        rootfs_share=share,
        virtiofsd=Virtiofsd(str(vfsd.get("path", "")), str(vfsd.get("options", ""))),
        timing_log=str(os.environ.get("UKRUN_TIMING_LOG") or _table(data, "timing", path).get("log", "")),
        block_devices=tuple(devices),
        path=path if data else None,
        address_set=bool(env_address or "address" in ctd),
    )


def _read(path: Path, cache_dir: Path | None) -> dict[str, object]:
    """The file's TOML, parsed once per version of the file: `create` runs for every container, and
    importing tomllib costs more than reading its answer back as JSON. The key is the file's path,
    identity, size and change times, so any edit, or a replacement as editors make, parses it again.
    One cache file per runtime root, of the last file read: a node has one configuration. A cache that
    cannot be read or written is skipped, never an error."""
    if cache_dir is None:
        import tomllib

        return tomllib.loads(path.read_text())
    st = path.stat()
    key = f"{os.path.abspath(path)}:{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"
    cache = cache_dir / CACHE_NAME
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        cached = json.loads(cache.read_text())
        if cached["key"] == key and isinstance(cached["data"], dict):
            return cached["data"]
    import tomllib

    data = tomllib.loads(path.read_text())
    with contextlib.suppress(OSError, ValueError, TypeError):  # TypeError: a TOML date has no JSON form
        tmp = cache.with_name(f".{cache.name}.{os.getpid()}")
        tmp.write_text(json.dumps({"key": key, "data": data}))
        os.replace(tmp, cache)
    return data


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
