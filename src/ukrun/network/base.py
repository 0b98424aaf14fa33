"""The network facts a plan decides from and what a guest is told, as plain records (no netlink here).

A container's tap is named after its ID (`tapuk` + 10 hex digits of its hash, within the kernel's 15
characters) and carries the alias `ukrun:<container ID>` (in PORTS mode followed by the ports it claims,
network.ports): `delete` removes exactly its own container's tap, the filters that point at it and its
nftables table (`ukrun_` + the same hash), never another's.
"""

from __future__ import annotations

import enum
import ipaddress

from ukrun import digest
from ukrun.tuples import NamedTuple

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


# What an interface's name may hold to be written into an nftables rule, between double quotes, and read back as
# that very name: a quote would end the string (and what follows would be rules), a trailing * makes a wildcard of
# it, a backslash escapes. Linux allows any byte but '/', ':', whitespace and NUL in a name; a pod's processes with
# CAP_NET_ADMIN, or whoever made the namespace, may name its interfaces.
NFT_NAME = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._@-")


def nft_name(name: str) -> bool:
    """Whether nftables reads `name`, quoted, as that interface's name alone (see NFT_NAME)."""
    return bool(name) and not set(name) - NFT_NAME


def tap_name(container_id: str) -> str:
    return "tapuk" + digest.hexdigest(container_id.encode())[:10]


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
    guest through DNAT. PORTS: like STATIC, but the link's subnet is the container's own (network.ports),
    so several unikernels share a pod, each forwarded only the ports it declares, from the pod's address
    and from localhost."""

    DYNAMIC = "dynamic"
    STATIC = "static"
    PORTS = "ports"


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


class UkrunLink(NamedTuple):
    """A tap ukrun made in a namespace: its owner, the ports it claims (PORTS mode; none for a tap that
    takes the whole interface or the pod's static link) and the networks of its addresses (CIDR)."""

    tap: str
    container: str
    ports: tuple[Port, ...] = ()
    networks: tuple[str, ...] = ()


class NetnsFacts(NamedTuple):
    """What a plan reads of a network namespace: its default interface, ukrun's taps, and the networks
    that anything else in it uses (the other interfaces' addresses, the routes other than the default)."""

    interface: Interface | None
    links: tuple[UkrunLink, ...] = ()
    taken: tuple[str, ...] = ()


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

    @property
    def mode(self) -> NetworkMode:
        return NetworkMode.STATIC

    def ruleset(self) -> str:
        """nftables input for the link's rules: one table, the container's, replaced as a whole. The uplink's name
        is one nftables reads as such (netplan refuses any other: see NFT_NAME)."""
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
    return "ukrun_" + digest.hexdigest(container_id.encode())[:10]


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


class PortsLink(NamedTuple):
    """PORTS mode: the container's tap, its address and the guest's on their own subnet (network.ports),
    the pod's address the ports are forwarded from, the ports, and the nftables table (named after the
    container) that holds the rules."""

    tap: str
    host: str
    guest: str
    prefixlen: int
    pod: str
    ports: tuple[Port, ...]
    table: str

    @property
    def mode(self) -> NetworkMode:
        return NetworkMode.PORTS

    def ruleset(self) -> str:
        """nftables input, one table replaced as a whole: the ports DNATed to the guest from the pod's
        address (prerouting: from outside and from the pod's other guests) and, for the pod's own processes,
        from 127.0.0.1 and the pod's address (output); what reaches the tap from 127.0.0.0/8 leaves with the
        tap's address, so that the guest answers its gateway (the tap's route_localnet lets such packets
        through); the guest's own traffic leaves any other interface with that interface's address."""
        forwards = [f"{p.protocol.value} dport {p.number} dnat to {self.guest}" for p in self.ports]
        lines = [
            f"table ip {self.table}",
            f"delete table ip {self.table}",
            f"table ip {self.table} {{",
            "  chain prerouting {",
            "    type nat hook prerouting priority dstnat; policy accept;",
            *(f"    ip daddr {self.pod} {rule}" for rule in forwards),
            "  }",
            "  chain output {",
            "    type nat hook output priority -100; policy accept;",  # dstnat: nft 1.0.6 names it for prerouting only
            *(f"    ip daddr {{ 127.0.0.1, {self.pod} }} {rule}" for rule in forwards),
            "  }",
            "  chain postrouting {",
            "    type nat hook postrouting priority srcnat; policy accept;",
            f'    oifname "{self.tap}" ip saddr 127.0.0.0/8 masquerade',
            f'    ip saddr {self.guest} oifname != "{self.tap}" masquerade',
            "  }",
            "}",
        ]
        return "\n".join(lines) + "\n"


Link = StaticLink | PortsLink  # a guest on a private link behind the pod's interface
