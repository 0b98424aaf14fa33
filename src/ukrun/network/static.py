"""STATIC network mode, applied inside the container's network namespace: the tap gets the private
link's host address, the namespace forwards, and one nftables table named after the container
masquerades the guest's traffic out of the uplink and DNATs the published ports to the guest.

What must stay true: ukrun only ever adds or deletes its own container's table (`ukrun_<hash of the ID>`),
never flushes the ruleset or touches another table, so CNI's and other containers' rules are left alone;
removing the table is idempotent. The caller's thread is already inside the namespace (netlink.inside):
children it starts (nft) run there too.
"""

from __future__ import annotations

import json
import subprocess

from ukrun.errors import HostError
from ukrun.network import netlink, rtnl
from ukrun.network.base import StaticLink

NFT = "nft"


def connect(sock: rtnl.Socket, tap: int, link: StaticLink) -> None:
    netlink.add_address(sock, tap, link.host, link.prefixlen)
    with open("/proc/sys/net/ipv4/ip_forward", "w") as f:  # this thread's namespace: the container's
        f.write("1")
    _nft(["-f", "-"], link.ruleset(), f"cannot set up the NAT rules of {link.table}")


def disconnect(table: str) -> None:
    """Deletes the container's table when it is there."""
    listed = _nft(["--json", "list", "tables", "ip"], "", "cannot list the namespace's nftables tables")
    names = {t["table"]["name"] for t in json.loads(listed).get("nftables", []) if "table" in t}
    if table in names:
        _nft(["delete", "table", "ip", table], "", f"cannot delete the nftables table {table}")


def _nft(args: list[str], stdin: str, what: str) -> str:
    try:
        proc = subprocess.run([NFT, *args], input=stdin, capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise HostError(f"{what}: nft is not installed (Debian's nftables package provides it)") from None
    if proc.returncode != 0:
        raise HostError(f"{what}: {proc.stderr.strip()}")
    return proc.stdout
