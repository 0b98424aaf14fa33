"""A unikernel's configuration as urunc images carry it: OCI annotations, or `/urunc.json` in the rootfs.

Keys are `com.urunc.unikernel.<name>`. In `urunc.json` every value is base64; in annotations values
are plain for newer images and base64 for older ones. The encoding of a set of annotations is decided
once, by the required key `unikernelType`, whose value is either a known type or its base64.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping

from ukrun.errors import ImageError
from ukrun.image.oci import load_json
from ukrun.tuples import NamedTuple

PREFIX = "com.urunc.unikernel."
TYPES = ("rumprun", "unikraft", "mirage", "mewz", "hermit", "linux", "freebsd")
HYPERVISORS = ("qemu", "firecracker", "cloud-hypervisor", "hvt", "spt", "hyperlight-unikraft")
URUNC_JSON = "/urunc.json"
URUNC_JSON_LIMIT = 64 * 1024
REQUIRED = ("unikernelType", "hypervisor", "binary")
SOLO5_NAME_MAX = 67  # Solo5's MFT_NAME_MAX: a manifest's device names are alphanumeric, at most this long
SOLO5_NAMES = 64  # a manifest's entries
PATH_KEYS = ("binary", "initrd", "block")
KNOWN = (*REQUIRED, "cmdline", "initrd", "block", "blkMntPoint", "unikernelVersion", "useDMBlock", "mountRootfs",
         "solo5NetDev", "solo5BlkDev")


class UnikernelConfig(NamedTuple):
    unikernel_type: str
    hypervisor: str
    binary: str
    cmdline: str = ""
    initrd: str = ""
    block: str = ""
    block_mount_point: str = ""
    version: str = ""
    mount_rootfs: bool = False
    source: str = "annotations"  # or "urunc.json"
    net_dev: str = ""  # solo5NetDev: the Solo5 net device's name (checked against the kernel's manifest)
    blk_dev: str = ""  # solo5BlkDev: the Solo5 block devices' names, in attachment order, comma-separated

    def artifact_paths(self) -> list[str]:
        """Paths inside the rootfs that the runtime must read before the VM starts."""
        return [p for p in (self.binary, self.initrd, self.block) if p]

    def annotations(self) -> dict[str, str]:
        """The plain-valued annotations that describe this configuration."""
        values = {
            "unikernelType": self.unikernel_type,
            "hypervisor": self.hypervisor,
            "binary": self.binary,
            "cmdline": self.cmdline,
            "initrd": self.initrd,
            "block": self.block,
            "blkMntPoint": self.block_mount_point,
            "unikernelVersion": self.version,
            "mountRootfs": "true" if self.mount_rootfs else "",
            "solo5NetDev": self.net_dev,
            "solo5BlkDev": self.blk_dev,
        }
        return {PREFIX + k: v for k, v in values.items() if v}

    def urunc_json(self) -> bytes:
        """`/urunc.json` content: a flat object of base64 values."""
        encoded = {k: base64.b64encode(v.encode()).decode() for k, v in self.annotations().items()}
        return (json.dumps(encoded, indent=1, sort_keys=True) + "\n").encode()


def has_config(annotations: Mapping[str, str]) -> bool:
    return PREFIX + "unikernelType" in annotations


def _b64(value: str) -> str | None:
    try:
        return base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None


def _build(values: Mapping[str, str], source: str) -> UnikernelConfig:
    for key in REQUIRED:
        if not values.get(key):
            raise ImageError(
                f"unikernel configuration from {source} lacks {PREFIX}{key}; "
                f"every urunc image names {', '.join(REQUIRED)}"
            )
    for key, value in values.items():
        bad = next((c for c in value if ord(c) < 0x20 or ord(c) == 0x7F), None)
        if bad is not None:
            raise ImageError(f"{source}: {PREFIX}{key} contains a control character (U+{ord(bad):04X}), which a "
                             "monitor's or guest's command line cannot carry; remove it from the image")
    utype, hyper = values["unikernelType"], values["hypervisor"]
    if utype not in TYPES:
        raise ImageError(f"{source}: unknown unikernel type {utype!r}; known: {', '.join(TYPES)}")
    if hyper not in HYPERVISORS:
        raise ImageError(f"{source}: unknown hypervisor {hyper!r}; known: {', '.join(HYPERVISORS)}")
    for key in PATH_KEYS:
        path = values.get(key, "")
        if path and not path.startswith("/"):
            raise ImageError(f"{source}: {PREFIX}{key} must be an absolute path in the rootfs, got {path!r}")
    for key in ("solo5NetDev", "solo5BlkDev"):
        names = [n.strip() for n in values.get(key, "").split(",")] if values.get(key, "").strip() else []
        if len(names) > (1 if key == "solo5NetDev" else SOLO5_NAMES) or not all(
                n.isascii() and n.isalnum() and len(n) <= SOLO5_NAME_MAX for n in names):
            raise ImageError(f"{source}: {PREFIX}{key}={values[key]!r} is not "
                             f"{'a Solo5 device name' if key == 'solo5NetDev' else 'a comma-separated list of them'}"
                             f" (letters and digits, at most {SOLO5_NAME_MAX}, as Solo5's manifests have them)")
    flag = (values.get("mountRootfs") or values.get("useDMBlock") or "").strip().lower()
    return UnikernelConfig(
        unikernel_type=utype,
        hypervisor=hyper,
        binary=values["binary"],
        cmdline=values.get("cmdline", ""),
        initrd=values.get("initrd", ""),
        block=values.get("block", ""),
        block_mount_point=values.get("blkMntPoint", ""),
        version=values.get("unikernelVersion", ""),
        mount_rootfs=flag in ("true", "1", "yes"),
        source=source,
        net_dev=values.get("solo5NetDev", "").strip(),
        blk_dev=values.get("solo5BlkDev", "").strip(),
    )


def from_annotations(annotations: Mapping[str, str]) -> UnikernelConfig | None:
    """The configuration in a spec's annotations, or None when they hold none."""
    if not has_config(annotations):
        return None
    raw = {k[len(PREFIX):]: v for k, v in annotations.items() if k.startswith(PREFIX)}
    utype = raw["unikernelType"]
    if utype in TYPES:
        return _build(raw, "annotations")
    if _b64(utype) in TYPES:
        decoded = {}
        for key, value in raw.items():
            plain = _b64(value)
            if plain is None:
                raise ImageError(f"annotation {PREFIX}{key} is not base64 like the other unikernel annotations")
            decoded[key] = plain
        return _build(decoded, "annotations (base64)")
    raise ImageError(f"annotation {PREFIX}unikernelType: unknown unikernel type {utype!r}; known: {', '.join(TYPES)}")


