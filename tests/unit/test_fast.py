import pytest

from ukrun.fast import parse


def test_the_shims_calls_take_the_fast_path() -> None:
    argv = ["--root", "/run/containerd/runc/k8s.io", "--log", "/b/log.json", "--log-format", "json", "state", "c1"]
    assert parse(argv) == ({"--root": "/run/containerd/runc/k8s.io", "--log": "/b/log.json", "--log-format": "json"},
                           "state", ["c1"])
    opts, verb, rest = parse(["--root=/r", "--debug", "kill", "--all", "c1", "9"])  # type: ignore[misc]
    assert (opts["--root"], verb, rest) == ("/r", "kill", ["--all", "c1", "9"])


@pytest.mark.parametrize(
    "argv",
    [
        ["create", "--bundle", "/b", "c1"],  # not a hot verb
        ["--criu", "/x", "state", "c1"],  # a flag the fast path does not know
        ["--root"],  # a flag without its value
        ["--debug=1", "state", "c1"],  # a switch with a value
        [],
    ],
)
def test_anything_else_goes_to_the_full_cli(argv: list[str]) -> None:
    assert parse(argv) is None
