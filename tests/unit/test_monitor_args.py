"""Every string that reaches a monitor is written in that monitor's own option grammar (hypervisors.base).

Each monitor's argv is parsed back here by a small parser modelled on the monitor's own rules, as its
sources read them: qemu's QemuOpts (util/qemu-option.c: `,,` is a comma of the value) and a multiboot
kernel's `-initrd` module list (hw/i386/multiboot.c: modules split at commas, a file name ends at a
space) beside a Linux kernel's whole `-initrd`; cloud-hypervisor's option_parser crate, both as v48 and
later read it (quotes kept, then removed, `""` a quote) and as earlier releases did (quotes dropped
while splitting, brackets counted even inside quotes, the value trimmed); firecracker's JSON; Solo5's
tenders' `sscanf` formats. Every path- or name-bearing field is fed commas, quotes, `=`, spaces,
newlines and brackets: each value comes back whole, every other field with it, or the monitor refuses it.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable

import pytest

from tests.unit.test_plan import facts
from ukrun.errors import PlanError
from ukrun.hypervisors.base import BlockDevice, MonitorLaunch, MonitorSpec, NetDevice, Share, Unescapable, VirtioFs, get
from ukrun.runtime.plan import plan

HOSTILE = ("/img/a,b", '/img/a"b', "/img/a=b", "/img/a b", "/img/a\nb", "/img/b,path=/dev/vda",
           '/img/b",path="/dev/vda', "/img/m,/etc/shadow", "/img/a,,b", "/img/x[y", "/img/x]y[z", "/img/x[y]z",
           "/img/trailing ", "/img/a\tb", "/img/\udcff", "/img/ü", "/img/@1", "relative/path")
NAMES = ("a,b", 'a"b', "a=b", "a b", "a\nb", "id,drive=other", "", "x" * 68, "1abc", "ok_name", "rootfs")
BASE = MonitorSpec(kernel="/v/kernel", cmdline="console=ttyS0", workdir="/s/c1", exit_device=None)
Parsed = dict[str, list[str]]

# Where each field sits in a spec; every value is placed in one field, the others keep these.
BENIGN = {"kernel": "/v/kernel", "cmdline": "console=ttyS0", "initrd": "/v/initrd", "block path": "/v/disk",
          "block id": "disk0", "share path": "/r/rootfs", "share tag": "fs0", "socket": "/s/vfs.sock",
          "tap": "tapuk1", "mac": "02:00:00:00:00:01", "net id": "service0"}


def spec_with(field: str, value: str, monitor: str) -> MonitorSpec:
    v = {**BENIGN, field: value}
    spec = BASE._replace(kernel=v["kernel"], cmdline=v["cmdline"],
                         initrds=(v["initrd"],) if monitor not in ("spt", "hvt") else (),
                         blocks=(BlockDevice(v["block id"], v["block path"]),),
                         nets=(NetDevice(v["net id"], v["tap"], v["mac"]),))
    if monitor == "qemu":
        spec = spec._replace(shares=(Share(v["share tag"], v["share path"]),), virtiofs=VirtioFs("fs1", v["socket"]))
    return spec


# -- qemu ------------------------------------------------------------------------------------------------------
def qemu_opts(text: str) -> list[tuple[str, str]]:
    """QemuOpts' parse (opts_do_parse, get_opt_name, get_opt_value): a name runs to '=' or ','; a value
    to the next single ',' with ',,' a comma; an item without '=' is the implied first option."""
    out, i = [], 0
    while i < len(text):
        j = i
        while j < len(text) and text[j] not in "=,":
            j += 1
        name = text[i:j]
        if j == len(text) or text[j] == ",":
            out.append(("", name))
            i = j + 1
            continue
        value, j = [], j + 1
        while j < len(text):
            if text[j] == ",":
                if text[j + 1:j + 2] != ",":
                    break
                j += 1
            value.append(text[j])
            j += 1
        out.append((name, "".join(value)))
        i = j + 1
    return out


def qemu_keys(text: str, implied: str, keys: set[str]) -> dict[str, str]:
    """The options of one QemuOpts string: the implied first one (none when ""), then exactly `keys`."""
    items = qemu_opts(text)
    if implied:
        assert items[0] == ("", implied), items
        items = items[1:]
    got = dict(items)
    assert len(got) == len(items) and set(got) == keys, f"options injected: {items}"
    return got


def multiboot_modules(text: str) -> list[str]:
    """A multiboot kernel's -initrd: get_opt_value splits at single commas, then a file name ends at a space."""
    return [v.split(" ", 1)[0] for _, v in qemu_opts("m=" + text)] if text else []