def from_image(annotations: Mapping[str, str], labels: Mapping[str, str]) -> UnikernelConfig | None:
    """The configuration an image carries in its manifest's annotations and its configuration's labels
    (manifest annotations win, as urunc's shim merges them), or None when it carries none."""
    merged = {k: v for k, v in labels.items() if k.startswith(PREFIX)}
    merged.update((k, v) for k, v in annotations.items() if k.startswith(PREFIX))
    found = from_annotations(merged)
    return None if found is None else found._replace(source="image")


def parse_urunc_json(data: bytes) -> UnikernelConfig:
    """Parses `/urunc.json`: a flat JSON object whose values are base64 strings."""
    if len(data) > URUNC_JSON_LIMIT:
        raise ImageError(f"{URUNC_JSON} is {len(data)} bytes, over the {URUNC_JSON_LIMIT}-byte limit")
    obj = load_json(data, URUNC_JSON)
    values = {}
    for key, value in obj.items():
        if not key.startswith(PREFIX):
            continue
        if not isinstance(value, str):
            raise ImageError(f"{URUNC_JSON}: {key} must be a base64 string, got {type(value).__name__}")
        plain = _b64(value)
        if plain is None:
            raise ImageError(
                f"{URUNC_JSON}: {key} is not valid base64 (urunc.json values are base64-encoded: "
                f"`printf %s VALUE | base64 -w0`)"
            )
        values[key[len(PREFIX):]] = plain
    return _build(values, URUNC_JSON)
