"""Logging to the file the shim names with --log, in the format it reads back (--log-format json).

containerd's shim reports the last `"level":"error"` line's `msg` as the reason a verb failed, so an
error message written here is what `ctr` shows.
"""

from __future__ import annotations

import json
import logging
import time


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return json.dumps({"level": record.levelname.lower(),
                           "msg": record.getMessage(), "time": f"{stamp}.{int(record.msecs):03d}Z"})


def setup(path: str | None, fmt: str, debug: bool) -> None:
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    stderr = logging.StreamHandler()
    stderr.setLevel(logging.DEBUG if debug else logging.WARNING)
    stderr.setFormatter(logging.Formatter("ukrun: %(message)s"))
    root.addHandler(stderr)
    if path:
        handler = logging.FileHandler(path)
        text = logging.Formatter("%(asctime)s %(levelname)s %(message)s")
        handler.setFormatter(JsonFormatter() if fmt == "json" else text)
        root.addHandler(handler)
