"""The init's light mount listing (ukrun.mounttable) agrees with ukrun.host's records, name for name, escapes
included, and loads neither pathlib nor typing."""

import subprocess
import sys

from ukrun import host, mounttable


def test_the_light_listing_names_what_the_full_records_name() -> None:
    assert mounttable.mount_points() == [m.mount_point for m in host.mountinfo()]


def test_escaped_names_come_back_whole() -> None:
    assert mounttable.unescape("/a\\040b\\011c\\012d\\134e") == "/a b\tc\nd\\e"
    assert mounttable.unescape("/plain") == "/plain"


def test_listing_loads_no_pathlib_or_typing() -> None:
    out = subprocess.run([sys.executable, "-c", "from ukrun import mounttable; mounttable.mount_points()\n"
                          "import sys; print(' '.join(sys.modules))"], capture_output=True, text=True, check=True)
    loaded = set(out.stdout.split())
    assert not loaded & {"pathlib", "typing", "ukrun.host"}, loaded & {"pathlib", "typing", "ukrun.host"}
