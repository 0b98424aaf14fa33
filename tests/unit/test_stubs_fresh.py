"""The committed gRPC stubs must be what scripts/gen-proto makes from the committed .proto files."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STUBS = REPO / "src" / "ukrun" / "containerd" / "proto"


def test_stubs_are_fresh(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(REPO / "scripts" / "gen-proto"), "--out", str(tmp_path)], check=True,
                   capture_output=True)
    fresh = {p.name: p.read_text() for p in (tmp_path / "ukrun" / "containerd" / "proto").glob("*_pb2*.py")}
    committed = {p.name: p.read_text() for p in STUBS.glob("*_pb2*.py")}
    assert sorted(fresh) == sorted(committed), "stub files differ: run scripts/gen-proto"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"stale stubs {stale}: run scripts/gen-proto and commit the result"


def test_services_carry_containerd_names() -> None:
    # The wire path of every call is /<proto package>.<Service>/<Method>; a wrong package breaks all calls.
    from ukrun.containerd.proto import leases_pb2, snapshots_pb2

    snapshots = snapshots_pb2.DESCRIPTOR.services_by_name["Snapshots"]
    assert snapshots.full_name == "containerd.services.snapshots.v1.Snapshots"
    assert leases_pb2.DESCRIPTOR.services_by_name["Leases"].full_name == "containerd.services.leases.v1.Leases"
