"""PORTS mode, decided (pure): the ports a unikernel container declares, the private subnet it gets in its
pod's network namespace, the claim recorded on its tap, and whether it may join the namespace at all.

Declared ports, the first source present wins (present but empty declares none):
1. `io.ukrun.ports.<name>`: a pod annotation for the pod's container called <name>
   (`io.kubernetes.cri.container-name`), since Kubernetes lets users annotate pods, not containers;
2. `io.ukrun.ports`: the container's own annotation (`ctr run --annotation`), or a pod's, which the runtime
   handler passes to each of its containers;
3. `io.kubernetes.container.ports`: the kubelet's JSON record of the container's `ports:` in the pod spec,
   a container annotation that reaches ukrun when the handler's `container_annotations` lists it;
4. the image's `ExposedPorts`.
SCTP is not forwarded: declared in an annotation it is refused; in an image's ExposedPorts it is left out.

Each unikernel with ports gets a /30 of POOL: its tap the first address, the guest the second. The slot
comes from the hash of the container ID, then the following slots in turn until one overlaps nothing in
the namespace (addresses, routes, the resolver, other taps): deterministic for a given namespace, and
never a subnet another unikernel or the pod's own network uses.

The claim is the tap's alias: `ukrun:<ID> tcp:8080,9000-9010 udp:53`. It lives in the namespace itself,
so every runtime root sees it, and it goes with the tap. A ukrun alias without a readable claim (a
dynamic or static tap, or one labelled by an older ukrun) takes the whole namespace.

What must stay true: a port of a pod is forwarded to one guest only; a namespace carries either one
unikernel that takes it whole (dynamic, static) or any number with ports. `check_room` and `check_subnet`
decide it at plan time from the facts, and again under the namespace's lock right before the tap is made
(network.connect), with the same code.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Mapping
from ipaddress import IPv4Network

from ukrun import digest
from ukrun.errors import PlanError
from ukrun.network.base import (
    ALIAS_PREFIX,
    CRI_CONTAINER_NAME,
    KNATIVE_CONTAINER,
    MODE_ANNOTATION,
    NetworkMode,
    Port,
    PortsLink,
    Protocol,
    UkrunLink,
    parse_publish,
)
from ukrun.tuples import NamedTuple

PORTS_ANNOTATION = "io.ukrun.ports"
KUBELET_PORTS = "io.kubernetes.container.ports"  # set by the kubelet on every container with `ports:`
EXPOSED = "the image's ExposedPorts"
POOL = IPv4Network("100.127.0.0/16")  # the top of the shared address space (RFC 6598), rarely a cluster's
PREFIX = 30
LABEL_LIMIT = 255  # IFALIASZ, less its NUL


class Declared(NamedTuple):
    ports: tuple[Port, ...]
    source: str  # where they were declared, for notes and errors
    notes: tuple[str, ...] = ()


def name_annotation(container_name: str) -> str:
    return f"{PORTS_ANNOTATION}.{container_name}"


def needs_image(annotations: Mapping[str, str]) -> bool:
    """Whether the plan may need the image's ExposedPorts: nothing earlier declares ports or the mode."""
    if MODE_ANNOTATION in annotations or annotations.get(CRI_CONTAINER_NAME) == KNATIVE_CONTAINER:
        return False
    return _annotation_source(annotations) is None


def declared(annotations: Mapping[str, str], image_ports: tuple[str, ...]) -> Declared:
    """The container's declared ports, by the precedence above. Raises PlanError naming a bad value."""
    source = _annotation_source(annotations)
    if source is None:
        return _exposed(image_ports)
    value = annotations[source]
    try:
        ports = parse_kubelet(value) if source == KUBELET_PORTS else parse_publish(value)
    except ValueError as exc:
        raise PlanError(f"annotation {source}: {exc}") from None
    return Declared(ports, f"annotation {source}")


def _annotation_source(annotations: Mapping[str, str]) -> str | None:
    name = annotations.get(CRI_CONTAINER_NAME, "")
    keys = ((name_annotation(name),) if name else ()) + (PORTS_ANNOTATION, KUBELET_PORTS)
    return next((k for k in keys if k in annotations), None)


def parse_kubelet(value: str) -> tuple[Port, ...]:
    """The kubelet's `[{"containerPort": 8080, "protocol": "TCP"}, ...]` (the protocol defaults to TCP)."""
    try:
        entries = json.loads(value)
    except ValueError:
        raise ValueError("not the kubelet's JSON list of container ports") from None
    if not isinstance(entries, list):
        raise ValueError("not the kubelet's JSON list of container ports")
    ports = []
    for e in entries:
        number = e.get("containerPort") if isinstance(e, dict) else None
        proto = str(e.get("protocol") or "TCP") if isinstance(e, dict) else ""
        if not isinstance(number, int) or isinstance(number, bool) or not 0 < number < 65536:
            raise ValueError(f"{e!r}: containerPort must be a number from 1 to 65535")
        try:
            ports.append(Port(number, Protocol(proto.lower())))
        except ValueError:
            raise ValueError(f"port {number}/{proto}: ukrun forwards TCP and UDP to a unikernel; drop it from the "
                             "container's ports or set io.ukrun.ports") from None
    return tuple(dict.fromkeys(ports))


def _exposed(keys: tuple[str, ...]) -> Declared:
    """The image's ExposedPorts (`8080/tcp`); what is not a TCP or UDP port is left out, with a note."""
    ports: list[Port] = []
    skipped: list[str] = []
    for key in keys:
        try:
            ports += parse_publish(key)
        except ValueError:
            skipped.append(key)
    notes = (f"{EXPOSED} {', '.join(skipped)} left out: ukrun forwards TCP and UDP ports only",) if skipped else ()
    return Declared(tuple(dict.fromkeys(ports)), EXPOSED, notes)


