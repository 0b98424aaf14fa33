from pathlib import Path

import pytest

from ukrun import config
from ukrun.errors import ConfigError
from ukrun.host import parse_mountinfo
from ukrun.tree import remove_tree


def test_config_file_env_and_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONTAINERD_ADDRESS", raising=False)
    monkeypatch.delenv("CONTAINERD_NAMESPACE", raising=False)
    f = tmp_path / "c.toml"
    f.write_text('[containerd]\naddress = "/x.sock"\n[artifacts]\nmode = "copy"\nstate_root = "/s"\n')
    c = config.load(f)
    assert (c.address, c.namespace, c.artifact_mode, c.state_root) == ("/x.sock", "default", "copy", Path("/s"))
    monkeypatch.setenv("CONTAINERD_ADDRESS", "/y.sock")
    assert config.load(f).address == "/y.sock"


def test_config_errors_name_the_problem(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('[artifacts]\nmode = "fast"\n')
    with pytest.raises(ConfigError, match="mode = 'fast' is not one of shared"):
        config.load(f)
    with pytest.raises(ConfigError, match="does not exist"):
        config.load(tmp_path / "missing.toml")


def test_a_shared_view_stays_idle_for_five_minutes_unless_the_operator_says_otherwise(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("[artifacts]\nidle = 0\n")
    assert (config.Config().view_idle, config.load(f).view_idle) == (300.0, 0.0)
    for bad in ("-1", "inf", "nan", '"soon"'):
        f.write_text(f"[artifacts]\nidle = {bad}\n")
        with pytest.raises(ConfigError, match=r"\[artifacts\] idle|idle must be a number"):
            config.load(f)


def test_virtiofsd_and_the_rootfs_share_use_uruncs_key_names(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('[runtime]\nrootfs_share = "virtiofs"\n[extra_binaries.virtiofsd]\npath = "/usr/libexec/virtiofsd"\n'
                 'options = "--cache auto"\n')
    c = config.load(f)
    assert (c.rootfs_share, c.virtiofsd) == ("virtiofs", config.Virtiofsd("/usr/libexec/virtiofsd", "--cache auto"))
    assert (config.Config().rootfs_share, config.Config().virtiofsd.path) == ("auto", "")
    f.write_text('[runtime]\nrootfs_share = "nfs"\n')
    with pytest.raises(ConfigError, match="rootfs_share = 'nfs' is not one of auto, 9p, virtiofs"):
        config.load(f)


def test_mountinfo_unescapes_paths() -> None:
    text = "36 35 7:0 / /tmp/a\\040b rw,relatime shared:1 - ext4 /dev/loop0 rw\n"
    (m,) = parse_mountinfo(text)
    assert (m.mount_point, m.fstype, m.source, m.device) == ("/tmp/a b", "ext4", "/dev/loop0", "7:0")


def test_the_parsed_config_is_cached_per_version_of_the_file(tmp_path: Path) -> None:
    f = tmp_path / "config.toml"
    f.write_text('[artifacts]\nmode = "copy"\n')
    root = tmp_path / "root"
    root.mkdir()
    assert config.load(f, cache_dir=root).artifact_mode == "copy"
    cache = root / config.CACHE_NAME
    planted = cache.read_text().replace('"copy"', '"per-container"')
    cache.write_text(planted)
    assert config.load(f, cache_dir=root).artifact_mode == "per-container"  # read back, not parsed again
    f.write_text('[artifacts]\nmode = "shared"\n')  # any edit parses the file again
    assert config.load(f, cache_dir=root).artifact_mode == "shared"
    cache.write_text("{not json")
    assert config.load(f, cache_dir=root).artifact_mode == "shared"  # a broken cache is only skipped
    assert config.load(f, cache_dir=tmp_path / "missing").artifact_mode == "shared"
    assert not (tmp_path / "missing").exists()


def test_a_monitor_is_found_on_path_as_shutil_finds_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from ukrun.hypervisors.base import which

    tool = tmp_path / "bin" / "qemu-x"
    tool.parent.mkdir()
    tool.write_text("#!/bin/sh\n")
    (tmp_path / "bin" / "plain").write_text("")  # not executable
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'none'}:{tool.parent}")
    for name in ("qemu-x", "plain", "absent", str(tool), str(tmp_path / "bin" / "plain")):
        assert which(name) == (shutil.which(name) or ""), name


def test_remove_tree_removes_a_folder_and_never_follows_a_link_out_of_it(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "keep").mkdir(parents=True)
    (outside / "keep" / "file").write_text("kept")
    tree = tmp_path / "tree"
    (tree / "a" / "b").mkdir(parents=True)
    (tree / "a" / "b" / "f").write_text("x")
    (tree / "top").write_text("y")
    (tree / "a" / "dir-link").symlink_to(outside / "keep")
    (tree / "file-link").symlink_to(outside / "keep" / "file")
    remove_tree(tree)
    assert not tree.exists() and (outside / "keep" / "file").read_text() == "kept"
    remove_tree(tree)  # gone already: nothing to do, no error