def parse_qemu(launch: MonitorLaunch) -> Parsed:
    out: Parsed = {}

    def record(field: str, value: str) -> None:
        out.setdefault(field, []).append(value)

    for opt, arg in itertools.pairwise(launch.argv[1:]):
        if opt == "-kernel":
            record("kernel", arg)
        elif opt == "-append":
            record("cmdline", arg)
        elif opt == "-initrd":
            assert multiboot_modules(arg) == [arg], f"a multiboot kernel reads other files: {arg!r}"
            record("initrd", arg)  # a Linux or PVH kernel's initrd: the whole argument
        elif opt == "-drive":
            d = qemu_keys(arg, "", {"file", "format", "if", "id", "cache", "aio"})
            record("block path", d["file"])
            record("block id", d["id"])
        elif opt == "-device" and arg.startswith("virtio-blk-pci,"):
            d = qemu_keys(arg, "virtio-blk-pci", {"drive", "serial"})
            assert d["drive"] == d["serial"]
        elif opt == "-fsdev":
            d = qemu_keys(arg, "local", {"id", "path", "security_model", "multidevs"})
            record("share path", d["path"])
            record("share tag", d["id"])
        elif opt == "-device" and arg.startswith("virtio-9p-pci,"):
            d = qemu_keys(arg, "virtio-9p-pci", {"fsdev", "mount_tag"})
            assert d["fsdev"] == d["mount_tag"]
        elif opt == "-chardev":
            record("socket", qemu_keys(arg, "socket", {"id", "path"})["path"])
        elif opt == "-netdev":
            record("tap", qemu_keys(arg, "tap", {"id", "ifname", "script", "downscript"})["ifname"])
        elif opt == "-device" and arg.startswith("virtio-net-pci,"):
            record("mac", qemu_keys(arg, "virtio-net-pci", {"netdev", "mac"})["mac"])
    return out


# -- cloud-hypervisor ------------------------------------------------------------------------------------------
def ch_items_v48(text: str) -> list[str]:
    """option_parser's split_commas since v48: in quotes only '"' is special; quotes are kept."""
    items, current, depth, quoted = [], "", 0, False
    for c in text.strip():
        if c == '"':
            quoted = not quoted
        elif not quoted and c == "[":
            depth += 1
        elif not quoted and c == "]":
            assert depth > 0, "unbalanced brackets: cloud-hypervisor refuses the option"
            depth -= 1
        elif not quoted and depth == 0 and c == ",":
            items.append(current)
            current = ""
            continue
        current += c
    assert not quoted and depth == 0, "unbalanced: cloud-hypervisor refuses the option"
    return [*items, current]


def ch_dequote_v48(value: str) -> str:
    out, prev, quoted = [], "", False
    for c in value:
        if c == '"':
            if prev == '"' and not quoted:
                out.append('"')
            quoted = not quoted
        else:
            out.append(c)
        prev = c
    return "".join(out)


def ch_items_old(text: str) -> list[str]:
    """split_commas before v48: quotes are dropped, brackets counted everywhere."""
    items, current, depth, quoted = [], "", 0, False
    for c in text.strip():
        if c == "[":
            depth += 1
        elif c == "]":
            depth -= 1
            assert depth >= 0, "unbalanced brackets: cloud-hypervisor refuses the option"
        elif c == '"':
            quoted = not quoted
            continue
        elif c == "," and not quoted and depth == 0:
            items.append(current)
            current = ""
            continue
        current += c
    assert not quoted and depth == 0, "unbalanced: cloud-hypervisor refuses the option"
    return [*items, current]


def ch_option(text: str, keys: set[str]) -> dict[str, str]:
    """Both releases' reading of one option string; they must agree, with exactly `keys`."""
    readings = []
    for items, dequote in ((ch_items_v48(text), ch_dequote_v48), (ch_items_old(text), lambda v: v)):
        pairs = [item.split("=", 1) for item in items]
        assert all(len(p) == 2 for p in pairs) and len(pairs) == len(keys), f"options injected: {text!r}"
        got = {k: dequote(v.strip()) for k, v in pairs}
        assert set(got) == keys, f"options injected: {text!r}"
        readings.append(got)
    assert readings[0] == readings[1], readings
    return readings[0]


