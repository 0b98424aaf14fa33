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
    vhost = false                # qemu: vhost-net for the tap, where /dev/vhost-net exists
    socket_path = ""             # a folder for each container's control socket (qemu QMP, firecracker
                                 # and cloud-hypervisor API): <folder>/<namespace>.<container ID>.sock
    data_path = ""               # qemu: its data files are in <data_path>/qemu (-L)

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

An operator switching from urunc keeps urunc's file, $URUNC_CONFIG_FILE or /etc/urunc/config.toml (its
`docs/configuration.md`): the keys both runtimes share (`[monitors.<name>]` default_memory_mb,
default_vcpus, path, data_path, vhost, socket_path; `[extra_binaries.virtiofsd]` path, options) are read
from it when ukrun's own file does not set them. Its other sections ([log], [timestamps], [runtime]) mean
nothing to ukrun. A urunc file that cannot be read or parsed is skipped, as urunc itself skips it; `ukrun
doctor` says which keys came from it, and which were skipped.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType

from ukrun.errors import ConfigError
from ukrun.tuples import NamedTuple

TYPE_CHECKING = False  # not typing's, whose import costs a create without a helper about 2 ms
if TYPE_CHECKING:
    from typing import TypeVar
    N = TypeVar("N", int, float)

DEFAULT_PATH = Path("/etc/ukrun/config.toml")
URUNC_PATH = Path("/etc/urunc/config.toml")
URUNC_ENV = "URUNC_CONFIG_FILE"
CACHE_NAME = ".ukrun-config.json"  # in the runtime root: no containerd ID starts with a dot
URUNC_CACHE_NAME = ".urunc-config.json"
URUNC_KEYS = {"monitors": ("default_memory_mb", "default_vcpus", "path", "data_path", "vhost", "socket_path"),
              "extra_binaries": ("path", "options")}  # per table in each; extra_binaries: virtiofsd only
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
    vhost: bool = False
    socket_path: str = ""
    data_path: str = ""


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
    urunc_path: Path | None = None  # urunc's file, when there is one
    from_urunc: tuple[str, ...] = ()  # the keys read from it ("monitors.qemu.path", ...)
    urunc_unused: tuple[str, ...] = ()  # its sections and keys that ukrun does not read
    urunc_error: str = ""  # why it was skipped

    def monitor(self, name: str) -> Monitor:
        return self.monitors.get(name, Monitor())


def load(path: Path | None = None, cache_dir: Path | None = None) -> Config:
    """`cache_dir`: where the parsed file may be kept (see _read); create passes its runtime root."""
    explicit = path is not None or "UKRUN_CONFIG" in os.environ
    path = path or Path(os.environ.get("UKRUN_CONFIG", DEFAULT_PATH))
    found = True
    try:
        data = _read(path, cache_dir)
    except FileNotFoundError:
        if explicit:
            raise ConfigError(f"config file {path} does not exist; create it or unset UKRUN_CONFIG") from None
        data, found = {}, False
    except (OSError, ValueError) as exc:  # tomllib.TOMLDecodeError is a ValueError
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    urunc_path = Path(os.environ.get(URUNC_ENV) or URUNC_PATH)
    urunc: dict[str, object] = {}
    urunc_error = ""
    urunc_found = True
    try:
        urunc = _read(urunc_path, cache_dir, URUNC_CACHE_NAME)
    except FileNotFoundError:
        urunc_found = False
    except (OSError, ValueError) as exc:
        urunc_error = f"{urunc_path} cannot be read ({exc}): skipped"
    data, taken, unused = _migrate(data, urunc)

    def where(key: str) -> Path:
        return urunc_path if key in taken else path

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
    monitors = {name: _monitor(name, table, where, f"monitors.{name}.")
                for name, table in _table(data, "monitors", path).items()}
    runtime = _table(data, "runtime", path)
    share = str(runtime.get("rootfs_share", base.rootfs_share))
    if share not in SHARES:
        raise ConfigError(f"{path}: [runtime] rootfs_share = {share!r} is not one of {', '.join(SHARES)}")
    vfsd = _table(_table(data, "extra_binaries", path), "virtiofsd", where("extra_binaries.virtiofsd.path"))
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
        path=path if found else None,
        address_set=bool(env_address or "address" in ctd),
        urunc_path=urunc_path if urunc_found else None, from_urunc=taken, urunc_unused=unused,
        urunc_error=urunc_error,
    )


def _monitor(name: str, table: object, where: Callable[[str], Path], prefix: str) -> Monitor:
    """`where(prefix + key)`: the file a key came from, for messages."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where(prefix + 'path')}: [monitors.{name}] must be a table")
    accel = str(table.get("accel", "auto"))
    if accel not in ACCELS:
        raise ConfigError(f"{where(prefix + 'accel')}: [monitors.{name}] accel = {accel!r} is not one of "
                          f"{', '.join(ACCELS)}")
    vhost = table.get("vhost", False)
    if not isinstance(vhost, bool):
        raise ConfigError(f"{where(prefix + 'vhost')}: [monitors.{name}] vhost must be true or false")
    for key in ("socket_path", "data_path"):
        value = table.get(key, "")
        if not isinstance(value, str) or (value and not value.startswith("/")):
            raise ConfigError(f"{where(prefix + key)}: [monitors.{name}] {key} must be an absolute path")
    return Monitor(
        path=str(table.get("path", "")),
        memory_mb=_number(table, "default_memory_mb", 256, where(prefix + "default_memory_mb"), int),
        vcpus=_number(table, "default_vcpus", 1, where(prefix + "default_vcpus"), int),
        accel=accel, vhost=vhost, socket_path=str(table.get("socket_path", "")),
        data_path=str(table.get("data_path", "")),
    )


def _migrate(data: dict[str, object], urunc: dict[str, object]) -> tuple[
        dict[str, object], tuple[str, ...], tuple[str, ...]]:
    """ukrun's configuration with urunc's shared keys where ukrun's own file does not set them, the keys so
    taken, and urunc's keys that ukrun does not read."""
    if not urunc:
        return data, (), ()
    merged = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    taken: list[str] = []
    unused = [k for k in urunc if k not in URUNC_KEYS]
    for section, keys in URUNC_KEYS.items():
        tables = urunc.get(section, {})
        if not isinstance(tables, dict):
            continue
        ours = merged.setdefault(section, {})
        if not isinstance(ours, dict):
            continue
        for name, table in tables.items():
            if not isinstance(table, dict) or (section == "extra_binaries" and name != "virtiofsd"):
                unused.append(f"{section}.{name}")
                continue
            mine = ours.setdefault(name, {})
            if not isinstance(mine, dict):
                continue
            ours[name] = mine = dict(mine)
            for key, value in table.items():
                if key not in keys:
                    unused.append(f"{section}.{name}.{key}")
                elif key not in mine:
                    mine[key] = value
                    taken.append(f"{section}.{name}.{key}")
    return merged, tuple(taken), tuple(unused)


def _read(path: Path, cache_dir: Path | None, cache_name: str = CACHE_NAME) -> dict[str, object]:
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
    cache = cache_dir / cache_name
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
