"""Every change ukrun makes to a container's network namespace, through netlink (pyroute2): the facts
of its default interface, its tap, and the tc redirection between them (an ingress qdisc on each, a
match-all u32 filter with a mirred egress redirect to the other), as urunc's dynamic mode sets them up.

The calling thread enters the namespace and comes back (`inside`); sockets opened there stay bound to
it. Importing pyroute2 costs ~130 ms: only creates and deletes of networked containers import this.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import socket
import struct
from collections.abc import Iterator
from typing import Any

from pyroute2.iproute.linux import IPRoute

from ukrun.errors import HostError
from ukrun.network.base import ALIAS_PREFIX, Interface

CLONE_NEWNET = 0x40000000
TUNSETIFF, TUNSETPERSIST = 0x400454CA, 0x400454CB
IFF_TAP, IFF_NO_PI, IFF_VNET_HDR = 0x0002, 0x1000, 0x4000
ETH_P_ALL = 0x0003
INGRESS = 0xFFFF0000
PRIO = 0xC0DE  # ukrun's filters: removed by this priority, never another's
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise HostError(f"cannot enter the network namespace: {os.strerror(err)}")


@contextlib.contextmanager
def inside(netns: str) -> Iterator[IPRoute]:
    """This thread in the namespace at path `netns`, with a netlink socket of that namespace."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            target = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise HostError(f"cannot open the container's network namespace {netns}: {exc.strerror}") from None
        try:
            _setns(target)
        finally:
            os.close(target)
        ipr = IPRoute()
        try:
            yield ipr
        finally:
            ipr.close()
            _setns(own)
    finally:
        os.close(own)


def default_interface(ipr: IPRoute) -> Interface | None:
    """The interface of the IPv4 default route, with its first address; None without one."""
    gateway, index = "", 0
    for r in ipr.get_routes(family=socket.AF_INET):
        if r["dst_len"] == 0 and r.get_attr("RTA_GATEWAY"):
            gateway, index = r.get_attr("RTA_GATEWAY"), r.get_attr("RTA_OIF")
            break
    if not index:
        return None
    addrs = [a for a in ipr.get_addr(family=socket.AF_INET) if a["index"] == index]
    (link,) = ipr.get_links(index)
    if not addrs:
        return None
    return Interface(link.get_attr("IFLA_IFNAME"), index, addrs[0].get_attr("IFA_ADDRESS"), addrs[0]["prefixlen"],
                     gateway, link.get_attr("IFLA_ADDRESS"), link.get_attr("IFLA_MTU"))


def ukrun_taps(ipr: IPRoute) -> dict[str, str]:
    """Taps ukrun made in this namespace: name -> the container that owns it."""
    out = {}
    for link in ipr.get_links():
        label = link.get_attr("IFLA_IFALIAS") or ""
        if label.startswith(ALIAS_PREFIX):
            out[link.get_attr("IFLA_IFNAME")] = label.removeprefix(ALIAS_PREFIX)
    return out


def make_tap(ipr: IPRoute, name: str, label: str, mtu: int) -> int:
    """A persistent tap, labelled, up; returns its index."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI | IFF_VNET_HDR))
        fcntl.ioctl(fd, TUNSETPERSIST, 1)
    finally:
        os.close(fd)
    (index,) = ipr.link_lookup(ifname=name)
    ipr.link("set", index=index, ifalias=label, mtu=mtu, state="up")
    return int(index)


def redirect(ipr: IPRoute, source: int, target: int) -> None:
    """Everything that arrives on `source` leaves through `target` (tc ingress, u32, mirred)."""
    if not [q for q in ipr.get_qdiscs(index=source) if q["parent"] == INGRESS]:
        ipr.tc("add", "ingress", source, "ffff:")
    ipr.tc("add-filter", "u32", source, parent="ffff:", prio=PRIO, protocol=ETH_P_ALL, keys=["0x0/0x0+0"],
           target=0x10020, action={"kind": "mirred", "direction": "egress", "action": "redirect", "ifindex": target})


def remove_tap(ipr: IPRoute, name: str) -> None:
    """Removes the tap and ukrun's filters elsewhere that redirect to it, then an ingress qdisc that they
    leave empty. The tap's own qdisc and filters go with it."""
    found = ipr.link_lookup(ifname=name)
    if not found:
        return
    tap = found[0]
    for link in ipr.get_links():
        index = link["index"]
        if index == tap:
            continue
        filters = ipr.get_filters(index=index, parent=INGRESS)
        if not any(_prio(f) == PRIO and _mirred_target(f) == tap for f in filters):
            continue
        ipr.tc("del-filter", index=index, parent=INGRESS, prio=PRIO, protocol=ETH_P_ALL)
        if not ipr.get_filters(index=index, parent=INGRESS):
            ipr.tc("del", "ingress", index, "ffff:")
    ipr.link("del", index=tap)


def _prio(f: Any) -> int:
    return int(f["info"]) >> 16


def _mirred_target(f: Any) -> int:
    """The device a u32 filter's first action redirects to (0 if it is no mirred redirect)."""
    parms = f.get_nested("TCA_OPTIONS", "TCA_U32_ACT", "TCA_ACT_PRIO_1", "TCA_ACT_OPTIONS", "TCA_MIRRED_PARMS")
    return int(parms["ifindex"]) if parms else 0
