"""cloud-hypervisor: everything on its command line.

Options as cloud-hypervisor's `--help` and `docs/` describe them: `--kernel`, `--cmdline`,
`--initramfs` (one), `--memory size=<n>M`, `--cpus boot=<n>`, `--disk path=<p>,readonly=on|off,id=<id>`,
`--console off --serial tty` (the guest's serial console on the container's stdio) and
`--seccomp true|false` (urunc's opt-out: a spec without a seccomp profile). It needs KVM. It shares
folders over virtio-fs only (`--fs tag=,socket=` with `--memory shared=on`), not 9p: ukrun does not
share folders with it yet, since a folder rootfs also needs ukrun's read-only files share, which would
take a second virtiofsd. With `[monitors.cloud-hypervisor] socket_path` (runtime.monitorplan) it serves
its HTTP API socket (`--api-socket path=<path>`); its option parser (the `option_parser` crate) splits
on commas outside double quotes, so the path goes in double quotes, and a path holding one is refused.
"""

from __future__ import annotations

from ukrun.errors import UkrunError
from ukrun.hypervisors.base import Hypervisor, MonitorLaunch, MonitorSpec, register


def _quoted(value: str, what: str) -> str:
    """A value for cloud-hypervisor's `key=value,...` options: in double quotes, which hold commas."""
    if '"' in value:
        raise UkrunError(f"{what} {value!r} holds a double quote, which cloud-hypervisor's options cannot carry: "
                         "use a path without one")
    return f'"{value}"'


@register
class CloudHypervisor(Hypervisor):
    name = "cloud-hypervisor"
    binary = "cloud-hypervisor"
    needs_kvm = True
    control_socket = True

    def _launch(self, spec: MonitorSpec, binary: str) -> MonitorLaunch:
        argv = [binary, "--kernel", spec.kernel, "--memory", f"size={spec.memory_mib}M",
                "--cpus", f"boot={spec.vcpus}", "--console", "off", "--serial", "tty",
                "--seccomp", "true" if spec.seccomp else "false"]
        for initrd in spec.initrds:
            argv += ["--initramfs", initrd]
        for net in spec.nets:
            argv += ["--net", f"tap={net.tap},mac={net.mac}"]
        for dev in spec.blocks:
            argv += ["--disk", f"path={dev.path},readonly={'on' if dev.read_only else 'off'},id={dev.id}"]
        if spec.control_socket:
            argv += ["--api-socket", f"path={_quoted(spec.control_socket, 'the control socket')}"]
        return MonitorLaunch(tuple([*argv, "--cmdline", spec.cmdline]))
