"""rtnetlink (NETLINK_ROUTE) messages and one blocking socket: what ukrun needs to read and change a network
namespace, in the standard library only.

Why: pyroute2's import alone cost 130-200 ms on every create and delete of a networked container.

What must stay true:
- Layouts are the kernel uapi's (linux/netlink.h, rtnetlink.h, if_link.h, if_addr.h, pkt_sched.h,
  pkt_cls.h, tc_act/tc_mirred.h): host byte order except the fields those headers declare __be.
- Every request asks for an ACK; a request's replies end at its ACK (an NLMSG_ERROR with errno 0), a
  dump's at NLMSG_DONE. Every reply must carry the request's sequence number and this socket's port.
- An NLMSG_ERROR with a negative errno, or a dump ended by an error, raises `NetlinkError` (a HostError)
  with the errno and one sentence: the operation, the errno text and the kernel's own message if it sent
  one. A dump the kernel marks interrupted (NLM_F_DUMP_INTR) is read again, at most DUMP_TRIES times.
- Parsing is bounded: every message and attribute advances by at least its header, and a length that
  overruns its container raises `RtnlError`, never IndexError, a loop or a silent wrong value.
- `encode` and the attribute helpers are pure; only `Socket` does I/O.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Callable, Iterator
from enum import IntEnum

from ukrun.errors import HostError
from ukrun.tuples import NamedTuple


class RtnlError(HostError):
    """A netlink exchange failed or the kernel's reply could not be parsed."""


class NetlinkError(RtnlError):
    """The kernel refused a request; `errno` says why."""

    def __init__(self, errno: int, message: str) -> None:
        super().__init__(message)
        self.errno = errno


class Kind(IntEnum):
    """Message types (linux/netlink.h, linux/rtnetlink.h)."""

    ERROR = 2
    DONE = 3
    NEWLINK = 16
    DELLINK = 17
    GETLINK = 18
    NEWADDR = 20
    GETADDR = 22
    NEWROUTE = 24
    GETROUTE = 26
    NEWQDISC = 36
    DELQDISC = 37
    GETQDISC = 38
    NEWTFILTER = 44
    DELTFILTER = 45
    GETTFILTER = 46


# nlmsghdr flags
F_REQUEST, F_MULTI, F_ACK, F_DUMP_INTR = 0x1, 0x2, 0x4, 0x10
F_DUMP, F_EXCL, F_CREATE = 0x300, 0x200, 0x400
F_CAPPED, F_ACK_TLVS = 0x100, 0x200  # on an NLMSG_ERROR
SOL_NETLINK, NETLINK_CAP_ACK, NETLINK_EXT_ACK = 270, 10, 11
NLMSGERR_ATTR_MSG = 1
NLA_F_NESTED = 0x8000
NLA_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED and NLA_F_NET_BYTEORDER

# The fixed headers after nlmsghdr, as struct formats (all multiples of 4 bytes long).
NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
IFADDRMSG = struct.Struct("=BBBBi")  # family, prefixlen, flags, scope, index
RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, protocol, scope, type, flags
TCMSG = struct.Struct("=BxxxiIII")  # family, ifindex, handle, parent, info
ERRNO = struct.Struct("=i")

RECV_BUFFER = 256 * 1024
DUMP_TRIES = 3


class Message(NamedTuple):
    """One netlink message: its type, flags, sequence number, port and payload (after nlmsghdr)."""

    kind: int
    flags: int
    seq: int
    port: int
    payload: bytes


class Reply(NamedTuple):
    """A reply's fixed header, unpacked, and its top-level attributes."""

    header: tuple[int, ...]
    attrs: dict[int, bytes]


Describe = str | Callable[[], str]  # the operation, for an error sentence; a callable is asked only on error


def align(n: int) -> int:
    return (n + 3) & ~3


def attr(kind: int, payload: bytes) -> bytes:
    """One attribute (struct nlattr), padded to 4 bytes."""
    size = 4 + len(payload)
    return struct.pack("=HH", size, kind) + payload + b"\0" * (align(size) - size)


def u32_attr(kind: int, value: int) -> bytes:
    return attr(kind, struct.pack("=I", value))


def str_attr(kind: int, value: str) -> bytes:
    return attr(kind, value.encode() + b"\0")


def attrs(data: bytes) -> dict[int, bytes]:
    """The attributes in `data` by type (the first of each type); RtnlError when a length overruns."""
    out: dict[int, bytes] = {}
    pos = 0
    while pos + 4 <= len(data):
        size, kind = struct.unpack_from("=HH", data, pos)
        if size < 4 or pos + size > len(data):
            raise RtnlError(f"malformed netlink reply: an attribute of {size} bytes at {pos} of {len(data)}")
        out.setdefault(kind & NLA_TYPE_MASK, data[pos + 4:pos + size])
        pos += align(size)
    return out


def nested(data: dict[int, bytes], *path: int) -> bytes | None:
    """The payload at `path` through nested attributes, None when one of them is absent."""
    if not path or path[0] not in data:
        return None
    found = data[path[0]]
    return found if len(path) == 1 else nested(attrs(found), *path[1:])


def u32(data: bytes) -> int:
    if len(data) != 4:
        raise RtnlError(f"malformed netlink reply: a 32-bit attribute of {len(data)} bytes")
    value: int = struct.unpack("=I", data)[0]
    return value


def string(data: bytes) -> str:
    return data.split(b"\0", 1)[0].decode(errors="replace")


