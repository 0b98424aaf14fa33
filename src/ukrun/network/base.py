"""The network facts a plan decides from and what a guest is told, as plain records (no netlink here).

A container's tap is named after its ID (`tapuk` + 10 hex digits of its hash, within the kernel's 15
characters) and carries the alias `ukrun:<container ID>`: `delete` removes exactly its own container's
tap and the filters that point at it, never another's.
"""

from __future__ import annotations

import enum
import hashlib
import ipaddress
from typing import NamedTuple

ALIAS_PREFIX = "ukrun:"


class Interface(NamedTuple):
    """The container's interface that holds its default route, inside its network namespace."""

    name: str
    ifindex: int
    address: str
    prefixlen: int
    gateway: str
    mac: str
    mtu: int


class GuestNetwork(NamedTuple):
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


class NetworkMode(enum.Enum):
    """DYNAMIC: the guest takes over the container's interface (its address; all its traffic is redirected
    to the tap), as urunc's dynamic mode. STATIC: the guest sits on a private link behind the interface
    (172.16.1.2, masqueraded outwards), as urunc's static mode for Knative; the interface stays the
    namespace's, so other containers of the pod keep their connectivity, and published ports reach the
    guest through DNAT."""

    DYNAMIC = "dynamic"
    STATIC = "static"


class Protocol(enum.Enum):
    TCP = "tcp"
    UDP = "udp"


MODE_ANNOTATION = "io.ukrun.network"
PUBLISH_ANNOTATION = "io.ukrun.network.publish"
CRI_CONTAINER_NAME = "io.kubernetes.cri.container-name"
KNATIVE_CONTAINER = "user-container"  # urunc runs this one in static mode
LINK_HOST, LINK_GUEST, LINK_PREFIX = "172.16.1.1", "172.16.1.2", 24


class Port(NamedTuple):
    number: int
    protocol: Protocol

    def __str__(self) -> str:
        return f"{self.number}/{self.protocol.value}"


class StaticLink(NamedTuple):
    """STATIC mode: the tap's own address on the private link, the guest's, the uplink that outgoing
    traffic is masqueraded through, the ports DNATed from the uplink to the guest, and the nftables table
    (named after the container) that holds those rules."""

    host: str
    guest: str
    prefixlen: int
    uplink: str
    publish: tuple[Port, ...]
    table: str

    def ruleset(self) -> str:
        """nftables input for the link's rules: one table, the container's, replaced as a whole."""
        subnet = ipaddress.IPv4Network(f"{self.host}/{self.prefixlen}", strict=False)
        lines = [
            f"table ip {self.table}",  # made empty, then dropped: a table left by a crashed create is replaced
            f"delete table ip {self.table}",
            f"table ip {self.table} {{",
            "  chain postrouting {",
            "    type nat hook postrouting priority srcnat; policy accept;",
            f'    ip saddr {subnet} oifname "{self.uplink}" masquerade',
            "  }",
            "  chain prerouting {",
            "    type nat hook prerouting priority dstnat; policy accept;",
            *(f'    iifname "{self.uplink}" {p.protocol.value} dport {p.number} dnat to {self.guest}'
              for p in self.publish),
            "  }",
            "}",
        ]
        return "\n".join(lines) + "\n"


def nat_table(container_id: str) -> str:
    return "ukrun_" + hashlib.sha256(container_id.encode()).hexdigest()[:10]


def parse_publish(value: str) -> tuple[Port, ...]:
    """`8080/tcp,53/udp` (the protocol defaults to tcp). Raises ValueError naming what is wrong."""
    ports = []
    for item in (v.strip() for v in value.split(",")):
        if not item:
            continue
        number, _, proto = item.partition("/")
        try:
            protocol = Protocol(proto.lower() or "tcp")
        except ValueError:
            raise ValueError(f"{item!r}: the protocol must be tcp or udp") from None
        if not number.isdigit() or not 0 < int(number) < 65536:
            raise ValueError(f"{item!r}: the port must be a number from 1 to 65535") from None
        ports.append(Port(int(number), protocol))
    return tuple(dict.fromkeys(ports))
