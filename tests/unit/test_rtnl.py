"""ukrun's rtnetlink encoding and parsing: against bytes written out from the kernel's uapi layouts, against
pyroute2's encoding of the same requests (pyroute2 is a development dependency only), and, read-only,
against the kernel of the namespace the tests run in."""

from __future__ import annotations

import socket
import struct
import subprocess
import sys

import pytest
from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.tcmsg import cls_u32, tcmsg

from ukrun.network import netlink, rtnl
from ukrun.network.rtnl import Kind, RtnlError

ADD = rtnl.F_REQUEST | rtnl.F_ACK | rtnl.F_CREATE | rtnl.F_EXCL


def le32(*values: int) -> bytes:
    return b"".join(v.to_bytes(4, "little") for v in values)


# RTM_NEWTFILTER for ukrun's filter on ifindex 3 redirecting to 7, written out by hand from the headers:
# nlmsghdr, struct tcmsg, then nlattrs (u16 len, u16 type) padded to 4.
FILTER_REQUEST = b"".join([
    le32(0x94) + (44).to_bytes(2, "little") + (0x605).to_bytes(2, "little") + le32(5, 0),  # nlmsghdr
    bytes(4) + le32(3, 0, 0xFFFF0000) + (0x0300).to_bytes(2, "little") + (0xC0DE).to_bytes(2, "little"),  # tcmsg
    bytes.fromhex("08000100") + b"u32\0",  # TCA_KIND
    bytes.fromhex("68000200"),  # TCA_OPTIONS, 104 bytes
    bytes.fromhex("38000700"),  # TCA_U32_ACT
    bytes.fromhex("34000100"),  # action of order 1
    bytes.fromhex("0b000100") + b"mirred\0" + b"\0",  # TCA_ACT_KIND, padded
    bytes.fromhex("24000280"),  # TCA_ACT_OPTIONS | NLA_F_NESTED
    bytes.fromhex("20000200") + le32(0, 0, 4, 0, 0, 1, 7),  # TCA_MIRRED_PARMS: tc_gen, TCA_EGRESS_REDIR, ifindex
    bytes.fromhex("08000100") + le32(0x10020),  # TCA_U32_CLASSID 1:20
    bytes.fromhex("24000500") + bytes([1, 0, 1, 0]) + bytes(12) + bytes(16),  # TCA_U32_SEL: TERMINAL, 1 key of 0s
])


def ours_filter() -> bytes:
    header = rtnl.TCMSG.pack(0, 3, 0, netlink.INGRESS, netlink.filter_info())
    return rtnl.encode(Kind.NEWTFILTER, ADD, 5, header, netlink.redirect_filter(7))


def test_the_redirect_filter_is_the_kernel_layout() -> None:
    assert ours_filter() == FILTER_REQUEST


def test_the_redirect_filter_is_what_pyroute2_sent() -> None:
    kwarg = {"keys": ["0x0/0x0+0"], "target": 0x10020, "prio": netlink.PRIO, "protocol": netlink.ETH_P_ALL,
             "action": {"kind": "mirred", "direction": "egress", "action": "redirect", "ifindex": 7}}
    cls_u32.fix_request(kwarg)
    msg = tcmsg()
    msg["index"], msg["handle"], msg["parent"], msg["info"] = 3, 0, 0xFFFF0000, kwarg["info"]
    msg["attrs"] = [["TCA_KIND", "u32"], ["TCA_OPTIONS", cls_u32.get_parameters(kwarg)]]
    assert _encoded(msg, Kind.NEWTFILTER, ADD) == ours_filter()


def test_the_link_and_address_requests_match_pyroute2() -> None:
    link = ifinfmsg()
    link["index"], link["flags"], link["change"] = 9, netlink.IFF_UP, netlink.IFF_UP
    link["attrs"] = [["IFLA_IFALIAS", "ukrun:c1"], ["IFLA_MTU", 1400]]
    ours = rtnl.encode(Kind.NEWLINK, rtnl.F_REQUEST | rtnl.F_ACK, 5, rtnl.IFINFOMSG.pack(0, 0, 9, 1, 1),
                       rtnl.str_attr(netlink.IFLA_IFALIAS, "ukrun:c1") + rtnl.u32_attr(netlink.IFLA_MTU, 1400))
    assert _encoded(link, Kind.NEWLINK, NLM_F_REQUEST | NLM_F_ACK) == ours

    addr = ifaddrmsg()
    addr["family"], addr["prefixlen"], addr["index"] = socket.AF_INET, 30, 9
    addr["attrs"] = [["IFA_LOCAL", "10.0.0.1"], ["IFA_ADDRESS", "10.0.0.1"]]
    packed = socket.inet_aton("10.0.0.1")
    ours = rtnl.encode(Kind.NEWADDR, ADD, 5, rtnl.IFADDRMSG.pack(socket.AF_INET, 30, 0, 0, 9),
                       rtnl.attr(netlink.IFA_LOCAL, packed) + rtnl.attr(netlink.IFA_ADDRESS, packed))
    assert _encoded(addr, Kind.NEWADDR, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL) == ours