def encode(kind: int, flags: int, seq: int, header: bytes, body: bytes) -> bytes:
    """One request: nlmsghdr (port 0: to the kernel), the fixed header, then the attributes."""
    return NLMSGHDR.pack(NLMSGHDR.size + len(header) + len(body), kind, flags, seq, 0) + header + body


def messages(data: bytes) -> Iterator[Message]:
    """The messages of one datagram; RtnlError when a length overruns it."""
    pos = 0
    while pos + NLMSGHDR.size <= len(data):
        size, kind, flags, seq, port = NLMSGHDR.unpack_from(data, pos)
        if size < NLMSGHDR.size or pos + size > len(data):
            raise RtnlError(f"malformed netlink reply: a message of {size} bytes at {pos} of {len(data)}")
        yield Message(kind, flags, seq, port, data[pos + NLMSGHDR.size:pos + size])
        pos += align(size)


def reply(message: Message, header: struct.Struct) -> Reply:
    if len(message.payload) < header.size:
        raise RtnlError(f"malformed netlink reply: {len(message.payload)} bytes for a {header.size}-byte header")
    return Reply(header.unpack_from(message.payload), attrs(message.payload[header.size:]))


class Socket:
    """A NETLINK_ROUTE socket of the namespace the calling thread is in when it is made."""

    def __init__(self) -> None:
        try:
            self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                       socket.NETLINK_ROUTE)
        except OSError as exc:
            raise RtnlError(f"cannot open a netlink socket: {exc.strerror}") from None
        try:
            for option in (NETLINK_CAP_ACK, NETLINK_EXT_ACK):
                self._sock.setsockopt(SOL_NETLINK, option, 1)
            self._sock.bind((0, 0))
            self._port: int = self._sock.getsockname()[0]
        except OSError as exc:
            self._sock.close()
            raise RtnlError(f"cannot set up a netlink socket: {exc.strerror}") from None
        self._seq = 0
        self._buffer = bytearray(RECV_BUFFER)

    def close(self) -> None:
        self._sock.close()

    def request(self, kind: Kind, flags: int, header: struct.Struct, values: tuple[int, ...], body: bytes,
                what: Describe) -> list[Reply]:
        """Sends one request and returns the messages the kernel answers before its ACK."""
        seq = self._send(kind, F_REQUEST | F_ACK | flags, header.pack(*values) + body, what)
        return [reply(m, header) for m in self._replies(seq, what, dump=False)]

    def dump(self, kind: Kind, header: struct.Struct, values: tuple[int, ...], body: bytes,
             what: Describe) -> list[Reply]:
        """Every object of a dump request, read again when the kernel says it was interrupted."""
        for _ in range(DUMP_TRIES):
            seq = self._send(kind, F_REQUEST | F_ACK | F_DUMP, header.pack(*values) + body, what)
            parts = list(self._replies(seq, what, dump=True))
            if not any(m.flags & F_DUMP_INTR for m in parts):
                return [reply(m, header) for m in parts]
        raise RtnlError(f"{_text(what)}: the kernel's dump was interrupted by changes {DUMP_TRIES} times")

    def _send(self, kind: Kind, flags: int, payload: bytes, what: Describe) -> int:
        self._seq += 1
        try:
            self._sock.sendto(encode(kind, flags, self._seq, payload, b""), (0, 0))
        except OSError as exc:
            raise RtnlError(f"{_text(what)}: cannot send to netlink: {exc.strerror}") from None
        return self._seq

    def _replies(self, seq: int, what: Describe, dump: bool) -> Iterator[Message]:
        while True:
            for message in messages(self._receive(what)):
                if message.seq != seq or message.port != self._port:
                    raise RtnlError(f"{_text(what)}: a netlink reply to sequence {message.seq} (port "
                                    f"{message.port}) arrived for {seq} (port {self._port})")
                if message.kind == Kind.ERROR or (dump and message.kind == Kind.DONE):
                    code, said = _error(message)
                    if code:
                        raise NetlinkError(code, f"{_text(what)}: {os.strerror(code)}{said}")
                    return
                yield message

    def _receive(self, what: Describe) -> bytes:
        try:
            size = self._sock.recv_into(self._buffer, 0, socket.MSG_TRUNC)
        except OSError as exc:
            raise RtnlError(f"{_text(what)}: cannot read from netlink: {exc.strerror}") from None
        if size > len(self._buffer):
            raise RtnlError(f"{_text(what)}: a netlink reply of {size} bytes overran {len(self._buffer)}")
        return bytes(self._buffer[:size])


def _error(message: Message) -> tuple[int, str]:
    """An NLMSG_ERROR's or NLMSG_DONE's errno (positive; 0 is an ACK) and the kernel's message, if any, as
    text to append."""
    payload = message.payload
    if len(payload) < ERRNO.size:
        if message.kind == Kind.DONE:
            return 0, ""
        raise RtnlError("malformed netlink reply: an error message without its errno")
    code = -ERRNO.unpack_from(payload)[0]
    if code < 0 or code > 4095:
        raise RtnlError(f"malformed netlink reply: errno {-code}")
    if message.kind != Kind.ERROR or not message.flags & F_ACK_TLVS:
        return code, ""
    # After the errno: the request's own nlmsghdr, and its payload unless the kernel capped it.
    start = ERRNO.size + NLMSGHDR.size
    if not message.flags & F_CAPPED and len(payload) >= start:
        start = ERRNO.size + align(NLMSGHDR.unpack_from(payload, ERRNO.size)[0])
    said = attrs(payload[start:]).get(NLMSGERR_ATTR_MSG)
    return code, f" ({string(said)})" if said else ""


def _text(what: Describe) -> str:
    return what if isinstance(what, str) else what()

