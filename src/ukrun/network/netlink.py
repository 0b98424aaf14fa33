"""Every change ukrun makes to a container's network namespace through rtnetlink (`rtnl`), and what it
reads there: the namespace's facts (its default interface, ukrun's taps and their claims, the networks in
use), the container's tap and its address, and the tc redirection between tap and interface (an ingress
qdisc on each, a match-all u32 filter with a mirred egress redirect to the other), as urunc's dynamic mode
sets them up.

The calling thread enters the namespace and comes back (`inside`, optionally under the namespace's lock);
the netlink socket opened there stays bound to it. What must stay true: ukrun's filters are found and
removed by their priority PRIO and their redirect target, never another's; the ingress qdisc goes only
when ukrun's filter was its last one. Only creates and deletes of networked containers import this.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import struct
from collections.abc import Callable, Iterator

from ukrun import libc
from ukrun.errors import HostError
from ukrun.network import rtnl
from ukrun.network.base import Interface, NetnsFacts
from ukrun.network.ports import parse_label
from ukrun.network.rtnl import IFADDRMSG, IFINFOMSG, RTMSG, TCMSG, Kind, NetlinkError, attr, str_attr, u32_attr

CLONE_NEWNET = 0x40000000
TUNSETIFF, TUNSETPERSIST = 0x400454CA, 0x400454CB
IFF_UP, IFF_TAP, IFF_NO_PI, IFF_VNET_HDR = 0x1, 0x0002, 0x1000, 0x4000
ETH_P_ALL = 0x0003
INGRESS = 0xFFFF0000  # the ingress qdisc's handle, ffff:, the parent of its filters
TC_H_INGRESS = 0xFFFFFFF1  # the ingress qdisc's parent
PRIO = 0xC0DE  # ukrun's filters: removed by this priority, never another's
CLASSID = 0x10020  # the u32 filter's flow id, 1:20, as ukrun has always set it
# Attribute numbers (linux/if_link.h, if_addr.h, rtnetlink.h, pkt_sched.h, pkt_cls.h, tc_act/tc_mirred.h)
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_IFALIAS = 1, 3, 4, 20
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTA_DST, RTA_OIF, RTA_GATEWAY = 1, 4, 5
RT_TABLE_MAIN = 254
TCA_KIND, TCA_OPTIONS = 1, 2
TCA_U32_CLASSID, TCA_U32_SEL, TCA_U32_ACT = 1, 5, 7
TCA_ACT_KIND, TCA_ACT_OPTIONS = 1, 2
TCA_MIRRED_PARMS = 2
TC_U32_TERMINAL, TC_ACT_STOLEN, TCA_EGRESS_REDIR = 1, 4, 1
U32_SEL = struct.Struct("=BBBxHHhhI")  # struct tc_u32_sel without keys: flags, offshift, nkeys, ...
U32_KEY = struct.Struct("=IIii")  # struct tc_u32_key: mask, val (both __be32), off, offmask
TC_MIRRED = struct.Struct("=IIiiiiI")  # struct tc_mirred: index, capab, action, refcnt, bindcnt, eaction, ifindex
_libc_setns = libc.function("setns")


def _setns(fd: int) -> None:
    if _libc_setns(fd, CLONE_NEWNET) != 0:
        err = libc.errno()
        raise HostError(f"cannot enter the network namespace: {os.strerror(err)}")


@contextlib.contextmanager
def inside(netns: str, *, locked: bool = False) -> Iterator[rtnl.Socket]:
    """This thread in the namespace at path `netns`, with a netlink socket of that namespace. `locked`:
    holding the namespace's lock meanwhile, an exclusive flock on the namespace file itself (every path to
    one namespace opens the same nsfs inode, so creates of any runtime root take turns, and the kernel
    drops the lock with a process that dies holding it)."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            target = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise HostError(f"cannot open the container's network namespace {netns}: {exc.strerror}") from None
        try:
            if locked:
                fcntl.flock(target, fcntl.LOCK_EX)
            _setns(target)
            try:
                sock = rtnl.Socket()
                try:
                    yield sock
                finally:
                    sock.close()
            finally:
                _setns(own)
        finally:
            os.close(target)  # the lock goes with it
    finally:
        os.close(own)


