"""gRPC status codes and the one exception ukrun's HTTP/2 client raises for a failed call.

Why: callers map failures from one place (ukrun.containerd.client) by code, as they did with grpcio;
the codes and their names are gRPC's (a stable, documented list).

What must stay true: every code name matches gRPC's, since messages may show `code.name`.
"""

from __future__ import annotations

from enum import IntEnum


class Status(IntEnum):
    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


HTTP_TO_STATUS = {400: Status.INTERNAL, 401: Status.UNAUTHENTICATED, 403: Status.PERMISSION_DENIED,
                  404: Status.UNIMPLEMENTED, 429: Status.UNAVAILABLE, 502: Status.UNAVAILABLE,
                  503: Status.UNAVAILABLE, 504: Status.UNAVAILABLE}
RST_TO_STATUS = {0x7: Status.UNAVAILABLE, 0x8: Status.CANCELLED, 0xB: Status.RESOURCE_EXHAUSTED,
                 0xC: Status.PERMISSION_DENIED}  # REFUSED_STREAM, CANCEL, ENHANCE_YOUR_CALM, INADEQUATE_SECURITY


class RpcError(Exception):
    """A call that ended with a status other than OK; `broken` when the connection cannot be reused."""

    def __init__(self, code: Status, details: str, *, broken: bool = False) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details
        self.broken = broken


def percent_decode(text: str) -> str:
    """grpc-message is percent-encoded UTF-8 (gRPC's HTTP/2 mapping); a bad escape stays as it is."""
    if "%" not in text:
        return text
    out = bytearray()
    raw = text.encode()
    i = 0
    while i < len(raw):
        if raw[i] == 0x25 and _is_hex(raw[i + 1:i + 3]):
            out.append(int(raw[i + 1:i + 3], 16))
            i += 3
        else:
            out.append(raw[i])
            i += 1
    return out.decode(errors="replace")


def _is_hex(pair: bytes) -> bool:
    return len(pair) == 2 and all(c in b"0123456789abcdefABCDEF" for c in pair)


def raise_for_status(headers_list: list[tuple[str, str]], trailers_list: list[tuple[str, str]]) -> None:
    """Raises the call's RpcError from its response headers and trailers, unless its status is OK."""
    headers, trailers = dict(headers_list), dict(trailers_list)
    status = trailers.get("grpc-status")
    if status is None:
        http = headers.get(":status", "")
        if http != "200":
            code = HTTP_TO_STATUS.get(int(http) if http.isdigit() else 0, Status.UNKNOWN)
            raise RpcError(code, f"HTTP status {http or 'missing'} and no grpc-status: is this a gRPC server?")
        raise RpcError(Status.INTERNAL, "the stream ended without a grpc-status")
    try:
        code = Status(int(status))
    except ValueError:
        code = Status.UNKNOWN
    if code is not Status.OK:
        raise RpcError(code, percent_decode(trailers.get("grpc-message", "")))
