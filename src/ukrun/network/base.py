"""The network facts a plan decides from and what a guest is told, as plain records (no netlink here).

A container's tap is named after its ID (`tapuk` + 10 hex digits of its hash, within the kernel's 15
characters) and carries the alias `ukrun:<container ID>`: `delete` removes exactly its own container's
tap and the filters that point at it, never another's.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass

ALIAS_PREFIX = "ukrun:"


@dataclass(frozen=True)
class Interface:
    """The container's interface that holds its default route, inside its network namespace."""

    name: str
    index: int
    address: str
    prefixlen: int
    gateway: str
    mac: str
    mtu: int


@dataclass(frozen=True)
class GuestNetwork:
    """What the guest is told, and the tap its monitor opens."""

    tap: str
    mac: str
    address: str
    prefixlen: int
    gateway: str
    mtu: int
    dns: str = ""

    @property
    def mask(self) -> str:
        return str(ipaddress.IPv4Network(f"0.0.0.0/{self.prefixlen}").netmask)

    @property
    def cidr(self) -> str:
        return f"{self.address}/{self.prefixlen}"


def tap_name(container_id: str) -> str:
    return "tapuk" + hashlib.sha256(container_id.encode()).hexdigest()[:10]


def alias(container_id: str) -> str:
    return ALIAS_PREFIX + container_id


def first_nameserver(resolv_conf: bytes) -> str:
    for line in resolv_conf.decode(errors="replace").splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "nameserver":
            return words[1]
    return ""
