"""Which models' routes changed, for the API processes that cache them (fleet.api.routing).

The API caches each model's ready replicas and must hear at once when one stops being ready (a
process died, a replica is draining) or a new one is (a restart, a scale-up), without asking
on every request. It long-polls `SupervisorActor.watch_routes(epoch, version)`: the answer comes
as soon as a route changes, with the uids that did, or after `timeout` with none. `epoch` is
new at each supervisor start, so an API that outlives one (a worker's view never does, but an
API in another process could) drops everything it cached."""

from __future__ import annotations

import asyncio
import uuid

# Kept per uid: the version of its last change. Older entries are dropped past this many.
_KEEP = 10_000


class RouteEvents:
    def __init__(self) -> None:
        self.epoch = uuid.uuid4().hex
        self.version = 0
        self._changed: dict[str, int] = {}
        self._wake = asyncio.Event()
        self.closed = False

    def close(self) -> None:
        """The supervisor is stopping: every wait answers at once, now and from now on."""
        self.closed = True
        self._wake.set()

    def touch(self, uid: str) -> None:
        """`uid`'s ready replicas changed (or it went, or came)."""
        self.version += 1
        self._changed.pop(uid, None)
        self._changed[uid] = self.version  # newest last: pruning drops the oldest
        if len(self._changed) > _KEEP:
            for old in list(self._changed)[: len(self._changed) - _KEEP]:
                del self._changed[old]
        self._wake.set()
        self._wake = asyncio.Event()

    def since(self, version: int) -> list[str] | None:
        """The uids changed after `version`; None when that is too old to say (drop all)."""
        if self._changed and version < min(self._changed.values()) - 1 and \
                len(self._changed) >= _KEEP:
            return None
        return [uid for uid, at in self._changed.items() if at > version]

    async def wait(self, epoch: str, version: int,
                   timeout: float) -> tuple[str, int, list[str] | None]:
        """(epoch, version now, uids changed since `version`, or None: forget every route).
        The epoch is "" once the supervisor is stopping: there is nothing more to follow."""
        if self.closed:
            return "", self.version, None
        if epoch != self.epoch or version > self.version:
            return self.epoch, self.version, None
        if version == self.version:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                return self.epoch, self.version, []
        if self.closed:
            return "", self.version, None
        return self.epoch, self.version, self.since(version)
