"""Which containers the shim's ukrun deletes with the standard library's basics (runtime.hot.bare): only one that
holds nothing but its processes, cgroups and state folder; anything else it may hold sends it to the full delete."""

import pytest

from ukrun.runtime import hot
from ukrun.runtime import state as st


def _record(**held: object) -> st.ContainerState:
    fields: dict[str, object] = {"id": "c1", "bundle": "/b", "acquired": False, **held}
    return st.ContainerState(**fields)  # type: ignore[arg-type]


def test_a_container_read_in_place_with_nothing_else_is_bare() -> None:
    assert hot.bare(_record(cgroups=["/sys/fs/cgroup/t/c1"], pid=12, pid_start="34", started=True))


@pytest.mark.parametrize("held", [{"acquired": True}, {"tap": "uk1234"}, {"nat": "ukrun-c1"},
                                  {"volumes": [["/dev/vdb", "/mnt/v"]]}, {"control_socket": "/run/q/qmp.sock"},
                                  {"paused": True}], ids=lambda held: next(iter(held)))
def test_anything_more_is_deleted_by_the_full_delete(held: dict[str, object]) -> None:
    assert not hot.bare(_record(**held))


def test_a_record_that_does_not_say_what_create_acquired_is_not_bare() -> None:
    """An older ukrun's record, or one a create saved before it chose where to read the artifacts."""
    fields = _record().to_dict()
    del fields["acquired"]
    assert not hot.bare(st.ContainerState(**fields))  # type: ignore[arg-type]
