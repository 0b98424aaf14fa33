"""The guest's network, decided: a pure part of `runtime.plan`, from the namespace's facts and the spec's
annotations. DYNAMIC takes over the pod's interface, STATIC puts the guest on a private link behind it
(see network.base); either way a network namespace carries one unikernel, since its tap takes the
interface's traffic or the pod's private link.
"""

from __future__ import annotations

from ukrun.errors import PlanError
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
    NetworkMode,
    StaticLink,
    first_nameserver,
    nat_table,
    parse_publish,
    tap_name,
)


def network_plan(container_id: str, netns: str, interface: Interface | None, taps: tuple[tuple[str, str], ...],
                 annotations: tuple[tuple[str, str], ...], etc_files: tuple[tuple[str, bytes], ...],
                 owner: str = "") -> tuple[GuestNetwork | None, StaticLink | None, tuple[str, ...]]:
    """The guest's network in the container's namespace: DYNAMIC takes over the interface (urunc's dynamic
    mode), STATIC puts the guest on a private link behind it (urunc's static mode; see network.base).
    One unikernel per network namespace: the tap's link and its rules are the namespace's. A namespace
    that is not a container's (`owner`: ukrun's own or the host's) is refused: either mode would turn the
    node's own interface over to the guest or put rules on it."""
    if not netns:
        return None, None, ("the spec names no network namespace: the guest gets no network",)
    if owner:
        raise PlanError(f"the spec's network namespace {netns} is {owner} network namespace, not a container's: "
                        "the guest would take over the node's interface; give the container a namespace of its "
                        "own (a pod's, or one made with `ip netns add NAME` and named as /run/netns/NAME)")
    if interface is None:
        return None, None, (f"no interface with a default route in {netns}: the guest gets no network",)
    tap = tap_name(container_id)
    others = [c for t, c in taps if t != tap]
    if others:
        raise PlanError(f"the network namespace {netns} already carries unikernel {others[0]}: ukrun runs "
                        "one unikernel per network namespace (pod), since its tap takes the interface's traffic "
                        "(dynamic) or the pod's private link (static); run this one in a pod of its own")
    iface = interface
    dns = next((first_nameserver(data) for path, data in etc_files if path == "/etc/resolv.conf"), "")
    given = dict(annotations)
    mode = _network_mode(given)
    try:
        publish = parse_publish(given.get(PUBLISH_ANNOTATION, ""))
    except ValueError as exc:
        raise PlanError(f"annotation {PUBLISH_ANNOTATION}: {exc}") from None
    if mode is NetworkMode.DYNAMIC:
        if publish:
            raise PlanError(f"annotation {PUBLISH_ANNOTATION} needs {MODE_ANNOTATION}=static: in dynamic mode "
                            "the guest already receives all of the interface's traffic")
        return GuestNetwork(tap, iface.mac, iface.address, iface.prefixlen, iface.gateway, iface.mtu, dns), None, ()
    link = StaticLink(LINK_HOST, LINK_GUEST, LINK_PREFIX, iface.name, publish, nat_table(container_id))
    ports = ", ".join(str(p) for p in publish) or "none"
    note = (f"static network: the guest is {LINK_GUEST} behind {iface.name} ({iface.address}), masqueraded "
            f"outwards; ports published from {iface.name}: {ports}")
    return GuestNetwork(tap, iface.mac, LINK_GUEST, LINK_PREFIX, LINK_HOST, iface.mtu, dns), link, (note,)


def _network_mode(annotations: dict[str, str]) -> NetworkMode:
    value = annotations.get(MODE_ANNOTATION, "")
    if value:
        try:
            return NetworkMode(value)
        except ValueError:
            choices = ", ".join(m.value for m in NetworkMode)
            raise PlanError(f"annotation {MODE_ANNOTATION}={value!r} is not one of {choices}") from None
    if annotations.get(CRI_CONTAINER_NAME) == KNATIVE_CONTAINER:
        return NetworkMode.STATIC  # Knative's queue-proxy reaches the guest on the pod's private link
    return NetworkMode.DYNAMIC