def namespace(sock: rtnl.Socket) -> NetnsFacts:
    """The interface of the IPv4 default route (with its first address; None without one), ukrun's taps
    with their claims and networks, and the networks of every other address and non-default route."""
    routes = sock.dump(Kind.GETROUTE, RTMSG, (socket.AF_INET, 0, 0, 0, 0, 0, 0, 0, 0), b"",
                       "cannot list the namespace's routes")
    addrs = [a for a in sock.dump(Kind.GETADDR, IFADDRMSG, (socket.AF_INET, 0, 0, 0, 0), b"",
                                  "cannot list the namespace's addresses") if IFA_ADDRESS in a.attrs]
    links = {link.header[2]: link for link in _links(sock)}
    networks: dict[int, list[str]] = {}
    for a in addrs:
        networks.setdefault(a.header[4], []).append(f"{socket.inet_ntoa(a.attrs[IFA_ADDRESS])}/{a.header[1]}")
    ours = {}
    for index, link in links.items():
        found = parse_label(rtnl.string(link.attrs.get(IFLA_IFALIAS, b"")))
        if found is not None:
            ours[index] = found._replace(tap=rtnl.string(link.attrs[IFLA_IFNAME]),
                                         networks=tuple(networks.get(index, ())))
    taken = [n for index, nets in networks.items() if index not in ours for n in nets]
    gateway, index = "", 0
    for r in routes:
        oif = rtnl.u32(r.attrs[RTA_OIF]) if RTA_OIF in r.attrs else 0
        if r.header[1] == 0 and RTA_GATEWAY in r.attrs and not gateway:
            gateway, index = socket.inet_ntoa(r.attrs[RTA_GATEWAY]), oif
        elif r.header[4] == RT_TABLE_MAIN and r.header[1] and RTA_DST in r.attrs and oif not in ours:
            taken.append(f"{socket.inet_ntoa(r.attrs[RTA_DST])}/{r.header[1]}")
    default = links.get(index)
    interface = None
    if default is not None and networks.get(index):
        address, _, prefix = networks[index][0].partition("/")
        interface = Interface(rtnl.string(default.attrs[IFLA_IFNAME]), index, address, int(prefix), gateway,
                              ":".join(f"{b:02x}" for b in default.attrs.get(IFLA_ADDRESS, b"")),
                              rtnl.u32(default.attrs[IFLA_MTU]))
    return NetnsFacts(interface, tuple(sorted(ours.values())), tuple(dict.fromkeys(taken)))


def link_index(sock: rtnl.Socket, name: str) -> int | None:
    """The index of the interface called `name`; None when there is none."""
    try:
        (link,) = sock.request(Kind.GETLINK, 0, IFINFOMSG, (0, 0, 0, 0, 0), str_attr(IFLA_IFNAME, name),
                               f"cannot look up the interface {name}")
    except NetlinkError as exc:
        if exc.errno == errno.ENODEV:
            return None
        raise
    return link.header[2]


def make_tap(sock: rtnl.Socket, name: str, label: str, mtu: int) -> int:
    """A persistent tap, labelled, up; returns its index."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI | IFF_VNET_HDR))
        fcntl.ioctl(fd, TUNSETPERSIST, 1)
    finally:
        os.close(fd)
    index = link_index(sock, name)
    if index is None:
        raise HostError(f"the tap {name} went away as soon as it was made")
    sock.request(Kind.NEWLINK, 0, IFINFOMSG, (0, 0, index, IFF_UP, IFF_UP),
                 str_attr(IFLA_IFALIAS, label) + u32_attr(IFLA_MTU, mtu), f"cannot label and bring up the tap {name}")
    return index


def add_address(sock: rtnl.Socket, index: int, address: str, prefixlen: int) -> None:
    """`address`/`prefixlen` on the interface `index` (IFA_LOCAL and IFA_ADDRESS, as `ip address add`)."""
    packed = socket.inet_aton(address)
    sock.request(Kind.NEWADDR, rtnl.F_CREATE | rtnl.F_EXCL, IFADDRMSG, (socket.AF_INET, prefixlen, 0, 0, index),
                 attr(IFA_LOCAL, packed) + attr(IFA_ADDRESS, packed),
                 lambda: f"cannot add the address {address}/{prefixlen} to {_device(sock, index)}")


def redirect(sock: rtnl.Socket, source: int, target: int) -> None:
    """Everything that arrives on `source` leaves through `target` (tc ingress, u32, mirred)."""
    qdiscs = sock.dump(Kind.GETQDISC, TCMSG, (0, source, 0, 0, 0), b"",
                       _about(sock, "cannot list the qdiscs of {}", source))
    if not any(q.header[1] == source and q.header[3] == TC_H_INGRESS for q in qdiscs):
        sock.request(Kind.NEWQDISC, rtnl.F_CREATE | rtnl.F_EXCL, TCMSG, (0, source, INGRESS, TC_H_INGRESS, 0),
                     str_attr(TCA_KIND, "ingress"), _about(sock, "cannot add an ingress qdisc to {}", source))
    sock.request(Kind.NEWTFILTER, rtnl.F_CREATE | rtnl.F_EXCL, TCMSG, (0, source, 0, INGRESS, filter_info()),
                 redirect_filter(target),
                 lambda: f"cannot redirect {_device(sock, source)} to {_device(sock, target)} with a tc filter")


def filter_info() -> int:
    """tcm_info of ukrun's filters: the priority above the protocol (in network byte order)."""
    return PRIO << 16 | socket.htons(ETH_P_ALL)


