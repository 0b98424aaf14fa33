"""A container's network, applied in its namespace by `create` and removed by `delete` and `gc`.

What must stay true: the namespace's room for this unikernel (network.ports: its ports unclaimed, its
subnet free, no unikernel that takes the namespace whole) is checked again under the namespace's lock,
and the tap that records the claim is made before the lock is released, so that of two concurrent creates
in one pod the second sees the first's claim. Everything made here is the container's own, named after
it (tap, alias, table); what a crash at any step leaves is removed by `disconnect`, which the container's
record leads to (runtime.create saves it before the first step).
"""

from __future__ import annotations

import os

from ukrun import crashpoints
from ukrun.errors import UkrunError
from ukrun.network import netlink, ports
from ukrun.network.base import GuestNetwork, Link, NetworkMode, PortsLink


def connect(container_id: str, netns: str, interface: str, network: GuestNetwork, link: Link | None) -> None:
    """The container's tap, and either the redirection between it and the container's interface (dynamic)
    or the private link and its NAT rules (static, ports)."""
    claims = link.ports if isinstance(link, PortsLink) else ()
    with netlink.inside(netns, locked=True) as sock:
        found = netlink.namespace(sock)
        ports.check_room(container_id, netns, link.mode if link else NetworkMode.DYNAMIC, claims, found.links)
        if isinstance(link, PortsLink):
            ports.check_subnet(link, ports.busy(container_id, found.links, found.taken))
        iface = netlink.link_index(sock, interface)
        if iface is None:
            raise UkrunError(f"interface {interface} of {netns} went away before its tap was made")
        crashpoints.point("create-before-tap")
        tap = netlink.make_tap(sock, network.tap, ports.link_label(container_id, claims), network.mtu)
        crashpoints.point("create-after-tap")
        if link is not None:
            from ukrun.network import natlink  # it runs nft: only these modes pay for subprocess

            natlink.connect(sock, tap, link)
            return
        netlink.redirect(sock, iface, tap)
        netlink.redirect(sock, tap, iface)


def disconnect(netns: str, tap: str, table: str) -> None:
    """Removes the container's NAT table (static, ports), then its tap and the filters that point at it; a
    namespace already gone took them."""
    if not os.path.exists(netns):
        return
    with netlink.inside(netns) as sock:
        if table:
            from ukrun.network import natlink

            natlink.disconnect(table)
            crashpoints.point("teardown-after-rules")
        netlink.remove_tap(sock, tap)
