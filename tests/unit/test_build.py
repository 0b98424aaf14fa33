import base64
import io
import json
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.images import Layout
from ukrun.errors import ConfigError
from ukrun.image import oci
from ukrun.image.build import build_from_spec


def test_build_from_spec_writes_a_marked_urunc_image(tmp_path: Path) -> None:
    (tmp_path / "bzImage").write_bytes(b"K" * 5000)
    (tmp_path / "initrd.img").write_bytes(b"I" * 300)
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "index.html").write_text("hi")
    (tmp_path / "spec.toml").write_text(
        'name = "ukrun/web:1"\n[unikernel]\ntype = "unikraft"\nhypervisor = "qemu"\nkernel = "bzImage"\n'
        'initrd = "initrd.img"\ncmdline = "-- /www"\n[files]\n"/www" = "www"\n'
        '[[layers]]\nfiles = { "/etc/motd" = "www/index.html" }\n'
    )
    out = tmp_path / "img.tar"
    digest = build_from_spec(tmp_path / "spec.toml", out)
    layout = Layout(out)
    desc = layout.manifest_descriptor
    assert desc["digest"] == digest and desc["annotations"]["io.containerd.image.name"] == "ukrun/web:1"
    assert desc["platform"] == {"architecture": oci.host_arch(), "os": "linux"}
    manifest, config = layout.manifest, layout.config
    assert manifest["annotations"]["com.urunc.unikernel.unikernelType"] == "unikraft"
    assert len(manifest["layers"]) == 3 == len(config["rootfs"]["diff_ids"])
    for layer, diff in zip(manifest["layers"], config["rootfs"]["diff_ids"], strict=True):
        assert oci.sha256_digest(layout.blob(layer["digest"])) == layer["digest"] == diff
    marks = [layer.get("annotations", {}).get(oci.ARTIFACT_MARK) for layer in manifest["layers"]]
    assert marks == [None, "/unikernel/kernel,/unikernel/initrd,/urunc.json", None]
    with tarfile.open(fileobj=io.BytesIO(layout.layer_blobs()[1])) as t:
        inner = {m.name: t.extractfile(m).read() for m in t.getmembers() if m.isfile()}  # type: ignore[union-attr]
    assert inner["unikernel/kernel"] == b"K" * 5000
    urunc = json.loads(inner["urunc.json"])
    assert base64.b64decode(urunc["com.urunc.unikernel.cmdline"]) == b"-- /www"
    # Reproducible: the same spec gives the same manifest.
    assert build_from_spec(tmp_path / "spec.toml", tmp_path / "again.tar") == digest


def test_cli_build_reports_a_missing_kernel(tmp_path: Path) -> None:
    (tmp_path / "spec.toml").write_text(
        'name = "x/y:1"\n[unikernel]\ntype = "linux"\nhypervisor = "qemu"\nkernel = "nope"\n'
    )
    with pytest.raises(ConfigError, match=r"kernel file .* does not exist"):
        build_from_spec(tmp_path / "spec.toml", tmp_path / "o.tar")
    cmd = [sys.executable, "-m", "ukrun", "build", str(tmp_path / "spec.toml"), "-o", str(tmp_path / "o.tar")]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 1 and "does not exist" in proc.stderr and "Traceback" not in proc.stderr


def test_bad_hypervisor_is_refused(tmp_path: Path) -> None:
    (tmp_path / "k").write_bytes(b"k")
    (tmp_path / "spec.toml").write_text(
        'name = "x/y:1"\n[unikernel]\ntype = "linux"\nhypervisor = "vbox"\nkernel = "k"\n'
    )
    with pytest.raises(Exception, match="unknown hypervisor"):
        build_from_spec(tmp_path / "spec.toml", tmp_path / "o.tar")


def test_a_build_specs_ports_become_the_images_exposed_ports(tmp_path: Path) -> None:
    from ukrun.artifacts.layers import read_image_layers
    from ukrun.containerd.records import Descriptor

    (tmp_path / "k").write_bytes(b"k")
    spec = 'name = "x/y:1"\nports = [{}]\n[unikernel]\ntype = "unikraft"\nhypervisor = "qemu"\nkernel = "k"\n'
    (tmp_path / "spec.toml").write_text(spec.format('"8080", "53/udp"'))
    build_from_spec(tmp_path / "spec.toml", tmp_path / "o.tar")
    layout = Layout(tmp_path / "o.tar")
    assert layout.config["config"]["ExposedPorts"] == {"8080/tcp": {}, "53/udp": {}}

    class Blobs:  # what the runtime reads back, through the same parser as from containerd's content store
        def read_blob(self, digest: str, *, limit: int) -> bytes:
            return layout.blob(digest)

        def stream_blob(self, digest: str) -> Iterator[bytes]:
            yield layout.blob(digest)

    target = Descriptor(oci.MANIFEST, layout.manifest_descriptor["digest"], 0)
    assert read_image_layers(Blobs(), target).exposed_ports == ("53/udp", "8080/tcp")
    (tmp_path / "spec.toml").write_text(spec.format('"web"'))
    with pytest.raises(ConfigError, match="ports: 'web': the port must be a number"):
        build_from_spec(tmp_path / "spec.toml", tmp_path / "o.tar")
