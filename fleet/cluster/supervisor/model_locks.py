"""One lock per model uid, so that launch, relaunch, scale and terminate of the same model
never interleave (two relaunches of one failed uid once left a set of replicas running that
nothing tracked), and one planning lock, so that two launches never count the same free memory.

Order, always: `planning` first, then a model's lock. The long waits (a model loading) happen
outside both: the locks cover the decisions and the bookkeeping, not the work."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class ModelLocks:
    def __init__(self) -> None:
        self.planning = asyncio.Lock()
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: dict[str, int] = {}

    @asynccontextmanager
    async def hold(self, uid: str) -> AsyncIterator[None]:
        lock = self._locks.setdefault(uid, asyncio.Lock())
        self._users[uid] = self._users.get(uid, 0) + 1
        try:
            async with lock:
                yield
        finally:
            self._users[uid] -= 1
            if not self._users[uid]:  # nobody holds or waits: the lock of a gone uid goes too
                del self._users[uid], self._locks[uid]

    def held(self, uid: str) -> bool:
        lock = self._locks.get(uid)
        return lock is not None and lock.locked()
