"""Firecracker: one JSON configuration file, `--no-api --config-file <file>`.

Keys as Firecracker's configuration file documents them (its `docs/getting-started.md` and the
`vmm_config` schemas): `boot-source` (kernel_image_path, boot_args, initrd_path), `machine-config`
(vcpu_count, mem_size_mib, smt), `drives` (drive_id, path_on_host, is_root_device, is_read_only) and,
with a network, `network-interfaces`. Firecracker has no shared folders and loads one initrd. Its own
seccomp filters apply unless the spec has none (`--no-seccomp`, as urunc does). It needs KVM. With
`[monitors.firecracker] socket_path` (runtime.monitorplan) its API socket is served (`--api-sock <path>`,
one argv value) instead of `--no-api`: the configuration file still boots the VM, and the socket controls it.

Its grammar (see hypervisors.base): JSON, written by `json.dumps`, so any string arrives whole; a string
that is not UTF-8 (which serde refuses) and a device id that is not 1 to 64 letters, digits and `_` (the
ids firecracker's API accepts) are refused.
"""

from __future__ import annotations

import json
import os

from ukrun.hypervisors.base import Hypervisor, MonitorLaunch, MonitorSpec, Unescapable, register, utf8

CONFIG_FILE = "firecracker.json"
NAME = "firecracker"


def device_id(value: str) -> str:
    if not (0 < len(value) <= 64 and all(c.isascii() and (c.isalnum() or c == "_") for c in value)):
        raise Unescapable(NAME, "drive_id", value, "is not 1 to 64 letters, digits and '_', firecracker's ids")
    return value


@register
class Firecracker(Hypervisor):
    name = NAME
    binary = "firecracker"
    needs_kvm = True
    control_socket = True

    def _launch(self, spec: MonitorSpec, binary: str) -> MonitorLaunch:
        boot: dict[str, object] = {"kernel_image_path": utf8(NAME, "kernel_image_path", spec.kernel),
                                   "boot_args": utf8(NAME, "boot_args", spec.cmdline)}
        if spec.initrds:
            boot["initrd_path"] = utf8(NAME, "initrd_path", spec.initrds[0])
        config = {
            "boot-source": boot,
            "machine-config": {"vcpu_count": spec.vcpus, "mem_size_mib": spec.memory_mib, "smt": False},
            "drives": [{"drive_id": device_id(dev.id), "path_on_host": utf8(NAME, "path_on_host", dev.path),
                        "is_root_device": False,
                        "is_read_only": dev.read_only} for dev in spec.blocks],
        }
        if spec.nets:
            config["network-interfaces"] = [{"iface_id": f"net{i + 1}", "guest_mac": utf8(NAME, "guest_mac", net.mac),
                                             "host_dev_name": utf8(NAME, "host_dev_name", net.tap)}
                                            for i, net in enumerate(spec.nets)]
        path = os.path.join(spec.workdir, CONFIG_FILE)
        api = ["--api-sock", spec.control_socket] if spec.control_socket else ["--no-api"]
        argv = [binary, *api, "--config-file", path]
        if not spec.seccomp:
            argv.append("--no-seccomp")
        return MonitorLaunch(tuple(argv), ((path, json.dumps(config, indent=1) + "\n"),))
