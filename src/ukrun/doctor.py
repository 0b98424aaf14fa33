"""`ukrun doctor`: what ukrun needs on this node, one line per check, with the fix when one fails."""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from ukrun import config as configmod
from ukrun import errors, host, kvm


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok, warn, fail
    detail: str
    fix: str = ""

    def to_json(self) -> dict[str, str]:
        return asdict(self)


def run(cfg: configmod.Config, address: str, namespace: str, state_root: Path) -> list[Check]:
    checks = [_config(cfg), _urunc_config(cfg)]
    checks += _containerd(cfg, address, namespace)
    checks += _monitors(cfg, state_root)
    checks.append(_virtiofsd(cfg))
    checks.append(_runc(cfg))
    checks.append(_nft())
    checks.append(_state_root(state_root))
    return checks


def _config(cfg: configmod.Config) -> Check:
    if cfg.path is None:
        return Check("config", "ok", f"no config file at {configmod.DEFAULT_PATH}: defaults in use")
    return Check("config", "ok", f"{cfg.path}: artifact mode {cfg.artifact_mode}, state root {cfg.state_root}")


def _urunc_config(cfg: configmod.Config) -> Check:
    """What ukrun takes from urunc's configuration file, for an operator switching from urunc."""
    where = os.environ.get(configmod.URUNC_ENV) or configmod.URUNC_PATH
    if cfg.urunc_error:
        return Check("urunc config", "warn", cfg.urunc_error, f"fix the TOML of {where}, or remove it")
    if cfg.urunc_path is None:
        return Check("urunc config", "ok", f"no urunc configuration at {where}")
    taken = ", ".join(cfg.from_urunc) or "nothing (ukrun's own file sets every key they share)"
    detail = f"{cfg.urunc_path}: ukrun reads {taken}"
    if cfg.urunc_unused:
        detail += f"; it does not read {', '.join(cfg.urunc_unused)}"
    return Check("urunc config", "ok", detail)


def _containerd(cfg: configmod.Config, address: str, namespace: str) -> list[Check]:
    from ukrun.containerd.client import Client

    try:
        client = Client(address, namespace, timeout=min(cfg.timeout, 5))
        version, _ = client.version()
        plugins = client.plugins(["type==io.containerd.snapshotter.v1"])
    except errors.UkrunError as exc:
        return [Check("containerd", "fail", str(exc), "start containerd, or point ukrun at the right socket")]
    out = [Check("containerd", "ok", f"containerd {version} at {client.address}")]
    for p in sorted(plugins, key=lambda p: p.id):
        block = p.id in ("devmapper", "blockfile")
        if not p.init_error:
            note = " (block rootfs: zero-copy views and device handoff)" if block else ""
            out.append(Check(f"snapshotter {p.id}", "ok", f"loaded{note}"))
        elif block:
            out.append(Check(f"snapshotter {p.id}", "warn", f"skipped: {p.init_error}",
                             _SNAPSHOTTER_FIX.get(p.id, "")))
        else:
            out.append(Check(f"snapshotter {p.id}", "ok", f"skipped: {p.init_error}"))
    client.close()
    return out


_SNAPSHOTTER_FIX = {
    "devmapper": "create a thin pool and set pool_name under [plugins.\"io.containerd.snapshotter.v1.devmapper\"] "
                 "(see the README's devmapper section)",
    "blockfile": "set scratch_file under [plugins.\"io.containerd.snapshotter.v1.blockfile\"] (containerd >= 1.7.4)",
}


def _monitors(cfg: configmod.Config, state_root: Path) -> list[Check]:
    from ukrun.hypervisors.base import REGISTRY
    from ukrun.hypervisors.base import get as get_hypervisor

    get_hypervisor("qemu")  # loads the registry
    out = []
    for name in sorted(REGISTRY):
        hv = get_hypervisor(name, cfg.monitor(name).path)
        binary = hv.find()
        if not binary:
            out.append(Check(f"monitor {name}", "warn", hv.missing() + ": images that name it fail at create",
                             f"install {hv.binary}, or set path under [monitors.{name}]"))
            continue
        if hv.needs_kvm and not os.access("/dev/kvm", os.R_OK | os.W_OK):
            out.append(Check(f"monitor {name}", "warn", f"{binary}, but it needs /dev/kvm, which is not usable here",
                             "enable virtualisation and load kvm_intel or kvm_amd"))
            continue
        out.append(Check(f"monitor {name}", "ok", binary))
        out += _monitor_options(name, cfg.monitor(name))
        probe = hv.kvm_probe_args()
        if probe is None:
            continue
        if not os.path.exists("/dev/kvm"):
            out.append(Check("kvm", "warn", "no /dev/kvm: guests run under TCG, 10-50x slower",
                             "enable virtualisation (nested, if this is a VM) and load kvm_intel or kvm_amd"))
        elif kvm.kvm_works(binary, probe, state_root):
            out.append(Check("kvm", "ok",
                             "a guest really runs under KVM, at the hardware's speed, with the launch's CPU flags"))
        else:
            out.append(Check("kvm", "warn",
                             "/dev/kvm exists but does not run a guest with the launch's CPU flags at the hardware's "
                             "speed: guests run under TCG",
                             "check the host's KVM (a PVM or nested setup may lack features or emulate the guest); "
                             '`accel = "tcg"` spares each boot the probe'))
    return out


