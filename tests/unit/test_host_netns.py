"""A spec that names the node's own network namespace (ukrun's, or PID 1's) is refused: the guest would
take over the node's interface. The namespace is told by its file's identity, whatever path names it."""

from __future__ import annotations

import os

import pytest

from tests.unit.test_plan import networked
from ukrun.errors import PlanError
from ukrun.runtime.facts import namespace_owner
from ukrun.runtime.plan import plan


def test_the_runtimes_own_namespace_is_known_by_any_path_to_it() -> None:
    assert namespace_owner("/proc/self/ns/net") == "ukrun's own"
    assert namespace_owner(f"/proc/{os.getpid()}/ns/net") == "ukrun's own"
    assert namespace_owner(f"/proc/{os.getppid()}/ns/net") in ("ukrun's own", "")  # the parent's, if the same
    assert namespace_owner("/nonexistent/netns") == ""  # reading its interface says why
    assert namespace_owner("/proc/self/ns/mnt") == ""  # another namespace file: not the network's


@pytest.mark.parametrize("owner", ["ukrun's own", "the host's"])
def test_a_plan_in_the_nodes_own_namespace_is_refused(owner: str) -> None:
    facts = networked("linux", "qemu")._replace(netns="/proc/4242/ns/net", netns_owner=owner)
    with pytest.raises(PlanError, match=f"^the spec's network namespace /proc/4242/ns/net is {owner} network "
                                        "namespace, not a container's: the guest would take over the node's "
                                        "interface; give the container a namespace of its own"):
        plan(facts)
    assert plan(facts._replace(netns_owner="")).network is not None
