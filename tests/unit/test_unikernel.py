import base64
import json

import pytest

from ukrun.errors import ImageError
from ukrun.unikernel import PREFIX, UnikernelConfig, from_annotations, parse_urunc_json


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


CFG = UnikernelConfig("linux", "qemu", "/unikernel/kernel", cmdline="console=ttyS0 quiet", initrd="/unikernel/initrd")


def test_urunc_json_round_trip_is_base64() -> None:
    raw = json.loads(CFG.urunc_json())
    assert raw[PREFIX + "binary"] == b64("/unikernel/kernel")
    back = parse_urunc_json(CFG.urunc_json())
    assert (back.binary, back.initrd, back.cmdline, back.source) == (CFG.binary, CFG.initrd, CFG.cmdline, "/urunc.json")


def test_plain_annotations() -> None:
    cfg = from_annotations(CFG.annotations())
    assert cfg is not None and cfg.binary == "/unikernel/kernel" and cfg.cmdline == "console=ttyS0 quiet"


def test_base64_annotations_of_older_images() -> None:
    cfg = from_annotations({k: b64(v) for k, v in CFG.annotations().items()})
    assert cfg is not None and cfg.initrd == "/unikernel/initrd" and cfg.source == "annotations (base64)"


def test_no_annotations_is_not_a_unikernel() -> None:
    assert from_annotations({"org.opencontainers.image.title": "x"}) is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (json.dumps({PREFIX + "unikernelType": "bGludXg", PREFIX + "hypervisor": b64("qemu")}).encode(), "base64"),
        (json.dumps({PREFIX + "unikernelType": b64("linux"), PREFIX + "hypervisor": 3}).encode(), "base64 string"),
        (json.dumps({PREFIX + "unikernelType": b64("linux"), PREFIX + "hypervisor": b64("qemu")}).encode(), "binary"),
        (b" " * (64 * 1024 + 1), "limit"),
        (json.dumps({PREFIX + "unikernelType": b64("nope"), PREFIX + "hypervisor": b64("qemu"),
                     PREFIX + "binary": b64("/k")}).encode(), "unknown unikernel type"),
        (json.dumps({PREFIX + "unikernelType": b64("linux"), PREFIX + "hypervisor": b64("qemu"),
                     PREFIX + "binary": b64("kernel")}).encode(), "absolute path"),
    ],
)
def test_bad_urunc_json_is_refused_with_a_reason(data: bytes, message: str) -> None:
    with pytest.raises(ImageError, match=message):
        parse_urunc_json(data)


def test_mixed_encoding_annotations_are_refused() -> None:
    ann = {k: b64(v) for k, v in CFG.annotations().items()}
    ann[PREFIX + "binary"] = "/not/base64!"
    with pytest.raises(ImageError, match="not base64"):
        from_annotations(ann)


def test_an_images_manifest_annotations_win_over_its_labels() -> None:
    from ukrun.unikernel import from_image

    labels = {"com.urunc.unikernel.unikernelType": "linux", "com.urunc.unikernel.hypervisor": "qemu",
              "com.urunc.unikernel.binary": "/kernel", "org.opencontainers.image.title": "x"}
    annotations = {"com.urunc.unikernel.hypervisor": "firecracker"}
    config = from_image(annotations, labels)
    assert config is not None and config.hypervisor == "firecracker" and config.binary == "/kernel"
    assert config.source == "image"
    assert from_image({}, {"org.opencontainers.image.title": "x"}) is None


@pytest.mark.parametrize("cmdline", ["console=ttyS0\0init=/evil", "a\nukrun.process=/evil", "x\x1b[2J", "\x7f"])
def test_control_characters_in_a_configuration_value_are_refused(cmdline: str) -> None:
    keys = {"com.urunc.unikernel.unikernelType": "linux", "com.urunc.unikernel.hypervisor": "qemu",
            "com.urunc.unikernel.binary": "/kernel", "com.urunc.unikernel.cmdline": cmdline}
    with pytest.raises(ImageError, match=r"cmdline contains a control character \(U\+00"):
        from_annotations(keys)
