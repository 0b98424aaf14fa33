"""An operator switching from urunc keeps /etc/urunc/config.toml (or $URUNC_CONFIG_FILE): ukrun reads the keys
both runtimes share from it when its own file does not set them (urunc's `docs/configuration.md`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ukrun import config
from ukrun.errors import ConfigError

URUNC = """
[log]
level = "debug"

[timestamps]
enabled = true

[monitors.qemu]
default_memory_mb = 512
default_vcpus = 2
path = "/opt/urunc/bin/qemu-system-x86_64"
vhost = true
socket_path = "/run/urunc-sockets"
data_path = "/opt/urunc/share"

[monitors.hvt]
default_memory_mb = 64

[extra_binaries.virtiofsd]
path = "/opt/urunc/libexec/virtiofsd"
options = "--cache always --sandbox none"
"""


@pytest.fixture
def urunc_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "urunc.toml"
    path.write_text(URUNC)
    monkeypatch.setenv("URUNC_CONFIG_FILE", str(path))
    return path


def test_uruncs_keys_fill_what_ukruns_file_leaves_unset(tmp_path: Path, urunc_file: Path) -> None:
    own = tmp_path / "ukrun.toml"
    own.write_text('[monitors.qemu]\ndefault_memory_mb = 1024\naccel = "tcg"\n')
    cfg = config.load(own)
    qemu = cfg.monitor("qemu")
    assert qemu == config.Monitor(path="/opt/urunc/bin/qemu-system-x86_64", memory_mb=1024, vcpus=2, accel="tcg",
                                  vhost=True, socket_path="/run/urunc-sockets", data_path="/opt/urunc/share")
    assert cfg.monitor("hvt").memory_mb == 64
    assert cfg.virtiofsd == config.Virtiofsd("/opt/urunc/libexec/virtiofsd", "--cache always --sandbox none")
    assert cfg.urunc_path == urunc_file
    assert set(cfg.from_urunc) == {
        "monitors.qemu.default_vcpus", "monitors.qemu.path", "monitors.qemu.vhost", "monitors.qemu.socket_path",
        "monitors.qemu.data_path", "monitors.hvt.default_memory_mb", "extra_binaries.virtiofsd.path",
        "extra_binaries.virtiofsd.options"}
    assert cfg.urunc_unused == ("log", "timestamps")


def test_without_uruncs_file_nothing_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("URUNC_CONFIG_FILE", str(tmp_path / "absent.toml"))
    own = tmp_path / "ukrun.toml"
    own.write_text("")
    cfg = config.load(own)
    assert cfg.urunc_path is None and cfg.from_urunc == () and cfg.monitor("qemu") == config.Monitor()


def test_a_urunc_file_that_cannot_be_parsed_is_skipped_as_urunc_skips_it(tmp_path: Path, urunc_file: Path) -> None:
    urunc_file.write_text("[monitors.qemu\n")
    cfg = config.load(None)
    assert cfg.monitor("qemu") == config.Monitor() and cfg.from_urunc == ()
    assert cfg.urunc_error.startswith(f"{urunc_file} cannot be read (") and cfg.urunc_error.endswith("): skipped")


def test_a_bad_value_from_urunc_names_uruncs_file(tmp_path: Path, urunc_file: Path) -> None:
    urunc_file.write_text('[monitors.qemu]\nvhost = "yes"\n')
    with pytest.raises(ConfigError, match=f"^{urunc_file}: \\[monitors.qemu\\] vhost must be true or false$"):
        config.load(None)
    own = tmp_path / "ukrun.toml"
    own.write_text("[monitors.qemu]\nvhost = false\n")
    assert config.load(own).monitor("qemu").vhost is False  # ukrun's own setting wins; urunc's is not read


def test_uruncs_file_is_parsed_once_per_version_too(tmp_path: Path, urunc_file: Path) -> None:
    cache = tmp_path / "root"
    cache.mkdir()
    assert config.load(None, cache_dir=cache).monitor("hvt").memory_mb == 64
    assert (cache / config.URUNC_CACHE_NAME).exists()
    urunc_file.write_text("[monitors.hvt]\ndefault_memory_mb = 32\n")
    assert config.load(None, cache_dir=cache).monitor("hvt").memory_mb == 32


def test_the_new_monitor_keys_are_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("URUNC_CONFIG_FILE", str(tmp_path / "absent.toml"))
    own = tmp_path / "ukrun.toml"
    own.write_text('[monitors.qemu]\nsocket_path = "run/sockets"\n')
    with pytest.raises(ConfigError, match=r"\[monitors.qemu\] socket_path must be an absolute path"):
        config.load(own)
