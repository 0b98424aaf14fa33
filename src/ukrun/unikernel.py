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
from typing import NamedTuple

from ukrun.errors import ImageError
from ukrun.image.oci import load_json

PREFIX = "com.urunc.unikernel."
TYPES = ("rumprun", "unikraft", "mirage", "mewz", "hermit", "linux")
HYPERVISORS = ("qemu", "firecracker", "cloud-hypervisor", "hvt", "spt")
URUNC_JSON = "/urunc.json"
URUNC_JSON_LIMIT = 64 * 1024
REQUIRED = ("unikernelType", "hypervisor", "binary")
PATH_KEYS = ("binary", "initrd", "block")
KNOWN = (*REQUIRED, "cmdline", "initrd", "block", "blkMntPoint", "unikernelVersion", "useDMBlock", "mountRootfs")


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
