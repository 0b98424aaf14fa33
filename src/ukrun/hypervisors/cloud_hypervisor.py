"""cloud-hypervisor: everything on its command line.

Options as cloud-hypervisor's `--help` and `docs/` describe them: `--kernel`, `--cmdline`,
`--initramfs` (one), `--memory size=<n>M`, `--cpus boot=<n>`, `--disk path=<p>,readonly=on|off,id=<id>`,
`--console off --serial tty` (the guest's serial console on the container's stdio) and
`--seccomp true|false` (urunc's opt-out: a spec without a seccomp profile). It needs KVM. It shares
folders over virtio-fs only (`--fs tag=,socket=` with `--memory shared=on`), not 9p: ukrun does not
share folders with it yet, since a folder rootfs also needs ukrun's read-only files share, which would
take a second virtiofsd. With `[monitors.cloud-hypervisor] socket_path` (runtime.monitorplan) it serves
its HTTP API socket (`--api-socket path=<path>`, quoted like every other option value).

Its grammars (see hypervisors.base for why this matters): `--kernel`, `--initramfs` and `--cmdline` are
single values, written `--kernel=<path>` so that none is ever read as an option. `--disk` and `--net`
go through its option_parser crate: items split at commas outside double quotes and brackets, each
`key=value`, the value trimmed and its quotes removed (cloud-hypervisor/option_parser/src/lib.rs).
Every string value is written in double quotes, so a comma, `=` or space in it stays in it
(`path="<image>/b,path=/dev/vda"` is one path). What no release reads back whole is refused: a double
quote (v48 and later read `""` as one, earlier releases drop it), whitespace at either end (releases
before v48 trim the value after removing its quotes) and brackets that do not pair (those releases count
them even inside quotes). Its strings must be UTF-8.
"""

from __future__ import annotations

from ukrun.hypervisors.base import Hypervisor, MonitorLaunch, MonitorSpec, Unescapable, refuse_chars, register, utf8

NAME = "cloud-hypervisor"


def quoted(value: str, option: str) -> str:
    """A string value for cloud-hypervisor's option parser, in double quotes; refused where it cannot be."""
    refuse_chars(NAME, option, utf8(NAME, option, value), '"', "cloud-hypervisor's option parser cannot carry")
    if not value:
        raise Unescapable(NAME, option, value, "is empty, which cloud-hypervisor reads as unset")
    if value != value.strip():
        raise Unescapable(NAME, option, value, "begins or ends with whitespace, which cloud-hypervisor trims")
    depth = 0
    for c in value:
        depth += (c == "[") - (c == "]")
        if depth < 0:
            break
    if depth:
        raise Unescapable(NAME, option, value, "holds brackets that do not pair, which cloud-hypervisor's option "
                          "parser cannot carry", "[]")
    return f'"{value}"'


def whole(value: str, option: str) -> str:
    """A single-valued option (`--kernel=...`): taken whole, but a Rust string must be UTF-8."""
    return f"{option}={utf8(NAME, option, value)}"


@register
class CloudHypervisor(Hypervisor):
    name = NAME
    binary = "cloud-hypervisor"
    needs_kvm = True
    control_socket = True

    def _launch(self, spec: MonitorSpec, binary: str) -> MonitorLaunch:
        argv = [binary, whole(spec.kernel, "--kernel"), "--memory", f"size={spec.memory_mib}M",
                "--cpus", f"boot={spec.vcpus}", "--console", "off", "--serial", "tty",
                "--seccomp", "true" if spec.seccomp else "false"]
        for initrd in spec.initrds:
            argv.append(whole(initrd, "--initramfs"))
        for net in spec.nets:
            argv += ["--net", f"tap={quoted(net.tap, '--net tap=')},mac={quoted(net.mac, '--net mac=')}"]
        for dev in spec.blocks:
            argv += ["--disk", f"path={quoted(dev.path, '--disk path=')},readonly={'on' if dev.read_only else 'off'},"
                               f"id={quoted(dev.id, '--disk id=')}"]
        if spec.control_socket:
            argv += ["--api-socket", f"path={quoted(spec.control_socket, '--api-socket path=')}"]
        return MonitorLaunch(tuple([*argv, whole(spec.cmdline, "--cmdline")]))
