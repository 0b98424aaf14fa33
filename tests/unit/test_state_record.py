"""The container record (runtime.state): marshal's, read back field for field; an older ukrun's JSON record is
still read and is replaced at the next save; timing lines stay JSON whatever a container's name holds."""

import json
from pathlib import Path

from ukrun.runtime import state as st
from ukrun.timing import Timer


def test_a_record_reads_back_as_saved(tmp_path: Path) -> None:
    (tmp_path / "c1").mkdir()
    saved = st.ContainerState(id="c1", bundle="/b", pid=7, annotations={"a": "b"}, volumes=[["/dev/x", "/m"]],
                              exec_ports=2, paused=True)
    st.save(tmp_path, saved)
    assert st.load(tmp_path, "c1").to_dict() == saved.to_dict()
    assert st.is_ours(tmp_path, "c1")


def test_an_older_ukruns_json_record_is_read_then_superseded(tmp_path: Path) -> None:
    (tmp_path / "c1").mkdir()
    old = st.ContainerState(id="c1", bundle="/b", pid=9, tap="tapuk1")
    (tmp_path / "c1" / st.LEGACY_FILE).write_text(json.dumps(old.to_dict()))
    assert st.is_ours(tmp_path, "c1")
    record = st.load(tmp_path, "c1")
    assert record.to_dict() == old.to_dict()
    record.started = True
    st.save(tmp_path, record)
    assert not (tmp_path / "c1" / st.LEGACY_FILE).exists()
    assert st.load(tmp_path, "c1").started


def test_timing_lines_are_json_for_any_name(tmp_path: Path) -> None:
    log = tmp_path / "t.jsonl"
    for name in ("plain-1", 'quo"te\\back', "tab\there", "ünï"):
        t = Timer(str(log), name, "start")
        t.mark("phase")
        t.flush()
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [line["container"] for line in lines] == ["plain-1", 'quo"te\\back', "tab\there", "ünï"]
    assert all(line["verb"] == "start" and line["phase"] == "phase" and line["ns"] > 0 for line in lines)
