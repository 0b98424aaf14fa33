import subprocess
import sys
from pathlib import Path

import pytest

from ukrun.fast import gone, parse, parse_create, parse_delete

UKRUN = str(Path(sys.executable).parent / "ukrun")


def test_the_shims_calls_take_the_fast_path() -> None:
    argv = ["--root", "/run/containerd/runc/k8s.io", "--log", "/b/log.json", "--log-format", "json", "state", "c1"]
    parsed = parse(argv)
    assert parsed is not None
    g, verb, rest = parsed
    assert (g.root, g.log, g.log_format, g.debug, g.systemd_cgroup) == (
        "/run/containerd/runc/k8s.io", "/b/log.json", "json", False, False)
    assert (verb, rest) == ("state", ["c1"])
    parsed = parse(["--root=/r", "--debug", "--systemd-cgroup", "kill", "--all", "c1", "9"])
    assert parsed is not None
    g, verb, rest = parsed
    assert (g.root, g.debug, g.systemd_cgroup, verb, rest) == ("/r", True, True, "kill", ["--all", "c1", "9"])


def test_the_shims_create_takes_the_fast_path_with_its_flags() -> None:
    parsed = parse(["--root", "/r", "--log", "/l", "--log-format", "json", "--systemd-cgroup", "create",
                    "--bundle", "/b", "--pid-file=/b/init.pid", "--console-socket", "/s", "--no-pivot", "c1"])
    assert parsed is not None
    g, verb, rest = parsed
    args = parse_create(rest)
    assert args is not None
    assert (g.systemd_cgroup, verb, args.bundle, args.pid_file, args.console_socket, args.id) == (
        True, "create", "/b", "/b/init.pid", "/s", "c1")
    short = parse_create(["-b", "/b", "c2"])
    assert short is not None and (short.bundle, short.pid_file, short.id) == ("/b", "", "c2")


@pytest.mark.parametrize(
    "argv",
    [
        ["gc", "--dry-run"],  # an operator's verb
        ["--address", "/x", "state", "c1"],  # a flag the fast path does not know
        ["--root"],  # a flag without its value
        ["--debug=1", "state", "c1"],  # a switch with a value
        ["--config", "/c", "create", "c1"],  # a global flag only the full CLI knows
        [],
    ],
)
def test_anything_else_goes_to_the_full_cli(argv: list[str]) -> None:
    assert parse(argv) is None


@pytest.mark.parametrize(
    "rest",
    [
        ["--bundle", "/b"],  # no ID
        ["--bundle", "/b", "c1", "extra"],
        ["--detach", "c1"],  # a create flag the fast path does not know
        ["--no-pivot=1", "c1"],
        ["--pid-file"],
    ],
)
def test_an_unusual_create_goes_to_the_full_cli(rest: list[str]) -> None:
    assert parse_create(rest) is None


def test_the_shims_delete_takes_the_fast_path() -> None:
    parsed = parse(["--root", "/r", "delete", "--force", "c1"])
    assert parsed is not None and parsed[1] == "delete"
    assert parse_delete(parsed[2]) == (True, "c1")
    assert parse_delete(["c2"]) == (False, "c2")
    assert parse_delete(["-f", "c3"]) == (True, "c3")
    for unusual in (["--force"], ["c1", "c2"], ["--force=1", "c1"], ["--all", "c1"]):
        assert parse_delete(unusual) is None, unusual


def _ukrun(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """ukrun as the shim runs it, with no runc anywhere: what reaches runc fails."""
    config = tmp_path / "ukrun.toml"
    config.write_text('[runtime]\nrunc = "/nonexistent/runc"\n')
    return subprocess.run([UKRUN, "--root", str(tmp_path / "root"), *argv], capture_output=True, text=True,
                          env={"PATH": "/nonexistent", "UKRUN_CONFIG": str(config)}, timeout=60)


def test_a_forced_delete_of_a_container_nobody_has_succeeds_without_runc(tmp_path: Path) -> None:
    # The shim's clean-up after every delete: neither ukrun nor runc has the container any more.
    proc = _ukrun(tmp_path, "delete", "--force", "gone1")
    assert proc.returncode == 0, proc.stderr
    assert gone(str(tmp_path / "root"), "gone1")


def test_a_delete_of_a_container_that_may_be_runcs_still_goes_to_runc(tmp_path: Path) -> None:
    (tmp_path / "root" / "r1").mkdir(parents=True)  # runc's state folder, in the shared root
    for argv in (("delete", "--force", "r1"), ("delete", "gone2")):  # runc's, and an unforced delete
        proc = _ukrun(tmp_path, *argv)
        assert proc.returncode != 0 and "/nonexistent/runc" in proc.stderr, (argv, proc.stderr)
    assert not gone(str(tmp_path / "root"), "..") and not gone(str(tmp_path / "root"), "a/b")