def _monitor_options(name: str, conf: configmod.Monitor) -> list[Check]:
    out = []
    if conf.vhost and not os.path.exists("/dev/vhost-net"):
        out.append(Check(f"monitor {name} vhost", "warn", "vhost = true, but this host has no /dev/vhost-net: guests "
                         "use qemu's own virtio-net backend", "modprobe vhost_net"))
    elif conf.vhost:
        out.append(Check(f"monitor {name} vhost", "ok", "vhost-net backs the guests' network"))
    if conf.socket_path and not os.path.isdir(conf.socket_path):
        out.append(Check(f"monitor {name} socket_path", "fail", f"{conf.socket_path} is not a folder: creates "
                         "with this monitor fail", f"mkdir -p {conf.socket_path}, or unset socket_path"))
    elif conf.socket_path:
        out.append(Check(f"monitor {name} socket_path", "ok", f"control sockets in {conf.socket_path}"))
    return out


def _virtiofsd(cfg: configmod.Config) -> Check:
    import subprocess

    path, share = cfg.virtiofsd.path, cfg.rootfs_share
    if not path:
        if share == "virtiofs":
            return Check("virtiofsd", "fail", "[runtime] rootfs_share is virtiofs but no virtiofsd is configured: "
                         "folder rootfs fail at create", "set path under [extra_binaries.virtiofsd]")
        return Check("virtiofsd", "ok", "not configured: folder rootfs go over 9p")
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Check("virtiofsd", "fail", f"{path} does not run: {exc}",
                     "install virtiofsd there, or correct or remove path under [extra_binaries.virtiofsd]")
    version = (out.stdout.strip().splitlines() or [f"exit status {out.returncode}"])[0]
    if out.returncode != 0:
        return Check("virtiofsd", "fail", f"{path} --version failed: {version}",
                     "install a working virtiofsd there, or correct path under [extra_binaries.virtiofsd]")
    use = "9p (rootfs_share = 9p)" if share == "9p" else "virtio-fs" + (" where the guest and monitor support it"
                                                                       if share == "auto" else "")
    return Check("virtiofsd", "ok", f"{version} at {path}: folder rootfs go over {use}")


def _nft() -> Check:
    nft = shutil.which("nft")
    if not nft:
        return Check("nft", "warn", "no nft: unikernels that declare ports, and those in static network mode "
                     "(io.ukrun.network: static, Knative's user-container), fail at create", "install nftables")
    return Check("nft", "ok", f"{nft} sets up the NAT of the ports and static network modes")


def _runc(cfg: configmod.Config) -> Check:
    runc = cfg.runc or shutil.which("runc") or ""
    if not runc:
        return Check("runc", "warn", "no runc: containers that are not unikernels cannot run",
                     "install runc or set [runtime] runc")
    return Check("runc", "ok", f"{runc} runs containers that are not unikernels")


def _state_root(state_root: Path) -> Check:
    probe = state_root
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not os.access(probe, os.W_OK):
        return Check("state root", "fail", f"{state_root} is not writable", "run ukrun as root")
    m = host.mount_of(probe)
    if m is None:
        return Check("state root", "warn", f"{state_root}: no mount found for it")
    detail = f"{state_root} on {m.fstype} at {m.mount_point}, propagation {m.propagation}"
    if m.propagation == "private":
        return Check("state root", "warn", detail + ": view mounts made here stay in this mount namespace",
                     f"mount --make-rshared {m.mount_point}, or keep ukrun in the host's mount namespace")
    return Check("state root", "ok", detail)
