"""gRPC over one HTTP/2 connection on a unix socket (RFC 9113 and gRPC's HTTP/2 mapping), blocking.

Why: grpcio's import, channel and threads cost ~100 ms per `ukrun` process, and ukrun makes a handful of
unary calls (and two server-streaming ones) to one local containerd, one at a time.

What must stay true:
- One stream at a time, no threads, no asyncio: `call` sends a request and yields response messages;
  frames of any other (abandoned) stream are read and dropped, their header blocks still HPACK-decoded.
- Every failure is an `RpcError` with a gRPC status: the socket cannot be reached or closes (UNAVAILABLE),
  the deadline passes (DEADLINE_EXCEEDED), the peer sends a gRPC status, or RST_STREAM, or GOAWAY.
  After a transport failure or a deadline the connection is closed; the next call opens a new one.
- Received data is given back to the peer's flow control as it is read, so multi-MiB streams flow.
- No message over MAX_MESSAGE is sent or accepted.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator
from enum import IntEnum

from ukrun.containerd import hpack
from ukrun.containerd.status import RST_TO_STATUS, RpcError, Status, raise_for_status

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
MAX_MESSAGE = 16 * 1024 * 1024
WINDOW = 32 * 1024 * 1024  # what we let the peer send before we give it back (stream and connection)
DEFAULT_WINDOW = 65535
DEFAULT_FRAME = 16384
MAX_FRAME_ACCEPTED = 1 << 24
READ_CHUNK = 256 * 1024


class Frame(IntEnum):
    DATA = 0
    HEADERS = 1
    PRIORITY = 2
    RST_STREAM = 3
    SETTINGS = 4
    PUSH_PROMISE = 5
    PING = 6
    GOAWAY = 7
    WINDOW_UPDATE = 8
    CONTINUATION = 9


class Flag(IntEnum):
    END_STREAM = 0x1
    ACK = 0x1
    END_HEADERS = 0x4
    PADDED = 0x8
    PRIORITY = 0x20


class Setting(IntEnum):
    HEADER_TABLE_SIZE = 1
    ENABLE_PUSH = 2
    MAX_CONCURRENT_STREAMS = 3
    INITIAL_WINDOW_SIZE = 4
    MAX_FRAME_SIZE = 5
    MAX_HEADER_LIST_SIZE = 6


class _Deadline(Exception):
    """The call's deadline passed: the connection may hold half a frame and is closed."""


class _Stream:
    def __init__(self, stream_id: int) -> None:
        self.id = stream_id
        self.headers: list[tuple[str, str]] | None = None
        self.trailers: list[tuple[str, str]] | None = None
        self.buffer = bytearray()
        self.ended = False
        self.reset: int | None = None
        self.unacked = 0
        self.sock: socket.socket | None = None  # the connection it was opened on


