"""The ports a worker's replica processes listen on, when the operator fixes them
(`--replica-ports START-END`): each replica process takes a pair, one for its actor pool and
the next for its replica channel (fleet.channel.replica_end), so that a firewall or a Kubernetes
NetworkPolicy can open exactly that range. Without a range both are free ports the OS picks.

Pairs are handed out by the worker, which starts every replica process, rather than probed by
each process: two replicas starting together could otherwise both find the same port free."""

from __future__ import annotations

from fleet.errors import Unavailable


class ReplicaPorts:
    """Pairs of ports from a range, each held by one replica process until it ends."""

    def __init__(self, port_range: tuple[int, int]):
        self.first, self.last = port_range
        self._held: set[int] = set()  # the actor-pool port of each pair in use

    def take(self) -> tuple[int, int]:
        """(actor pool port, channel port) of a free pair; Unavailable when all are held."""
        for pool_port in range(self.first, self.last, 2):
            if pool_port not in self._held:
                self._held.add(pool_port)
                return pool_port, pool_port + 1
        raise Unavailable(f"every port of --replica-ports {self.first}-{self.last} is held by a "
                          f"replica process ({len(self._held)} of them): widen the range")

    def release(self, address: str) -> None:
        """The pair of the replica process at `address` (host:port) is free again."""
        self._held.discard(int(address.rsplit(":", 1)[1]))