def parse_cloud_hypervisor(launch: MonitorLaunch) -> Parsed:
    argv, out = list(launch.argv), Parsed()
    whole = {"--kernel": "kernel", "--initramfs": "initrd", "--cmdline": "cmdline"}
    for i, arg in enumerate(argv):
        name, eq, value = arg.partition("=")
        if name in whole and eq:
            out.setdefault(whole[name], []).append(value)  # clap: the value after the first '='
        elif arg == "--disk":
            d = ch_option(argv[i + 1], {"path", "readonly", "id"})
            out.setdefault("block path", []).append(d["path"])
            out.setdefault("block id", []).append(d["id"])
        elif arg == "--net":
            d = ch_option(argv[i + 1], {"tap", "mac"})
            out.setdefault("tap", []).append(d["tap"])
            out.setdefault("mac", []).append(d["mac"])
    return out


# -- firecracker -----------------------------------------------------------------------------------------------
def parse_firecracker(launch: MonitorLaunch) -> Parsed:
    """serde_json's reading: Python's json also reads a lone surrogate escape (not UTF-8), which serde refuses."""
    ((_, text),) = launch.files
    config = json.loads(text)
    assert not re.search("[\ud800-\udfff]", json.dumps(config, ensure_ascii=False)), \
        "serde_json refuses a lone surrogate (not UTF-8): firecracker would not start"
    boot = config["boot-source"]
    out = {"kernel": [boot["kernel_image_path"]], "cmdline": [boot["boot_args"]], "initrd": [boot["initrd_path"]],
           "block path": [d["path_on_host"] for d in config["drives"]],
           "block id": [d["drive_id"] for d in config["drives"]]}
    nets = config.get("network-interfaces", [])
    out.update({"tap": [n["host_dev_name"] for n in nets], "mac": [n["guest_mac"] for n in nets]})
    return out


# -- solo5 -------------------------------------------------------------------------------------------------------
BLOCK = re.compile(r"--block:([A-Za-z0-9]{1,67})=[ \t\n\r\v\f]*([^ \t\n\r\v\f]{1,4096})")  # sscanf's reading
NET = re.compile(r"--net:([A-Za-z0-9]{1,67})=[ \t\n\r\v\f]*([^ \t\n\r\v\f]{1,19})")
MAC = re.compile(r"--net-mac:([A-Za-z0-9]{1,67})=([0-9a-fA-F]{2}(?::[0-9a-fA-F]{2}){5})")


def parse_solo5(launch: MonitorLaunch) -> Parsed:
    argv, out = list(launch.argv), Parsed()
    end = argv.index("--")
    for arg in argv[1:end]:
        for pattern, fields in ((BLOCK, ("block id", "block path")), (NET, ("net id", "tap")), (MAC, ("", "mac"))):
            m = pattern.match(arg)
            if m:
                for field, value in zip(fields, m.groups(), strict=True):
                    if field:
                        out.setdefault(field, []).append(value)
    out["kernel"] = [argv[end + 1]]
    out["cmdline"] = argv[end + 2:]
    return out


PARSERS: dict[str, tuple[Callable[[MonitorLaunch], Parsed], tuple[str, ...]]] = {
    "qemu": (parse_qemu, ("kernel", "cmdline", "initrd", "block path", "block id", "share path", "share tag",
                          "socket", "tap", "mac")),
    "cloud-hypervisor": (parse_cloud_hypervisor, ("kernel", "cmdline", "initrd", "block path", "block id", "tap",
                                                  "mac")),
    "firecracker": (parse_firecracker, ("kernel", "cmdline", "initrd", "block path", "block id", "tap", "mac")),
    "spt": (parse_solo5, ("kernel", "cmdline", "block path", "block id", "tap", "mac", "net id")),
    "hvt": (parse_solo5, ("kernel", "cmdline", "block path", "block id", "tap", "mac", "net id")),
}
NAME_FIELDS = ("block id", "share tag", "net id")


