"""The guest's network, decided: a pure part of `runtime.plan`, from the namespace's facts, the spec's
annotations and the image's ExposedPorts. DYNAMIC takes over the pod's interface and STATIC puts the guest
on the pod's one private link (see network.base): either takes the namespace whole. PORTS gives the guest
a private link of its own and forwards only its declared ports (network.ports), so several unikernels and
ordinary containers share a pod.

The mode: `io.ukrun.network` when set; else static for Knative's user-container (as urunc); else ports
when the container declares any (network.ports' precedence); else dynamic, as before ports existed.
"""

from __future__ import annotations

from ukrun.errors import PlanError
from ukrun.network import ports as portsmod
from ukrun.network.base import (
    CRI_CONTAINER_NAME,
    KNATIVE_CONTAINER,
    LINK_GUEST,
    LINK_HOST,
    LINK_PREFIX,
    MODE_ANNOTATION,
    PUBLISH_ANNOTATION,
    GuestNetwork,
    Interface,
    Link,
    NetworkMode,
    PortsLink,
    StaticLink,
    UkrunLink,
    first_nameserver,
    nat_table,
    nft_name,
    parse_publish,
    tap_name,
)

NetPlan = tuple[GuestNetwork | None, Link | None, tuple[str, ...]]


def network_plan(container_id: str, netns: str, interface: Interface | None, links: tuple[UkrunLink, ...],
                 taken: tuple[str, ...], annotations: tuple[tuple[str, str], ...],
                 etc_files: tuple[tuple[str, bytes], ...], image_ports: tuple[str, ...] = (),
                 owner: str = "") -> NetPlan:
    """The guest's network in the container's namespace (see the module's docstring). A namespace that is
    not a container's (`owner`: ukrun's own or the host's) is refused: every mode would turn the node's own
    interface over to the guest or put rules on it."""
    if not netns:
        return None, None, ("the spec names no network namespace: the guest gets no network",)
    if owner:
        raise PlanError(f"the spec's network namespace {netns} is {owner} network namespace, not a container's: "
                        "the guest would take over the node's interface; give the container a namespace of its "
                        "own (a pod's, or one made with `ip netns add NAME` and named as /run/netns/NAME)")
    if interface is None:
        return None, None, (f"no interface with a default route in {netns}: the guest gets no network",)
    iface = interface
    dns = next((first_nameserver(data) for path, data in etc_files if path == "/etc/resolv.conf"), "")
    given = dict(annotations)
    mode, declared = _network_mode(given, image_ports)
    portsmod.check_room(container_id, netns, mode, declared.ports, links)
    tap = tap_name(container_id)
    if mode is not NetworkMode.STATIC and PUBLISH_ANNOTATION in given:
        raise PlanError(f"annotation {PUBLISH_ANNOTATION} needs {MODE_ANNOTATION}=static; to forward a unikernel's "
                        f"ports to it on a private link of its own, declare them with {portsmod.PORTS_ANNOTATION}")
    if mode is NetworkMode.DYNAMIC:
        guest_net = GuestNetwork(tap, iface.mac, iface.address, iface.prefixlen, iface.gateway, iface.mtu, dns)
        return guest_net, None, declared.notes
    if mode is NetworkMode.STATIC:
        return _static(container_id, netns, iface, given, dns)
    portsmod.check_label(container_id, declared.ports)
    net = portsmod.subnet(container_id, portsmod.busy(container_id, links, taken, (dns,)))
    host, guest = str(net.network_address + 1), str(net.network_address + 2)
    link = PortsLink(tap, host, guest, net.prefixlen, iface.address, declared.ports, nat_table(container_id))
    listed = ", ".join(str(p) for p in declared.ports)
    note = (f"ports: the guest is {guest}/{net.prefixlen} on its private link {tap} (gateway {host}); {listed} "
            f"({declared.source}) forwarded to it from {iface.address} ({iface.name}) and from 127.0.0.1; its own "
            f"traffic leaves with {iface.address}")
    guest_net = GuestNetwork(tap, portsmod.mac(container_id), guest, net.prefixlen, host, iface.mtu, dns)
    return guest_net, link, (*declared.notes, note)


def _static(container_id: str, netns: str, iface: Interface, given: dict[str, str], dns: str) -> NetPlan:
    if not nft_name(iface.name):
        raise PlanError(f"static network: the interface {iface.name!r} of {netns}, which its rules would name, holds "
                        "characters that nftables would not read as a name (a quote, *, a backslash, ...); rename it "
                        "with letters, digits, '.', '_', '@' and '-' only, or give the guest another network mode "
                        f"({MODE_ANNOTATION}=ports or dynamic)")
    try:
        publish = parse_publish(given.get(PUBLISH_ANNOTATION, ""))
    except ValueError as exc:
        raise PlanError(f"annotation {PUBLISH_ANNOTATION}: {exc}") from None
    link = StaticLink(LINK_HOST, LINK_GUEST, LINK_PREFIX, iface.name, publish, nat_table(container_id))
    ports = ", ".join(str(p) for p in publish) or "none"
    note = (f"static network: the guest is {LINK_GUEST} behind {iface.name} ({iface.address}), masqueraded "
            f"outwards; ports published from {iface.name}: {ports}")
    return GuestNetwork(tap_name(container_id), iface.mac, LINK_GUEST, LINK_PREFIX, LINK_HOST, iface.mtu, dns), link, \
        (note,)


def _network_mode(annotations: dict[str, str], image_ports: tuple[str, ...]) -> tuple[NetworkMode, portsmod.Declared]:
    """The mode, and the declared ports that PORTS mode forwards (none in the other modes)."""
    none = portsmod.Declared((), "")
    value = annotations.get(MODE_ANNOTATION, "")
    if value:
        try:
            mode = NetworkMode(value)
        except ValueError:
            choices = ", ".join(m.value for m in NetworkMode)
            raise PlanError(f"annotation {MODE_ANNOTATION}={value!r} is not one of {choices}") from None
        if mode is not NetworkMode.PORTS:
            return mode, none
        found = portsmod.declared(annotations, image_ports)
        if not found.ports:
            raise PlanError(f"annotation {MODE_ANNOTATION}=ports, but the container declares no ports: declare them "
                            f"with {portsmod.PORTS_ANNOTATION}, the container's ports or the image's ExposedPorts")
        return mode, found
    if annotations.get(CRI_CONTAINER_NAME) == KNATIVE_CONTAINER:
        return NetworkMode.STATIC, none  # Knative's queue-proxy reaches the guest on the pod's private link
    found = portsmod.declared(annotations, image_ports)
    return (NetworkMode.PORTS if found.ports else NetworkMode.DYNAMIC), found
