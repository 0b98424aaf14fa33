"""The HTTP/2 transport against a scripted server: the frames a Go gRPC server may send, and broken ones."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import hpack as reference
import pytest

from ukrun.containerd import h2
from ukrun.containerd.status import RpcError, Status

Script = Callable[["Peer"], None]


class Peer:
    """The server's end: reads the client's frames, writes frames of its own."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self.encoder = reference.Encoder()
        self.decoder = reference.Decoder()
        self.buf = b""

    def read_frame(self) -> tuple[int, int, int, bytes]:
        while len(self.buf) < 9 or len(self.buf) < 9 + int.from_bytes(self.buf[:3], "big"):
            chunk = self.conn.recv(65536)
            if not chunk:
                raise EOFError
            self.buf += chunk
        size = int.from_bytes(self.buf[:3], "big")
        ftype, flags, sid = self.buf[3], self.buf[4], int.from_bytes(self.buf[5:9], "big")
        payload, self.buf = self.buf[9:9 + size], self.buf[9 + size:]
        return ftype, flags, sid, payload

    def request(self) -> tuple[int, dict[str, str], bytes]:
        """Skips the preface and control frames; returns one request's stream, headers and body."""
        while len(self.buf) < len(h2.PREFACE):
            self.buf += self.conn.recv(65536)
        if self.buf.startswith(h2.PREFACE):
            self.buf = self.buf[len(h2.PREFACE):]
        headers: dict[str, str] = {}
        body = b""
        while True:
            ftype, flags, sid, payload = self.read_frame()
            if ftype == h2.Frame.HEADERS:
                headers = {str(k): str(v) for k, v in self.decoder.decode(payload)}
            elif ftype == h2.Frame.DATA:
                body += payload
                if flags & h2.Flag.END_STREAM:
                    return sid, headers, body

    def send(self, ftype: int, flags: int, sid: int, payload: bytes) -> None:
        self.conn.sendall(struct.pack(">I", len(payload))[1:] + struct.pack(">BBI", ftype, flags, sid) + payload)

    def headers(self, sid: int, headers: list[tuple[str, str]], *, end: bool = False, split: int = 0) -> None:
        block = self.encoder.encode(headers, huffman=True)
        end_flag = h2.Flag.END_STREAM if end else 0
        if split:
            self.send(h2.Frame.HEADERS, end_flag, sid, block[:split])
            self.send(h2.Frame.CONTINUATION, h2.Flag.END_HEADERS, sid, block[split:])
        else:
            self.send(h2.Frame.HEADERS, end_flag | h2.Flag.END_HEADERS, sid, block)

    def message(self, sid: int, data: bytes, *, padded: bool = False) -> None:
        body = struct.pack(">BI", 0, len(data)) + data
        if padded:
            self.send(h2.Frame.DATA, h2.Flag.PADDED, sid, bytes([3]) + body + b"\0\0\0")
        else:
            self.send(h2.Frame.DATA, 0, sid, body)

    def ok(self, sid: int, *messages: bytes) -> None:
        self.headers(sid, [(":status", "200"), ("content-type", "application/grpc")])
        for m in messages:
            self.message(sid, m)
        self.headers(sid, [("grpc-status", "0")], end=True)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[[Script], h2.Connection]]:
    listeners: list[socket.socket] = []

    def start(script: Script) -> h2.Connection:
        path = str(tmp_path / f"s{len(listeners)}.sock")
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(path)
        listener.listen()
        listeners.append(listener)

        def run() -> None:
            conn, _ = listener.accept()
            with conn:
                peer = Peer(conn)
                peer.send(h2.Frame.SETTINGS, 0, 0, struct.pack(">HI", h2.Setting.MAX_FRAME_SIZE, 16384))
                with contextlib.suppress(EOFError, OSError):
                    script(peer)

        threading.Thread(target=run, daemon=True).start()
        return h2.Connection(path)

    yield start
    for listener in listeners:
        listener.close()


def call(conn: h2.Connection, timeout: float = 5) -> list[bytes]:
    return list(conn.call("/p.S/M", [("containerd-namespace", "n")], b"req", timeout))


