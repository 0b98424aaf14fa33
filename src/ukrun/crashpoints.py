"""Named crash points: the process SIGKILLs itself at a named step, to prove that whatever a crash there
leaves is reclaimed by `delete`, `release` or `gc`.

- UKRUN_CRASH_AT=<name>: every process that reaches the point dies there.
- UKRUN_CRASH_ARM=<file>: the file names one point; the first process to reach it removes the file and
  dies. A daemon started with this set runs crash-free until a test writes the file, and the same daemon
  then cleans up with crash-free calls.

Names are `<phase>-<step>`; the tests find them in the source, so every point is exercised.
"""

import posix

CRASH_ENV = "UKRUN_CRASH_AT"
ARM_ENV = "UKRUN_CRASH_ARM"
SIGKILL = 9  # Linux's: `start` and `kill` pass points on every call, and signal imports enum


def _setting(name: str) -> str:
    """A variable of the environment, read from posix's (which os.environ updates): the hot verbs import posix,
    not os (see runtime.state)."""
    return posix.environ.get(name.encode(), b"").decode("utf-8", "surrogateescape")


def point(step: str) -> None:
    if _setting(CRASH_ENV) != step and not _armed(step):
        return
    posix.kill(posix.getpid(), SIGKILL)
    posix._exit(137)  # the init of a PID namespace ignores its own SIGKILL; it dies as if killed all the same


def _armed(step: str) -> bool:
    arm = _setting(ARM_ENV)
    if not arm:
        return False
    try:
        with open(arm) as f:
            if f.read().strip() != step:
                return False
        posix.unlink(arm)  # atomic: of two processes at the point, only one fires
    except FileNotFoundError:
        return False
    return True
