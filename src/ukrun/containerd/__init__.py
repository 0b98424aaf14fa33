"""containerd's API, as ukrun uses it. Importing this package costs nothing; `client` loads the gRPC client."""

from __future__ import annotations

from collections.abc import Callable

TYPE_CHECKING = False  # not typing's, whose import costs a create without a helper about 2 ms
if TYPE_CHECKING:
    from ukrun.containerd.client import Client


def connector(address: str, namespace: str, timeout: float) -> Callable[[], Client]:
    """A function that connects when first called: verbs that end up not needing containerd skip it."""

    def connect() -> Client:
        from ukrun.containerd.client import Client

        return Client(address, namespace, timeout=timeout)

    return connect