def redirect_filter(target: int) -> bytes:
    """The attributes of ukrun's u32 filter: one key that matches every packet (mask 0 at offset 0), the
    terminal flag, flow id 1:20, and one action, a mirred egress redirect to `target` that steals the packet.
    Byte for byte what pyroute2 sent, where TCA_ACT_OPTIONS alone carries NLA_F_NESTED."""
    selector = U32_SEL.pack(TC_U32_TERMINAL, 0, 1, 0, 0, 0, 0, 0) + U32_KEY.pack(0, 0, 0, 0)
    mirred = attr(TCA_MIRRED_PARMS, TC_MIRRED.pack(0, 0, TC_ACT_STOLEN, 0, 0, TCA_EGRESS_REDIR, target))
    action = attr(1, str_attr(TCA_ACT_KIND, "mirred") + attr(TCA_ACT_OPTIONS | rtnl.NLA_F_NESTED, mirred))  # order 1
    options = attr(TCA_U32_ACT, action) + u32_attr(TCA_U32_CLASSID, CLASSID) + attr(TCA_U32_SEL, selector)
    return str_attr(TCA_KIND, "u32") + attr(TCA_OPTIONS, options)


def remove_tap(sock: rtnl.Socket, name: str) -> None:
    """Removes the tap and ukrun's filters elsewhere that redirect to it, then an ingress qdisc that they
    leave empty. The tap's own qdisc and filters go with it."""
    tap = link_index(sock, name)
    if tap is None:
        return
    for link in _links(sock):
        index = link.header[2]
        if index == tap or not any(_redirects_to(f, tap) for f in _filters(sock, index)):
            continue
        sock.request(Kind.DELTFILTER, 0, TCMSG, (0, index, 0, INGRESS, filter_info()), b"",
                     _about(sock, "cannot delete ukrun's tc filter on {}", index))
        if not _filters(sock, index):
            sock.request(Kind.DELQDISC, 0, TCMSG, (0, index, INGRESS, TC_H_INGRESS, 0), str_attr(TCA_KIND, "ingress"),
                         _about(sock, "cannot delete the ingress qdisc of {}", index))
    sock.request(Kind.DELLINK, 0, IFINFOMSG, (0, 0, tap, 0, 0), b"", f"cannot delete the tap {name}")


def mirred_target(f: rtnl.Reply) -> int:
    """The device a u32 filter's first action redirects to (0 if it is no u32 filter with a mirred action)."""
    if rtnl.string(f.attrs.get(TCA_KIND, b"")) != "u32":
        return 0
    action = rtnl.nested(f.attrs, TCA_OPTIONS, TCA_U32_ACT, 1)
    if action is None:
        return 0
    found = rtnl.attrs(action)
    parms = rtnl.nested(found, TCA_ACT_OPTIONS, TCA_MIRRED_PARMS)
    if rtnl.string(found.get(TCA_ACT_KIND, b"")) != "mirred" or parms is None or len(parms) < TC_MIRRED.size:
        return 0
    target: int = TC_MIRRED.unpack_from(parms)[6]
    return target


def _redirects_to(f: rtnl.Reply, tap: int) -> bool:
    return f.header[4] >> 16 == PRIO and mirred_target(f) == tap


def _links(sock: rtnl.Socket) -> list[rtnl.Reply]:
    return sock.dump(Kind.GETLINK, IFINFOMSG, (0, 0, 0, 0, 0), b"", "cannot list the namespace's interfaces")


def _filters(sock: rtnl.Socket, index: int) -> list[rtnl.Reply]:
    return sock.dump(Kind.GETTFILTER, TCMSG, (0, index, 0, INGRESS, 0), b"",
                     _about(sock, "cannot list the ingress filters of {}", index))


def _about(sock: rtnl.Socket, text: str, index: int) -> Callable[[], str]:
    """An error sentence about one interface, its name read only when the error happens."""
    return lambda: text.format(_device(sock, index))


def _device(sock: rtnl.Socket, index: int) -> str:
    """The interface's name, for an error sentence (its index when it cannot be read)."""
    try:
        (link,) = sock.request(Kind.GETLINK, 0, IFINFOMSG, (0, 0, index, 0, 0), b"", "")
        return f"{rtnl.string(link.attrs[IFLA_IFNAME])} (index {index})"
    except (HostError, KeyError, ValueError):
        return f"the interface with index {index}"
