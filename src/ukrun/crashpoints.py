"""Named crash points: a test sets UKRUN_CRASH_AT=<name> and the process SIGKILLs itself at that step,
to prove that whatever a crash there leaves is reclaimed by `delete`, `release` or `gc`."""

from __future__ import annotations

import os
import signal

CRASH_ENV = "UKRUN_CRASH_AT"


def point(step: str) -> None:
    if os.environ.get(CRASH_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)
