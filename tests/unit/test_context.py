from pathlib import Path

import pytest

from ukrun.config import Config
from ukrun.runtime.verbs import Context


def ctx(**kw: str) -> Context:
    return Context(root=Path("/run/containerd/runc/k8s.io"), config=Config(namespace="cfg"), argv=[], **kw)  # type: ignore[arg-type]


def test_namespace_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = Path("/var/run/containerd/io.containerd.runtime.v2.task/moby/c1")
    monkeypatch.setenv("NAMESPACE", "from-shim")
    assert ctx(namespace="flag").containerd_namespace(bundle) == "flag"
    assert ctx().containerd_namespace(bundle) == "from-shim"
    monkeypatch.delenv("NAMESPACE")
    assert ctx().containerd_namespace(bundle) == "moby"  # containerd's bundle layout
    assert ctx().containerd_namespace(Path("/somewhere/else/c1")) == "k8s.io"  # --root's last component
    assert ctx().containerd_namespace() == "k8s.io"


def test_the_shims_address_wins_over_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRPC_ADDRESS", "/run/k3s/containerd/containerd.sock")
    assert ctx().containerd_address() == "/run/k3s/containerd/containerd.sock"
    assert ctx(address="/flag.sock").containerd_address() == "/flag.sock"