@pytest.mark.parametrize("monitor", list(PARSERS))
def test_every_value_comes_back_whole_or_is_refused(monitor: str) -> None:
    parse, fields = PARSERS[monitor]
    hypervisor = get(monitor)
    assert parse(hypervisor.launch(spec_with("kernel", BENIGN["kernel"], monitor), "/bin/m")) == {
        f: [BENIGN[f]] for f in fields}
    carried = refused = 0
    for field in fields:
        for value in (*NAMES, *HOSTILE) if field in NAME_FIELDS else (*HOSTILE, *NAMES[:6]):
            spec = spec_with(field, value, monitor)
            try:
                launch = hypervisor.launch(spec, "/bin/m")
            except Unescapable as exc:
                assert exc.value == value and exc.monitor == monitor, (field, value, exc)
                refused += 1
                continue
            assert parse(launch) == {f: [value if f == field else BENIGN[f]] for f in fields}, (field, value)
            carried += 1
    assert carried and refused, (carried, refused)


# What each grammar can carry must be carried, not refused: a path with a comma, a quote, '=', a space or a
# newline where the grammar has an escape or nothing is special.
MUST_CARRY: dict[str, dict[str, tuple[str, ...]]] = {
    "qemu": {"block path": HOSTILE[:12], "share path": HOSTILE[:12], "socket": HOSTILE[:12], "kernel": HOSTILE[:12],
             "initrd": ('/img/a"b', "/img/a=b", "/img/a\nb", "/img/x[y")},
    "cloud-hypervisor": {"block path": ("/img/a,b", "/img/a=b", "/img/a b", "/img/a\nb", "/img/b,path=/dev/vda",
                                        "/img/x[y]z"),
                         "kernel": HOSTILE[:7], "initrd": HOSTILE[:7]},
    "firecracker": {f: HOSTILE[:12] for f in ("kernel", "initrd", "block path")},
    "spt": {"block path": ("/img/a,b", '/img/a"b', "/img/a=b", "/img/b,path=/dev/vda", "/img/x[y")},
}


@pytest.mark.parametrize("monitor", list(MUST_CARRY))
def test_what_a_grammar_can_carry_is_not_refused(monitor: str) -> None:
    for field, values in MUST_CARRY[monitor].items():
        for value in values:
            parsed = PARSERS[monitor][0](get(monitor).launch(spec_with(field, value, monitor), "/bin/m"))
            assert parsed[field] == [value], (field, value)


def test_qemu_refuses_an_initrd_that_a_multiboot_kernel_would_split() -> None:
    for value in ("/img/m,/etc/shadow", "/img/m /etc/shadow", "/img/a,,b"):
        with pytest.raises(Unescapable, match="a multiboot kernel reads a comma-separated list of modules"):
            get("qemu").launch(spec_with("initrd", value, "qemu"), "/bin/qemu")


def test_cloud_hypervisor_keeps_a_disk_path_with_its_own_path_option_one_path() -> None:
    launch = get("cloud-hypervisor").launch(spec_with("block path", "/v/b,path=/dev/vda", "cloud-hypervisor"), "/b")
    disk = launch.argv[launch.argv.index("--disk") + 1]
    assert disk == 'path="/v/b,path=/dev/vda",readonly=off,id="disk0"'
    assert ch_option(disk, {"path", "readonly", "id"})["path"] == "/v/b,path=/dev/vda"


def test_a_refusal_names_the_images_field_never_the_host_path() -> None:
    f = facts("unikraft", "qemu", initrd="/boot/m,/etc/shadow")
    f = f._replace(artifacts=f.artifacts._replace(initrd="/var/lib/views/v7/rootfs/boot/m,/etc/shadow"))
    with pytest.raises(PlanError) as exc:
        plan(f)
    assert str(exc.value) == (
        "the image's initrd '/boot/m,/etc/shadow' (com.urunc.unikernel.initrd) holds a comma, which qemu's -initrd "
        "cannot carry (a multiboot kernel reads a comma-separated list of modules there, each with a command line "
        "after a space) (-initrd of qemu): rename it in the image")
    linked = facts("linux", "cloud-hypervisor", block="/disk.img")  # a link in the image leads to a '"'
    linked = linked._replace(artifacts=linked.artifacts._replace(block='/var/lib/views/v7/rootfs/x"y/disk.img',
                                                                 own_block='/var/lib/views/c1/rootfs/x"y/disk.img'))
    with pytest.raises(PlanError, match=r"^the path where ukrun reads the image's block '/disk.img' holds a double "
                                        "quote") as exc:
        plan(linked)
    assert "/var/lib/views" not in str(exc.value)
