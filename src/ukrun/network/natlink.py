"""A guest on a private link behind the pod's interface (STATIC and PORTS modes), applied inside the
container's network namespace: the tap gets the link's host address, the namespace forwards, and one
nftables table named after the container holds the link's NAT rules (network.base's `ruleset`).

What must stay true: ukrun only ever adds or deletes its own container's table (`ukrun_<hash of the ID>`),
never flushes the ruleset or touches another table, so CNI's and other containers' rules are left alone.
Each change is one nft transaction: a table is replaced whole, and deleting an absent one is no error
(the table is declared, then deleted). The sysctls written are the namespace's forwarding switch, which
other guests of the pod need too, and the tap's own route_localnet, which goes with the tap. The caller's
thread is already inside the namespace (netlink.inside): nft and /proc/sys/net act there.
"""

from __future__ import annotations

import subprocess

from ukrun import crashpoints
from ukrun.errors import HostError
from ukrun.network import netlink, rtnl
from ukrun.network.base import Link, PortsLink

NFT = "nft"


def connect(sock: rtnl.Socket, tap: int, link: Link) -> None:
    netlink.add_address(sock, tap, link.host, link.prefixlen)
    crashpoints.point("create-after-address")
    _sysctl("ipv4/ip_forward", "1")
    if isinstance(link, PortsLink):  # what the pod's processes send to 127.0.0.1 crosses to the guest
        _sysctl(f"ipv4/conf/{link.tap}/route_localnet", "1")
    _nft(link.ruleset(), f"cannot set up the NAT rules of {link.table}")
    crashpoints.point("create-after-rules")


def disconnect(table: str) -> None:
    """Deletes the container's table, if it is there."""
    _nft(f"table ip {table}\ndelete table ip {table}\n", f"cannot delete the nftables table {table}")


def _sysctl(name: str, value: str) -> None:
    with open(f"/proc/sys/net/{name}", "w") as f:  # this thread's namespace: the container's
        f.write(value)


def _nft(stdin: str, what: str) -> None:
    try:
        proc = subprocess.run([NFT, "-f", "-"], input=stdin, capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise HostError(f"{what}: nft is not installed (Debian's nftables package provides it)") from None
    if proc.returncode != 0:
        raise HostError(f"{what}: {proc.stderr.strip()}")
