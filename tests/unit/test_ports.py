"""PORTS mode, decided: which ports a container declares (and from where), the private link each unikernel
of a pod gets, the claim recorded on its tap, and the refusals that keep a pod's ports one guest's each.
The same checks run again under the namespace's lock at create (tests/integration/test_pod_ports.py)."""

from __future__ import annotations

import json
import re
from ipaddress import IPv4Network

import pytest

from tests.unit.test_plan import BLOCK_ROOT, IFACE, networked
from ukrun.errors import PlanError
from ukrun.network import ports
from ukrun.network.base import NetworkMode, Port, PortsLink, Protocol, UkrunLink, tap_name
from ukrun.runtime.plan import LaunchPlan, plan

TCP = Protocol.TCP
KUBELET = json.dumps([{"name": "http", "containerPort": 8080, "protocol": "TCP"}, {"containerPort": 53,
                                                                                   "protocol": "UDP"}])


def planned(annotations: dict[str, str], *, image_ports: tuple[str, ...] = (), links: tuple[UkrunLink, ...] = (),
            taken: tuple[str, ...] = (), cid: str = "c1") -> LaunchPlan:
    f = networked("linux", "qemu", rootfs=BLOCK_ROOT, mount_rootfs=True)
    return plan(f._replace(container_id=cid, annotations=tuple(annotations.items()), image_ports=image_ports,
                           links=links, taken=taken))


def forwarded(p: LaunchPlan) -> list[str]:
    assert isinstance(p.link, PortsLink), p.link
    return [str(port) for port in p.link.ports]


@pytest.mark.parametrize(("annotations", "image", "expect"), [
    ({"io.kubernetes.cri.container-name": "web", "io.ukrun.ports.web": "81", "io.ukrun.ports": "82",
      "io.kubernetes.container.ports": KUBELET}, ("84/tcp",), ["81/tcp"]),
    ({"io.kubernetes.cri.container-name": "db", "io.ukrun.ports.web": "81", "io.ukrun.ports": "82/udp",
      "io.kubernetes.container.ports": KUBELET}, ("84/tcp",), ["82/udp"]),
    ({"io.kubernetes.container.ports": KUBELET}, ("84/tcp",), ["8080/tcp", "53/udp"]),
    ({}, ("84/tcp", "85/udp"), ["84/tcp", "85/udp"]),
])
def test_declared_ports_come_from_the_first_source_present(annotations: dict[str, str], image: tuple[str, ...],
                                                           expect: list[str]) -> None:
    assert forwarded(planned(annotations, image_ports=image)) == expect


def test_without_declared_ports_the_guest_takes_the_interface_as_before() -> None:
    assert planned({}).link is None
    # Present but empty declares none, over the image's ExposedPorts; so does io.ukrun.network=dynamic.
    assert planned({"io.ukrun.ports": ""}, image_ports=("80/tcp",)).link is None
    assert planned({"io.ukrun.network": "dynamic", "io.ukrun.ports": "80"}).link is None
    # Knative's user-container keeps urunc's static mode whatever it declares.
    knative = planned({"io.kubernetes.cri.container-name": "user-container", "io.kubernetes.container.ports": KUBELET})
    assert knative.link is not None and knative.link.mode is NetworkMode.STATIC


def test_the_image_is_read_only_when_nothing_earlier_decides() -> None:
    assert ports.needs_image({})
    assert ports.needs_image({"io.kubernetes.cri.container-name": "web", "io.ukrun.ports.db": "80"})
    for decided in ({"io.ukrun.ports": ""}, {"io.ukrun.network": "dynamic"}, {"io.kubernetes.container.ports": "[]"},
                    {"io.kubernetes.cri.container-name": "user-container"},
                    {"io.kubernetes.cri.container-name": "web", "io.ukrun.ports.web": "80"}):
        assert not ports.needs_image(decided), decided


def test_a_guest_with_ports_gets_a_private_link_of_its_own_and_only_its_ports() -> None:
    p = planned({"io.ukrun.ports": "8080,53/udp"})
    link = p.link
    assert isinstance(link, PortsLink) and p.network is not None
    net = IPv4Network(f"{link.host}/30", strict=False)
    assert net.subnet_of(ports.POOL) and link.prefixlen == 30 and link.tap == tap_name("c1") == p.network.tap
    assert (p.network.address, p.network.gateway) == (str(net.network_address + 2), str(net.network_address + 1))
    assert f"ip={link.guest}::{link.host}:255.255.255.252:urunc:eth0:off" in p.cmdline
    assert p.network.mac == ports.mac("c1") and p.network.mac.startswith("02:") and p.network.mac != IFACE.mac
    assert link.pod == IFACE.address and link.table.startswith("ukrun_")
    rules = link.ruleset()
    assert rules.startswith(f"table ip {link.table}\ndelete table ip {link.table}\n")
    assert f"ip daddr 192.0.2.2 tcp dport 8080 dnat to {link.guest}" in rules
    assert f"ip daddr 192.0.2.2 udp dport 53 dnat to {link.guest}" in rules
    assert f"ip daddr {{ 127.0.0.1, 192.0.2.2 }} tcp dport 8080 dnat to {link.guest}" in rules
    assert f'oifname "{link.tap}" ip saddr 127.0.0.0/8 masquerade' in rules
    assert f'ip saddr {link.guest} oifname != "{link.tap}" masquerade' in rules
    shown = p.to_json()["network"]
    assert shown["mode"] == "ports" and shown["address"] == f"{link.guest}/30"
    assert shown["private_link"] == {"tap": link.tap, "host": f"{link.host}/30", "guest": f"{link.guest}/30"}
    assert shown["forward"] == {"ports": ["8080/tcp", "53/udp"], "from": ["192.0.2.2", "127.0.0.1"],
                                "table": link.table}
    assert any("forwarded to it from 192.0.2.2 (eth0) and from 127.0.0.1" in n for n in p.notes)