def test_unary_with_ping_continuation_padding_and_huffman(serve: Callable[[Script], h2.Connection]) -> None:
    seen: dict[str, str] = {}

    def script(p: Peer) -> None:
        sid, headers, body = p.request()
        seen.update(headers)
        assert body == b"\0\0\0\0\x03req"
        p.send(h2.Frame.PING, 0, 0, b"12345678")
        p.headers(sid, [(":status", "200"), ("content-type", "application/grpc")], split=3)
        p.message(sid, b"answer", padded=True)
        p.headers(sid, [("grpc-status", "0")], end=True)
        ftype, flags, _, payload = p.read_frame()
        while ftype != h2.Frame.PING:
            ftype, flags, _, payload = p.read_frame()
        assert flags & h2.Flag.ACK and payload == b"12345678"
        sid, _, _ = p.request()  # a second call on the same connection
        p.ok(sid, b"again")

    conn = serve(script)
    assert call(conn) == [b"answer"]
    assert call(conn) == [b"again"]
    assert seen[":path"] == "/p.S/M" and seen["te"] == "trailers" and seen["containerd-namespace"] == "n"
    assert seen["grpc-timeout"].endswith("m") and seen["content-type"] == "application/grpc"


def test_trailers_only_and_percent_encoded_message(serve: Callable[[Script], h2.Connection]) -> None:
    def script(p: Peer) -> None:
        sid, _, _ = p.request()
        p.headers(sid, [(":status", "200"), ("content-type", "application/grpc"), ("grpc-status", "5"),
                        ("grpc-message", "lease %22x%22: not found")], end=True)

    with pytest.raises(RpcError) as exc:
        call(serve(script))
    assert exc.value.code is Status.NOT_FOUND and exc.value.details == 'lease "x": not found'


def test_server_stream_of_many_messages_over_the_window(serve: Callable[[Script], h2.Connection]) -> None:
    chunk = bytes(range(256)) * 4096  # 1 MiB per message, 40 MiB in all: over WINDOW, needs updates

    def script(p: Peer) -> None:
        sid, _, _ = p.request()
        p.headers(sid, [(":status", "200"), ("content-type", "application/grpc")])
        for _ in range(40):
            body = struct.pack(">BI", 0, len(chunk)) + chunk
            for off in range(0, len(body), 16384):
                p.send(h2.Frame.DATA, 0, sid, body[off:off + 16384])
        p.headers(sid, [("grpc-status", "0")], end=True)

    conn = serve(script)
    assert sum(len(m) for m in conn.call("/p.S/M", [], b"", 30)) == 40 * len(chunk)


@pytest.mark.parametrize(("script", "code"), [
    (lambda p: p.send(h2.Frame.RST_STREAM, 0, p.request()[0], struct.pack(">I", 0x7)), Status.UNAVAILABLE),
    (lambda p: (p.request(), p.send(h2.Frame.GOAWAY, 0, 0, struct.pack(">II", 0, 0) + b"bye")),
     Status.UNAVAILABLE),
    (lambda p: p.headers(p.request()[0], [(":status", "404")], end=True), Status.UNIMPLEMENTED),
    (lambda p: p.conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n"), Status.UNAVAILABLE),
    (lambda p: p.message(p.request()[0], b"x" * 10), Status.UNAVAILABLE),  # DATA before HEADERS, then EOF
])
def test_failures_carry_a_status(serve: Callable[[Script], h2.Connection], script: Script, code: Status) -> None:
    with pytest.raises(RpcError) as exc:
        call(serve(script))
    assert exc.value.code is code


def test_deadline(serve: Callable[[Script], h2.Connection]) -> None:
    done = threading.Event()

    def script(p: Peer) -> None:
        p.request()
        done.wait(5)

    with pytest.raises(RpcError) as exc:
        call(serve(script), timeout=0.3)
    done.set()
    assert exc.value.code is Status.DEADLINE_EXCEEDED


def test_oversized_message_is_refused(serve: Callable[[Script], h2.Connection]) -> None:
    def script(p: Peer) -> None:
        sid, _, _ = p.request()
        p.headers(sid, [(":status", "200"), ("content-type", "application/grpc")])
        p.send(h2.Frame.DATA, 0, sid, struct.pack(">BI", 0, h2.MAX_MESSAGE + 1))

    with pytest.raises(RpcError) as exc:
        call(serve(script))
    assert exc.value.code is Status.RESOURCE_EXHAUSTED
