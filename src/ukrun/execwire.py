"""The exec wire: frames between an exec's host process (runtime.execrelay) and ukrun's exec agent inside a
Linux guest (guest/exec-agent.c), over one virtio-serial port per session.

A frame is a type byte, a big-endian 32-bit payload length, then the payload. The host sends START
(the process), STDIN data, STDIN_EOF, SIGNAL (32-bit number) and WINDOW (rows, columns: 16 bits each);
the guest answers STARTED (the START's nonce, its 32-bit PID) or FAILED (the nonce, why), then STDOUT and
STDERR data and EXIT (a kind byte, 0 exited or 1 killed by a signal, then a 32-bit value).

The guest is untrusted: everything it sends is checked here before anything acts on it (a frame type
it may send, a length within bounds, an exit code or signal number that exists), its text is cut and
stripped of control characters before it reaches a log, and frames that precede the STARTED or FAILED
carrying this session's nonce (left over from an earlier session on the port) are dropped. Standard
library only, no typing at run time: every exec imports it.
"""

from __future__ import annotations

import os

HEADER = 5
MAX_DATA = 32768  # a data frame, either way (virtio-serial moves at most 32 KiB per write)
MAX_START = 1 << 20
MAX_MESSAGE = 1024
MAX_GROUPS = 64
MAGIC = b"UKX1"
NO_UMASK = 0xFFFFFFFF

# host -> guest
START, STDIN, STDIN_EOF, SIGNAL, WINDOW = b"S", b"I", b"E", b"K", b"W"
# guest -> host
STARTED, FAILED, STDOUT, STDERR, EXIT = ord("P"), ord("F"), ord("O"), ord("R"), ord("X")


class ProtocolError(Exception):
    """The guest sent something that is not ukrun's exec wire."""


class Process:
    """What an exec runs in the guest: the OCI process's fields that reach it."""

    __slots__ = ("args", "cols", "cwd", "env", "gid", "groups", "rows", "terminal", "uid", "umask")

    def __init__(self, args: list[str], env: list[str], cwd: str, uid: int = 0, gid: int = 0,
                 groups: tuple[int, ...] = (), umask: int = NO_UMASK, terminal: bool = False,
                 rows: int = 0, cols: int = 0) -> None:
        self.args, self.env, self.cwd, self.uid, self.gid = args, env, cwd, uid, gid
        self.groups, self.umask, self.terminal, self.rows, self.cols = groups, umask, terminal, rows, cols


def frame(kind: bytes, payload: bytes = b"") -> bytes:
    return kind + len(payload).to_bytes(4, "big") + payload


def _u32(value: int) -> bytes:
    return value.to_bytes(4, "big")


def start(nonce: bytes, p: Process) -> bytes:
    """The START frame. Strings are NUL-terminated, so none may hold a NUL (execrelay refuses them)."""
    fixed = (MAGIC + nonce + _u32(p.uid) + _u32(p.gid) + _u32(p.umask) + _u32(1 if p.terminal else 0)
             + p.rows.to_bytes(2, "big") + p.cols.to_bytes(2, "big")
             + _u32(len(p.groups)) + _u32(len(p.args)) + _u32(len(p.env)))
    strings = b"".join(s.encode() + b"\0" for s in (p.cwd, *p.args, *p.env))
    payload = fixed + b"".join(_u32(g) for g in p.groups) + strings
    if len(payload) > MAX_START:
        raise ValueError(f"the process's arguments and environment take {len(payload)} bytes, over {MAX_START}")
    return frame(START, payload)


def signal_frame(sig: int) -> bytes:
    return frame(SIGNAL, _u32(sig))


def window(rows: int, cols: int) -> bytes:
    return frame(WINDOW, (rows & 0xFFFF).to_bytes(2, "big") + (cols & 0xFFFF).to_bytes(2, "big"))


def nonce() -> bytes:
    return os.urandom(8)


def text(payload: bytes) -> str:
    """The guest's words, fit for one log line: decoded, control characters replaced, cut."""
    words = payload[:MAX_MESSAGE].decode("utf-8", "replace")
    return "".join(c if c.isprintable() else "?" for c in words).strip()


class Reader:
    """Frames from the guest, checked. `feed` returns (type, payload) pairs of this session only: until
    the STARTED or FAILED that carries `nonce`, anything else is an earlier session's and is dropped."""

    def __init__(self, nonce: bytes) -> None:
        self.nonce = nonce
        self.buf = b""
        self.answered = False

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self.buf += data
        out = []
        while len(self.buf) >= HEADER:
            kind, length = self.buf[0], int.from_bytes(self.buf[1:HEADER], "big")
            _check(kind, length)
            if len(self.buf) < HEADER + length:
                break
            payload, self.buf = self.buf[HEADER:HEADER + length], self.buf[HEADER + length:]
            if kind in (STARTED, FAILED) and payload[:8] == self.nonce:
                if self.answered:
                    raise ProtocolError("the guest answered the same exec twice")
                self.answered = True
            elif not self.answered or kind in (STARTED, FAILED):
                continue  # an earlier session's, or an answer to an earlier START
            out.append((kind, payload))
        return out


def _check(kind: int, length: int) -> None:
    if kind in (STDOUT, STDERR):
        ok = length <= MAX_DATA
    elif kind == STARTED:
        ok = length == 12
    elif kind == FAILED:
        ok = 8 <= length <= 8 + MAX_MESSAGE
    elif kind == EXIT:
        ok = length == 5
    else:
        raise ProtocolError(f"the guest sent an unknown exec frame type {kind}")
    if not ok:
        raise ProtocolError(f"the guest sent a {chr(kind)} frame of {length} bytes")


def started_pid(payload: bytes) -> int:
    return int.from_bytes(payload[8:12], "big")


def exit_status(payload: bytes) -> tuple[bool, int]:
    """(killed by a signal, the signal or the exit code), as the guest reported them."""
    signaled, value = payload[0], int.from_bytes(payload[1:5], "big")
    if signaled not in (0, 1) or (signaled and not 1 <= value <= 64) or (not signaled and value > 255):
        raise ProtocolError(f"the guest reported an impossible exit ({signaled}, {value})")
    return bool(signaled), value
