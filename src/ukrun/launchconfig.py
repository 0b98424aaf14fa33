"""The contract between `create` and the container's init (`launcher`): what the init needs to enter
the container and run its monitor, written by one side and read by the other as `launch.conf`.

Standard library only, and not typing, pathlib or json: the init imports this on every container's
`create`, and with a resident helper (ukrun.relay) it does so in a process that has imported nothing
else, while `create` waits for it to be ready (typing, pathlib, socket and json were 20-25 ms of a 35 ms
create). Plain classes with slots, as runtime.state's record; marshal's format, as between any two
processes of one ukrun. An older ukrun's `launch.json` is still read, and rewritten as JSON
(`update_monitor`), so that its init, which reads it again at `start`, sees the change."""

from __future__ import annotations

import marshal
import os

TYPE_CHECKING = False  # not typing's: importing typing is what this module avoids
if TYPE_CHECKING:
    from collections.abc import Mapping  # for annotations alone: collections costs the zygote 1.4 ms
    from typing import Any

FILE = "launch.conf"
LEGACY_FILE = "launch.json"
FIELDS = ("id", "monitor", "env", "cgroups", "namespaces", "hostname", "terminal", "exit_decoding", "timing_log",
          "views", "keep_mounts", "virtiofsd", "virtiofsd_socket", "virtiofsd_log", "late_network")


class Namespace:
    __slots__ = ("path", "type")

    def __init__(self, type: str, path: str = "") -> None:
        self.type, self.path = type, path


class LaunchConfig:
    __slots__ = FIELDS

    def __init__(self, id: str, monitor: tuple[str, ...], env: Mapping[str, str], cgroups: tuple[str, ...] = (),
                 namespaces: tuple[Namespace, ...] = (), hostname: str = "", terminal: bool = False,
                 exit_decoding: str = "raw", timing_log: str = "", views: str = "", keep_mounts: tuple[str, ...] = (),
                 virtiofsd: tuple[str, ...] = (), virtiofsd_socket: str = "", virtiofsd_log: str = "",
                 late_network: bool = False) -> None:
        self.id, self.monitor, self.env, self.cgroups = id, monitor, env, cgroups  # monitor: its argv
        self.namespaces, self.hostname, self.terminal = namespaces, hostname, terminal
        self.exit_decoding = exit_decoding  # hypervisors.base.ExitDecoding's value
        self.timing_log = timing_log
        # the state root's views folder: a new mount namespace keeps only this container's view
        self.views, self.keep_mounts = views, keep_mounts
        # virtiofsd's argv (empty: none, see runtime.shareplan), its socket, bound and listening before
        # virtiofsd and the monitor start, and its log
        self.virtiofsd, self.virtiofsd_socket, self.virtiofsd_log = virtiofsd, virtiofsd_socket, virtiofsd_log
        self.late_network = late_network  # `start` may rewrite the monitor's argv (runtime.startnet): read again

    def write(self, state_dir: str | os.PathLike[str]) -> None:
        with open(os.path.join(state_dir, FILE), "wb") as f:
            marshal.dump(self._data(), f)

    def _data(self) -> dict[str, object]:
        data = {f: getattr(self, f) for f in FIELDS}
        data.update(env=dict(self.env), namespaces=[{"type": n.type, "path": n.path} for n in self.namespaces])
        return data

    @classmethod
    def read(cls, state_dir: str | os.PathLike[str]) -> LaunchConfig:
        legacy = os.path.join(state_dir, LEGACY_FILE)
        if os.path.exists(legacy):
            import json

            with open(legacy) as f:
                return cls._from(json.load(f))
        with open(os.path.join(state_dir, FILE), "rb") as f:
            return cls._from(marshal.load(f))

    @classmethod
    def update_monitor(cls, state_dir: str | os.PathLike[str], argv: tuple[str, ...]) -> None:
        """Replaces the monitor's argv (runtime.startnet), in the file's own format."""
        conf = cls.read(state_dir)
        conf.monitor = argv
        legacy = os.path.join(state_dir, LEGACY_FILE)
        if os.path.exists(legacy):
            import json

            with open(legacy, "w") as f:
                json.dump(conf._data(), f)
        else:
            conf.write(state_dir)

    @classmethod
    def _from(cls, d: Mapping[str, Any]) -> LaunchConfig:
        return cls(
            id=str(d["id"]), monitor=tuple(d["monitor"]), env=d["env"], cgroups=tuple(d["cgroups"]),
            namespaces=tuple(Namespace(**n) for n in d["namespaces"]), hostname=d["hostname"],
            terminal=d["terminal"], exit_decoding=d["exit_decoding"], timing_log=d["timing_log"],
            views=d["views"], keep_mounts=tuple(d["keep_mounts"]), virtiofsd=tuple(d["virtiofsd"]),
            virtiofsd_socket=d["virtiofsd_socket"], virtiofsd_log=d["virtiofsd_log"],
            late_network=d["late_network"],
        )
