"""A network that arrives between `create` and `start`. Docker (libnetwork) lets the runtime make the
container's network namespace (its spec names a new one, with no path to join), then moves the
container's interface into it through `/proc/<init>/ns/net` after `create` returns and before `start`.
`create` sees an empty namespace: it plans without a network, and keeps the facts it planned from
(`network.facts`, beside the record). `start` then finds a default route in the init's namespace
(`runtime.hot`, from /proc alone), plans again from the same facts with that namespace's interface, makes
the tap and its redirection there as `create` does for a namespace named by path, and rewrites the
launch configuration; the init reads it again once `start` lets it go on (ukrun.launcher).

What must stay true: all of this happens before `start` opens the exec FIFO, so the monitor never starts
with the plan made without the network; the namespace is the container's own and dies with its holder,
so `delete` has nothing to remove there (runtime.verbs); the facts file is written by `create` only, in
the container's state folder under the runtime root, which nobody else writes. It is written with
`_pickle`, pickle's C half, which pickle itself re-exports: every `ctr run` container keeps its facts (a
new namespace, no path), and pickle's own import cost a create without a helper 2.8 ms against 1.1.
"""

from __future__ import annotations

import os
from pathlib import Path

from ukrun.launchconfig import LaunchConfig
from ukrun.runtime import state as st

TYPE_CHECKING = False  # not typing's, whose import costs a create without a helper about 2 ms
if TYPE_CHECKING:
    from ukrun.runtime.plan import Facts

FACTS = st.NETWORK_FACTS


def deferred(namespaces: tuple[tuple[str, str], ...]) -> bool:
    """Whether the container gets a network namespace of its own that its caller may fill before start:
    one to create (no path), as Docker asks for; a namespace named by path is joined, and planned at create."""
    return any(kind == "network" and not path for kind, path in namespaces)


def keep(state_dir: Path, facts: Facts) -> None:
    import _pickle  # only for a container whose network may arrive late

    fd = os.open(state_dir / FACTS, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as f:
        _pickle.dump(facts, f)


def connect(root: str, record: st.ContainerState) -> None:
    """Plans again with the network of the init's namespace, connects it, and rewrites what the init and
    the monitor read."""
    import _pickle

    from ukrun.runtime import create
    from ukrun.runtime import facts as gather
    from ukrun.runtime.plan import plan

    d = Path(st.container_dir(root, record.id))
    with open(d / FACTS, "rb") as f:
        kept: Facts = _pickle.load(f)  # written by this container's create (see the module's docstring)
    netns = f"/proc/{record.pid}/ns/net"
    found = gather.network(netns)
    if found.interface is None:
        return
    new = plan(kept._replace(netns=netns, interface=found.interface, links=found.links, taken=found.taken))
    if new.network is None:
        return
    record.netns, record.tap, record.nat = new.netns, new.network.tap, new.link.table if new.link else ""
    st.save(root, record)
    create.connect(new)
    for path, data in new.files:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
    LaunchConfig.update_monitor(d, tuple(new.argv))