class Connection:
    """One HTTP/2 connection to a unix socket, opened at the first call."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._sock: socket.socket | None = None
        self._rbuf = bytearray()
        self._write_failed = False
        self._next_id = 1
        self._decoder = hpack.Decoder()
        self._send_frame_max = DEFAULT_FRAME
        self._send_window = DEFAULT_WINDOW  # connection-level, for our request DATA
        self._stream_window_initial = DEFAULT_WINDOW
        self._stream_send_window = DEFAULT_WINDOW
        self._conn_unacked = 0
        self._goaway_last: int | None = None
        self._deadline = 0.0
        self._stream: _Stream | None = None
        self._block = bytearray()  # a header block waiting for CONTINUATION
        self._in_block = False
        self._block_stream = 0
        self._block_end_stream = False

    # -- socket -----------------------------------------------------------------------------------
    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _open(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self._remaining())
            sock.connect(self.path)
            settings = struct.pack(">HIHIHI", Setting.ENABLE_PUSH, 0, Setting.INITIAL_WINDOW_SIZE, WINDOW,
                                   Setting.MAX_HEADER_LIST_SIZE, 1 << 20)
            sock.sendall(PREFACE + _frame(Frame.SETTINGS, 0, 0, settings)
                         + _frame(Frame.WINDOW_UPDATE, 0, 0, struct.pack(">I", WINDOW - DEFAULT_WINDOW)))
        except (_Deadline, TimeoutError):
            sock.close()
            raise _Deadline() from None
        except OSError as exc:
            sock.close()
            raise RpcError(Status.UNAVAILABLE, f"cannot connect to {self.path}: {exc.strerror or exc}",
                           broken=True) from None
        self._sock = sock
        self._rbuf = bytearray()
        self._write_failed = False
        self._next_id = 1
        self._decoder = hpack.Decoder()
        self._block.clear()
        self._in_block = False
        self._send_frame_max, self._send_window = DEFAULT_FRAME, DEFAULT_WINDOW
        self._stream_window_initial, self._conn_unacked, self._goaway_last = DEFAULT_WINDOW, 0, None
        return sock

    def _remaining(self) -> float:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise _Deadline()
        return left

    def _send(self, data: bytes) -> None:
        assert self._sock is not None
        self._sock.settimeout(self._remaining())
        self._sock.sendall(data)

    def _send_control(self, data: bytes) -> None:
        """An answer the peer may no longer read (it can close right after its last frame): a failed
        write leaves what is already received readable, and closes the connection after this call."""
        if self._write_failed:
            return
        try:
            self._send(data)
        except (BrokenPipeError, ConnectionResetError):
            self._write_failed = True

    def _recv_exact(self, size: int) -> bytes:
        assert self._sock is not None
        while len(self._rbuf) < size:
            self._sock.settimeout(self._remaining())
            chunk = self._sock.recv(max(READ_CHUNK, size - len(self._rbuf)))
            if not chunk:
                raise RpcError(Status.UNAVAILABLE, "the peer closed the connection", broken=True)
            self._rbuf += chunk
        data = bytes(self._rbuf[:size])
        del self._rbuf[:size]
        return data

    # -- calls ------------------------------------------------------------------------------------
    def call(self, path: str, metadata: list[tuple[str, str]], request: bytes, timeout: float) -> Iterator[bytes]:
        """Sends one request message; yields each response message; raises RpcError unless status is OK."""
        self._deadline = time.monotonic() + timeout
        stream = _Stream(0)
        try:
            yield from self._call(stream, path, metadata, request, timeout)
        except (_Deadline, TimeoutError):
            self.close()
            raise RpcError(Status.DEADLINE_EXCEEDED, "deadline exceeded") from None
        except (OSError, hpack.HpackError, ProtocolError) as exc:
            self.close()
            raise RpcError(Status.UNAVAILABLE, f"connection to {self.path} failed: {exc}") from None
        except RpcError as exc:
            if exc.broken:
                self.close()
            raise
        except GeneratorExit:  # the caller stopped reading: cancel the stream, keep the connection
            if stream.id and not stream.ended and self._sock is not None and self._sock is stream.sock:
                try:
                    self._send(_frame(Frame.RST_STREAM, 0, stream.id, struct.pack(">I", 0x8)))
                except (OSError, _Deadline):
                    self.close()
            raise
        finally:
            if self._stream is stream:
                self._stream = None
            if self._write_failed:
                self.close()

    def _call(self, stream: _Stream, path: str, metadata: list[tuple[str, str]], request: bytes,
              timeout: float) -> Iterator[bytes]:
        if len(request) > MAX_MESSAGE:
            raise RpcError(Status.RESOURCE_EXHAUSTED, f"request of {len(request)} bytes over {MAX_MESSAGE}")
        if self._sock is None or self._goaway_last is not None or self._next_id > 0x7FFFFFF0:
            self.close()
            self._open()
        stream.id, stream.sock = self._next_id, self._sock
        self._next_id += 2
        self._stream = stream
        self._stream_send_window = self._stream_window_initial
        headers = [(":method", "POST"), (":scheme", "http"), (":path", path), (":authority", "localhost"),
                   ("content-type", "application/grpc"), ("te", "trailers"),
                   ("grpc-timeout", _grpc_timeout(timeout)), *metadata]
        self._send_headers(stream.id, hpack.encode(headers))
        self._send_data(stream.id, struct.pack(">BI", 0, len(request)) + request)
        while True:
            while len(stream.buffer) < 5 and not stream.ended:
                self._read_frame()
            self._check_reset(stream)
            if len(stream.buffer) >= 5:
                compressed, size = struct.unpack_from(">BI", stream.buffer)
                if size > MAX_MESSAGE:
                    raise RpcError(Status.RESOURCE_EXHAUSTED, f"received message larger than max "
                                   f"({size} vs. {MAX_MESSAGE})")
                if compressed:
                    raise RpcError(Status.INTERNAL, "compressed message without negotiated compression")
                while len(stream.buffer) < 5 + size and not stream.ended:
                    self._read_frame()
                self._check_reset(stream)
                if len(stream.buffer) >= 5 + size:
                    message = bytes(stream.buffer[5:5 + size])
                    del stream.buffer[:5 + size]
                    yield message
                    continue
            if stream.ended:
                break
        if stream.buffer:
            raise RpcError(Status.INTERNAL, f"stream ended inside a message ({len(stream.buffer)} bytes left)")
        raise_for_status(stream.headers or [], stream.trailers or [])

    def _check_reset(self, stream: _Stream) -> None:
        if stream.reset is not None:
            code = RST_TO_STATUS.get(stream.reset, Status.INTERNAL)
            raise RpcError(code, f"stream reset by the peer with HTTP/2 error {stream.reset:#x}")

    def _send_headers(self, stream_id: int, block: bytes) -> None:
        first, rest = block[:self._send_frame_max], block[self._send_frame_max:]
        frames = [_frame(Frame.HEADERS, 0 if rest else Flag.END_HEADERS, stream_id, first)]
        while rest:
            chunk, rest = rest[:self._send_frame_max], rest[self._send_frame_max:]
            frames.append(_frame(Frame.CONTINUATION, 0 if rest else Flag.END_HEADERS, stream_id, chunk))
        self._send(b"".join(frames))

    def _send_data(self, stream_id: int, body: bytes) -> None:
        while True:
            room = min(self._send_window, self._stream_send_window, self._send_frame_max)
            if room <= 0 and body:
                self._read_frame()  # wait for WINDOW_UPDATE
                if self._stream is not None:
                    self._check_reset(self._stream)
                continue
            chunk, body = body[:room], body[room:]
            self._send_window -= len(chunk)
            self._stream_send_window -= len(chunk)
            self._send(_frame(Frame.DATA, 0 if body else Flag.END_STREAM, stream_id, chunk))
            if not body:
                return

    # -- reading ----------------------------------------------------------------------------------
    def _read_frame(self) -> None:
        head = self._recv_exact(9)
        length = int.from_bytes(head[:3], "big")
        ftype, flags = head[3], head[4]
        stream_id = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
        if length > MAX_FRAME_ACCEPTED:
            raise ProtocolError(f"frame of {length} bytes: is this HTTP/2?")
        payload = self._recv_exact(length) if length else b""
        if self._in_block and ftype != Frame.CONTINUATION:
            raise ProtocolError("header block interrupted before END_HEADERS")
        stream = self._stream if self._stream is not None and self._stream.id == stream_id else None
        if ftype == Frame.DATA:
            self._on_data(stream, flags, payload)
        elif ftype in (Frame.HEADERS, Frame.CONTINUATION):
            self._on_headers(ftype, stream_id, flags, payload)
        elif ftype == Frame.RST_STREAM:
            if stream is not None and not stream.ended and len(payload) == 4:  # NO_ERROR after the end is fine
                stream.reset = int.from_bytes(payload, "big")
                stream.ended = True
        elif ftype == Frame.SETTINGS:
            if not flags & Flag.ACK:
                self._on_settings(payload)
        elif ftype == Frame.PING:
            if not flags & Flag.ACK:
                self._send_control(_frame(Frame.PING, Flag.ACK, 0, payload))
        elif ftype == Frame.GOAWAY:
            self._on_goaway(payload)
        elif ftype == Frame.WINDOW_UPDATE:
            increment = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
            if stream_id == 0:
                self._send_window += increment
            elif stream is not None:
                self._stream_send_window += increment
        elif ftype == Frame.PUSH_PROMISE:
            raise ProtocolError("PUSH_PROMISE although push is disabled")
        # PRIORITY and unknown frame types are ignored (RFC 9113 4.1, 5.5)

    def _on_data(self, stream: _Stream | None, flags: int, payload: bytes) -> None:
        size = len(payload)
        body = _unpad(payload) if flags & Flag.PADDED else payload
        self._conn_unacked += size
        updates = b""
        if self._conn_unacked >= WINDOW // 2:
            updates += _frame(Frame.WINDOW_UPDATE, 0, 0, struct.pack(">I", self._conn_unacked))
            self._conn_unacked = 0
        if stream is not None and not stream.ended:
            stream.buffer += body
            stream.unacked += size
            if flags & Flag.END_STREAM:
                stream.ended = True
            elif stream.unacked >= WINDOW // 2:
                updates += _frame(Frame.WINDOW_UPDATE, 0, stream.id, struct.pack(">I", stream.unacked))
                stream.unacked = 0
        if updates:
            self._send_control(updates)

    def _on_headers(self, ftype: int, stream_id: int, flags: int, payload: bytes) -> None:
        if ftype == Frame.HEADERS:
            if self._in_block:
                raise ProtocolError("HEADERS inside a header block")
            if flags & Flag.PADDED:
                payload = _unpad(payload)
            if flags & Flag.PRIORITY:
                payload = payload[5:]
            self._block_stream, self._block_end_stream = stream_id, bool(flags & Flag.END_STREAM)
        elif not self._in_block or self._block_stream != stream_id:
            raise ProtocolError("CONTINUATION without HEADERS")
        self._block += payload
        self._in_block = not flags & Flag.END_HEADERS
        if self._in_block:
            return
        headers = self._decoder.decode(bytes(self._block))
        self._block.clear()
        stream = self._stream
        if stream is None or stream.id != self._block_stream:
            return
        if stream.headers is None and not self._block_end_stream:
            stream.headers = headers
        else:
            if stream.headers is None:  # Trailers-Only
                stream.headers = headers
            stream.trailers = headers
        if self._block_end_stream:
            stream.ended = True

    def _on_settings(self, payload: bytes) -> None:
        if len(payload) % 6:
            raise ProtocolError("SETTINGS of a length not a multiple of 6")
        for off in range(0, len(payload), 6):
            ident, value = struct.unpack_from(">HI", payload, off)
            if ident == Setting.MAX_FRAME_SIZE:
                self._send_frame_max = value
            elif ident == Setting.INITIAL_WINDOW_SIZE:
                self._stream_send_window += value - self._stream_window_initial
                self._stream_window_initial = value
        self._send_control(_frame(Frame.SETTINGS, Flag.ACK, 0, b""))

    def _on_goaway(self, payload: bytes) -> None:
        last = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
        code = int.from_bytes(payload[4:8], "big")
        self._goaway_last = last
        stream = self._stream
        if stream is not None and stream.id > last and not stream.ended:
            detail = payload[8:].decode(errors="replace")
            why = f"GOAWAY {code:#x}" + (f": {detail}" if detail else "")
            raise RpcError(Status.UNAVAILABLE, f"the peer is going away ({why})", broken=True)


class ProtocolError(Exception):
    """The peer broke HTTP/2: the connection is unusable."""


def _frame(ftype: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload))[1:] + struct.pack(">BBI", ftype, flags, stream_id) + payload


def _grpc_timeout(seconds: float) -> str:
    millis = max(1, int(seconds * 1000))
    return f"{millis}m" if millis < 10**8 else f"{min(int(seconds), 10**8 - 1)}S"  # at most 8 digits


def _unpad(payload: bytes) -> bytes:
    if not payload:
        raise ProtocolError("padded frame without a pad length")
    pad = payload[0]
    if pad >= len(payload):
        raise ProtocolError("padding longer than the frame")
    return payload[1:len(payload) - pad]
