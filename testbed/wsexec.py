"""The kubelet's side of a CRI `Exec` stream: the URL containerd's streaming server returns, opened as a
WebSocket with Kubernetes' v4.channel.k8s.io subprotocol (each message: a channel byte, 1 stdout, 2 stderr,
3 the exec's status as JSON, then data), as `kubectl exec` reaches it through the kubelet. Output only
(the tests' execs take no stdin), read until the server closes."""

from __future__ import annotations

import base64
import json
import os
import socket
from typing import Any
from urllib.parse import urlsplit

PROTOCOL = "v4.channel.k8s.io"


class Result:
    def __init__(self) -> None:
        self.stdout, self.stderr = b"", b""
        self.status: dict[str, Any] = {}

    @property
    def exit_code(self) -> int:
        """0 on success; the code a failed exec's status carries (its ExitCode cause)."""
        if self.status.get("status") == "Success":
            return 0
        causes = self.status.get("details", {}).get("causes", [])
        return next((int(c["message"]) for c in causes if c.get("reason") == "ExitCode"), -1)


def run(url: str, timeout: float = 120) -> Result:
    parts = urlsplit(url)
    key = base64.b64encode(os.urandom(16)).decode()
    with socket.create_connection((parts.hostname or "", parts.port or 80), timeout=timeout) as s:
        s.sendall((f"GET {parts.path}?{parts.query} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
                   f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                   f"Sec-WebSocket-Protocol: {PROTOCOL}\r\n\r\n").encode())
        stream = s.makefile("rb")
        status = stream.readline()
        if b" 101 " not in status:
            raise RuntimeError(f"the streaming server refused the upgrade: {status!r}")
        while stream.readline() not in (b"\r\n", b""):
            pass
        result = Result()
        while True:
            head = stream.read(2)
            if len(head) < 2:
                return result
            opcode, length = head[0] & 0x0F, head[1] & 0x7F
            if length == 126:
                length = int.from_bytes(stream.read(2), "big")
            elif length == 127:
                length = int.from_bytes(stream.read(8), "big")
            payload = stream.read(length)
            if opcode == 8:  # close
                return result
            if opcode in (1, 2) and payload:
                channel, data = payload[0], payload[1:]
                if channel == 1:
                    result.stdout += data
                elif channel == 2:
                    result.stderr += data
                elif channel == 3 and data:
                    result.status = json.loads(data)