def check_room(container_id: str, netns: str, mode: NetworkMode, ports: tuple[Port, ...],
               links: Iterable[UkrunLink]) -> None:
    """Refuses, naming the other container, a unikernel that the namespace's other unikernels leave no room
    for: one that takes the namespace whole beside any other, or a port another one already has."""
    others = [link for link in links if link.container != container_id]  # its own: from a crashed create
    whole = next((link for link in others if not link.ports), None)
    if whole is not None:
        raise PlanError(f"the network namespace {netns} already carries unikernel {whole.container}, which takes "
                        "the whole interface (dynamic) or the pod's private link (static): ukrun runs one such "
                        "unikernel per network namespace; declare the ports each unikernel serves (io.ukrun.ports, "
                        "the container's ports or the image's ExposedPorts), or run this one in a pod of its own")
    if others and mode is not NetworkMode.PORTS:
        how = "the pod's private link (static mode)" if mode is NetworkMode.STATIC else "the whole interface"
        raise PlanError(f"the network namespace {netns} already carries unikernel {others[0].container}, and this "
                        f"one declares no ports, so it would take {how}: declare the ports it serves "
                        "(io.ukrun.ports, the container's ports or the image's ExposedPorts)")
    for link in others:
        for port in ports:
            if port in link.ports:
                raise PlanError(f"port {port} is already forwarded to unikernel {link.container} in the network "
                                f"namespace {netns}: a port of a pod reaches one unikernel only; give this one "
                                "other ports, or run it in a pod of its own")


def busy(container_id: str, links: Iterable[UkrunLink], taken: Iterable[str],
         addresses: Iterable[str] = ()) -> tuple[IPv4Network, ...]:
    """The networks a new subnet must not overlap: what others use in the namespace and `addresses`."""
    nets = [n for link in links if link.container != container_id for n in link.networks]
    nets += [*taken, *(f"{a}/32" for a in addresses if _ipv4(a))]
    return tuple(IPv4Network(n, strict=False) for n in nets)


def subnet(container_id: str, used: tuple[IPv4Network, ...]) -> IPv4Network:
    """The container's /30: its hash's slot of POOL, or the next free one."""
    covering = next((n for n in used if POOL.subnet_of(n)), None)
    if covering is not None:
        raise PlanError(f"the network namespace uses {covering}, which covers {POOL}, where ukrun takes each "
                        "unikernel's private link: a unikernel with declared ports cannot run in it")
    slots = POOL.num_addresses >> (32 - PREFIX)
    start = int(digest.hexdigest(container_id.encode())[:8], 16) % slots
    near = [n for n in used if n.overlaps(POOL)]
    for i in range(slots):
        candidate = IPv4Network((int(POOL.network_address) + ((start + i) % slots << (32 - PREFIX)), PREFIX))
        if not any(candidate.overlaps(n) for n in near):
            return candidate
    raise PlanError(f"no free /{PREFIX} left in {POOL} in this network namespace: too many unikernels in one pod")


def check_subnet(link: PortsLink, used: tuple[IPv4Network, ...]) -> None:
    """Refuses a link whose subnet something else took since the plan (a concurrent create)."""
    mine = IPv4Network(f"{link.host}/{link.prefixlen}", strict=False)
    clash = next((n for n in used if mine.overlaps(n)), None)
    if clash is not None:
        raise PlanError(f"the private link {mine} planned for this unikernel overlaps {clash}, which appeared in the "
                        "network namespace meanwhile: create the container again to get another subnet")


def link_label(container_id: str, ports: tuple[Port, ...]) -> str:
    """The tap's alias: ukrun's label and the claimed ports, runs of consecutive ports as ranges."""
    groups = []
    for protocol in Protocol:
        numbers = sorted(p.number for p in ports if p.protocol is protocol)
        if numbers:
            groups.append(f"{protocol.value}:{','.join(_runs(numbers))}")
    return " ".join([ALIAS_PREFIX + container_id, *groups])


def check_label(container_id: str, ports: tuple[Port, ...]) -> None:
    size = len(link_label(container_id, ports).encode())
    if size > LABEL_LIMIT:
        raise PlanError(f"the {len(ports)} declared ports take {size} bytes on the tap's label, over the kernel's "
                        f"{LABEL_LIMIT}: declare fewer ports, or consecutive ones (they are recorded as ranges)")


def parse_label(label: str) -> UkrunLink | None:
    """The owner and claims of a ukrun alias (no claims when they cannot be read); None: not ukrun's."""
    if not label.startswith(ALIAS_PREFIX):
        return None
    owner, *groups = label.removeprefix(ALIAS_PREFIX).split(" ")
    ports: list[Port] = []
    try:
        for group in groups:
            proto, _, numbers = group.partition(":")
            for run in numbers.split(","):
                first, _, last = run.partition("-")
                ports += (Port(n, Protocol(proto)) for n in range(int(first), int(last or first) + 1))
    except ValueError:
        ports = []
    return UkrunLink("", owner, tuple(ports) if all(0 < p.number < 65536 for p in ports) else ())


def mac(container_id: str) -> str:
    """A locally administered unicast MAC for the guest, from the container ID."""
    hashed = digest.digest(container_id.encode())
    return ":".join(f"{b:02x}" for b in (0x02, *hashed[:5]))


def _runs(numbers: list[int]) -> list[str]:
    out: list[list[int]] = []
    for n in numbers:
        if out and n == out[-1][1] + 1:
            out[-1][1] = n
        else:
            out.append([n, n])
    return [str(a) if a == b else f"{a}-{b}" for a, b in out]


def _ipv4(address: str) -> bool:
    try:
        ipaddress.IPv4Address(address)
    except ValueError:
        return False
    return True
