"""The container record (runtime.state) and the launch configuration (launchconfig): marshal's, read back field
for field; an older ukrun's JSON files are still read (the record replaced at the next save, a launch
configuration updated as JSON, for the older init that reads it); timing lines stay JSON whatever a
container's name holds."""

import json
from pathlib import Path

from ukrun.launchconfig import FIELDS, FILE, LEGACY_FILE, LaunchConfig, Namespace
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


def test_timings_go_to_a_log_whose_folder_is_missing(tmp_path: Path) -> None:
    log = tmp_path / "not" / "yet" / "t.jsonl"
    t = Timer(str(log), "c1", "create")
    t.mark("start")
    t.flush()
    assert json.loads(log.read_text())["phase"] == "start"


def test_a_launch_configuration_reads_back_as_written(tmp_path: Path) -> None:
    conf = LaunchConfig(id="c1", monitor=("/usr/bin/qemu", "-m", "64"), env={"PATH": "/bin"}, cgroups=("/cg/a",),
                        namespaces=(Namespace("mount"), Namespace("network", "/run/netns/p")), hostname="h",
                        terminal=True, exit_decoding="unikraft", late_network=True)
    conf.write(tmp_path)
    back = LaunchConfig.read(tmp_path)
    assert [getattr(back, f) for f in FIELDS if f != "namespaces"] == [getattr(conf, f) for f in FIELDS
                                                                        if f != "namespaces"]
    assert [(n.type, n.path) for n in back.namespaces] == [("mount", ""), ("network", "/run/netns/p")]
    LaunchConfig.update_monitor(tmp_path, ("/usr/bin/qemu", "-m", "128"))
    assert LaunchConfig.read(tmp_path).monitor == ("/usr/bin/qemu", "-m", "128")


def test_an_older_ukruns_launch_json_is_read_and_updated_as_json(tmp_path: Path) -> None:
    """Its init (the older code) reads launch.json again at `start`: a late network must reach it there."""
    old = {"id": "c1", "monitor": ["/usr/bin/qemu"], "env": {}, "cgroups": [], "namespaces": [{"type": "pid",
           "path": ""}], "hostname": "", "terminal": False, "exit_decoding": "raw", "timing_log": "", "views": "",
           "keep_mounts": [], "virtiofsd": [], "virtiofsd_socket": "", "virtiofsd_log": "", "late_network": True}
    (tmp_path / LEGACY_FILE).write_text(json.dumps(old))
    assert LaunchConfig.read(tmp_path).monitor == ("/usr/bin/qemu",)
    LaunchConfig.update_monitor(tmp_path, ("/usr/bin/qemu", "-netdev", "tap"))
    assert json.loads((tmp_path / LEGACY_FILE).read_text())["monitor"] == ["/usr/bin/qemu", "-netdev", "tap"]
    assert not (tmp_path / FILE).exists()
