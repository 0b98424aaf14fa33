import json
from pathlib import Path

import pytest

from ukrun import logs


def test_the_shim_reads_errors_from_json_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "log.json"
    logs.setup(str(path), "json", debug=False)
    logs.log.debug("not written")
    logs.log.info("container %s: %d", "c1", 3)
    logs.log.error("cannot %s", "boot")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["level"], r["msg"]) for r in rows] == [("info", "container c1: 3"), ("error", "cannot boot")]
    assert rows[0]["time"].endswith("Z")
    assert capsys.readouterr().err == "ukrun: cannot boot\n"  # stderr: warnings and errors only


def test_text_lines_and_tracebacks_stay_one_write_each(tmp_path: Path) -> None:
    path = tmp_path / "log.txt"
    logs.setup(str(path), "text", debug=True)
    logs.log.debug("%s%%", "50")
    try:
        raise ValueError("bad")
    except ValueError:
        logs.log.exception("internal error")
    text = path.read_text()
    assert " DEBUG 50%\n" in text
    assert " ERROR internal error\nTraceback" in text and "ValueError: bad" in text


@pytest.fixture(autouse=True)
def _no_log_file_after() -> object:
    yield
    logs.setup(None, "text", debug=False)