def _encoded(msg: tcmsg | ifinfmsg | ifaddrmsg, kind: Kind, flags: int) -> bytes:
    msg["header"]["type"], msg["header"]["flags"], msg["header"]["sequence_number"] = kind, flags, 5
    msg.encode()
    return bytes(msg.data)


def as_dumped_filter(request: bytes, prio: int = netlink.PRIO) -> rtnl.Reply:
    """The request read back as the kernel dumps a filter (its tcm_info, attributes, nested flags kept)."""
    (message,) = rtnl.messages(request)
    reply = rtnl.reply(message, rtnl.TCMSG)
    family, index, handle, parent, info = reply.header
    return rtnl.Reply((family, index, handle, parent, prio << 16 | info & 0xFFFF), reply.attrs)


def test_the_mirred_target_is_read_back_from_a_filter() -> None:
    assert netlink.mirred_target(as_dumped_filter(FILTER_REQUEST)) == 7
    assert netlink._redirects_to(as_dumped_filter(FILTER_REQUEST), 7)
    assert not netlink._redirects_to(as_dumped_filter(FILTER_REQUEST, prio=5), 7)
    other_kind = FILTER_REQUEST.replace(b"u32\0", b"fw\0\0")
    assert netlink.mirred_target(as_dumped_filter(other_kind)) == 0


def test_attributes_are_parsed_with_their_flags_masked_and_bounded() -> None:
    data = rtnl.attr(3 | rtnl.NLA_F_NESTED, rtnl.u32_attr(1, 42)) + rtnl.str_attr(4, "eth0")
    parsed = rtnl.attrs(data)
    assert rtnl.u32(rtnl.attrs(parsed[3])[1]) == 42 and rtnl.string(parsed[4]) == "eth0"
    assert rtnl.nested(parsed, 3, 1) == struct.pack("=I", 42) and rtnl.nested(parsed, 3, 2) is None
    for bad in (struct.pack("=HH", 2, 1), struct.pack("=HH", 12, 1) + bytes(4), struct.pack("=HH", 0, 1) * 3):
        with pytest.raises(RtnlError):
            rtnl.attrs(bad)
    with pytest.raises(RtnlError):
        rtnl.u32(b"\0\0")


def test_messages_are_bounded() -> None:
    assert [m.kind for m in rtnl.messages(FILTER_REQUEST * 2)] == [Kind.NEWTFILTER] * 2
    for bad in (FILTER_REQUEST[:-4], rtnl.NLMSGHDR.pack(8, 2, 0, 1, 0) + bytes(8)):
        with pytest.raises(RtnlError):
            list(rtnl.messages(bad))
    with pytest.raises(RtnlError):
        rtnl.reply(rtnl.Message(16, 0, 1, 0, bytes(8)), rtnl.IFINFOMSG)


def test_an_error_carries_its_errno_and_the_kernels_message() -> None:
    said = rtnl.str_attr(rtnl.NLMSGERR_ATTR_MSG, "Device not found")
    capped = struct.pack("=i", -19) + rtnl.NLMSGHDR.pack(100, Kind.NEWLINK, 5, 1, 0) + said  # request cut
    capped_error = rtnl.Message(Kind.ERROR, rtnl.F_CAPPED | rtnl.F_ACK_TLVS, 1, 0, capped)
    assert rtnl._error(capped_error) == (19, " (Device not found)")
    whole = struct.pack("=i", -19) + rtnl.NLMSGHDR.pack(26, Kind.NEWLINK, 5, 1, 0) + b"\xff" * 12 + said
    assert rtnl._error(rtnl.Message(Kind.ERROR, rtnl.F_ACK_TLVS, 1, 0, whole)) == (19, " (Device not found)")
    request = rtnl.NLMSGHDR.pack(16, Kind.NEWLINK, 5, 1, 0)
    assert rtnl._error(rtnl.Message(Kind.ERROR, 0, 1, 0, struct.pack("=i", 0) + request)) == (0, "")
    with pytest.raises(RtnlError):
        rtnl._error(rtnl.Message(Kind.ERROR, 0, 1, 0, b"\0"))


def test_the_kernel_answers_a_dump_and_a_refusal() -> None:
    """Read-only, in the tests' own namespace: the loopback device is listed; a missing one is ENODEV."""
    sock = rtnl.Socket()
    try:
        names = [rtnl.string(r.attrs[netlink.IFLA_IFNAME]) for r in netlink._links(sock)]
        assert "lo" in names
        assert netlink.link_index(sock, "lo") == socket.if_nametoindex("lo")
        assert netlink.link_index(sock, "nonexistent0") is None
        with pytest.raises(rtnl.NetlinkError, match="cannot read the interface with index") as raised:
            sock.request(Kind.GETLINK, 0, rtnl.IFINFOMSG, (0, 0, 0x7FFFFFF0, 0, 0), b"",
                         "cannot read the interface with index 2147483632")
        assert raised.value.errno == 19
    finally:
        sock.close()


def test_importing_the_network_module_leaves_pyroute2_and_asyncio_out() -> None:
    code = "import sys, ukrun.network.netlink; print(sorted({'pyroute2', 'asyncio'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