def test_each_unikernel_of_a_pod_gets_its_own_subnet_deterministically() -> None:
    first = planned({"io.ukrun.ports": "80"}, cid="a")
    assert first == planned({"io.ukrun.ports": "80"}, cid="a")
    assert isinstance(first.link, PortsLink)
    mine = f"{first.link.host}/30"
    # The same slot is taken by another unikernel's tap, by a route, or holds the pod's resolver: the next.
    for crowd in ({"links": (UkrunLink("tapukx", "b", (Port(81, TCP),), (mine,)),)}, {"taken": (mine,)}):
        moved = planned({"io.ukrun.ports": "80"}, cid="a", **crowd)
        assert isinstance(moved.link, PortsLink)
        assert IPv4Network(f"{moved.link.host}/30", strict=False).network_address == \
            IPv4Network(mine, strict=False).network_address + 4
    resolver = ports.subnet("a", ports.busy("a", (), (), (first.link.guest,)))
    assert str(resolver) != mine
    with pytest.raises(PlanError, match=re.escape("uses 100.64.0.0/10, which covers 100.127.0.0/16")):
        planned({"io.ukrun.ports": "80"}, taken=("100.64.0.0/10",))


def test_several_unikernels_share_a_pod_each_port_going_to_one() -> None:
    other = UkrunLink(tap_name("web"), "web", (Port(8080, TCP),), ("100.127.9.0/30",))
    assert forwarded(planned({"io.ukrun.ports": "8081"}, links=(other,))) == ["8081/tcp"]
    with pytest.raises(PlanError, match="port 8080/tcp is already forwarded to unikernel web in the network namespace"):
        planned({"io.ukrun.ports": "8081,8080"}, links=(other,))
    with pytest.raises(PlanError, match="already carries unikernel web, and this one declares no ports, so it would "
                                        "take the whole interface"):
        planned({}, links=(other,))
    with pytest.raises(PlanError, match="would take the pod's private link"):
        planned({"io.ukrun.network": "static"}, links=(other,))
    whole = UkrunLink(tap_name("old"), "old")
    with pytest.raises(PlanError, match="already carries unikernel old, which takes the whole interface"):
        planned({"io.ukrun.ports": "8081"}, links=(whole,))
    # Its own tap, left by a crashed create of the same container, is no obstacle.
    assert forwarded(planned({"io.ukrun.ports": "8080"}, links=(other._replace(container="c1"),))) == ["8080/tcp"]


def test_the_claim_on_the_tap_reads_back_and_anything_unreadable_takes_the_namespace() -> None:
    claims = (Port(8080, TCP), Port(9000, TCP), Port(9001, TCP), Port(9002, TCP), Port(53, Protocol.UDP))
    label = ports.link_label("c1", claims)
    assert label == "ukrun:c1 tcp:8080,9000-9002 udp:53"
    found = ports.parse_label(label)
    assert found is not None and found.container == "c1" and set(found.ports) == set(claims)
    assert ports.link_label("c1", ()) == "ukrun:c1"  # a dynamic or static tap: as ukrun always labelled it
    for unreadable in ("ukrun:c1", "ukrun:c1 tcp:80-x", "ukrun:c1 sctp:80", "ukrun:c1 tcp:0"):
        assert ports.parse_label(unreadable) == UkrunLink("", "c1"), unreadable
    assert ports.parse_label("cni:eth0") is None
    with pytest.raises(PlanError, match="over the kernel's 255: declare fewer ports"):
        planned({"io.ukrun.ports": ",".join(str(p) for p in range(1000, 1200, 2))})


@pytest.mark.parametrize(("annotations", "message"), [
    ({"io.ukrun.ports": "http"}, "annotation io.ukrun.ports: 'http': the port must be a number"),
    ({"io.kubernetes.container.ports": "{"}, "not the kubelet's JSON list of container ports"),
    ({"io.kubernetes.container.ports": '[{"containerPort": 0}]'}, "containerPort must be a number from 1 to 65535"),
    ({"io.kubernetes.container.ports": '[{"containerPort": 9, "protocol": "SCTP"}]'},
     "port 9/SCTP: ukrun forwards TCP and UDP to a unikernel"),
    ({"io.ukrun.network": "ports"}, "io.ukrun.network=ports, but the container declares no ports"),
])
def test_bad_declarations_are_refused_naming_the_fix(annotations: dict[str, str], message: str) -> None:
    with pytest.raises(PlanError, match=re.escape(message)):
        planned(annotations)


def test_what_an_image_exposes_beyond_tcp_and_udp_is_left_out_with_a_note() -> None:
    p = planned({}, image_ports=("8080/tcp", "9/sctp"))
    assert forwarded(p) == ["8080/tcp"]
    assert any("ExposedPorts 9/sctp left out" in n for n in p.notes)
    alone = planned({}, image_ports=("9/sctp",))
    assert alone.link is None and any("ExposedPorts 9/sctp left out" in n for n in alone.notes)
