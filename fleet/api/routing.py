"""The API's routing table: model uid -> replica actor refs, asked of the supervisor once and
cached, so a request costs one actor call to the replica and nothing to the supervisor."""

from __future__ import annotations

import itertools
import logging
from typing import Any

import xoscar as xo
from xoscar.errors import ActorNotExist, ServerClosed

from fleet.errors import Unavailable

logger = logging.getLogger(__name__)

# Errors that mean "that replica is gone": drop the cached route and ask again.
# (An engine's own OSError must not count: it would be retried and reported as unreachable.)
_STALE_ROUTE_ERRORS = (ActorNotExist, ServerClosed, ConnectionError)


class ReplicaRouter:
    def __init__(self, supervisor: Any):
        self._supervisor = supervisor
        self._routes: dict[str, tuple[list[Any], itertools.cycle]] = {}

    def invalidate(self, uid: str | None = None) -> None:
        if uid is None:
            self._routes.clear()
        else:
            self._routes.pop(uid, None)

    async def _refs(self, uid: str) -> tuple[list[Any], itertools.cycle]:
        cached = self._routes.get(uid)
        if cached is None:
            targets = await self._supervisor.route(uid)
            refs = [await xo.actor_ref(address=a, uid=u) for a, u in targets]
            cached = (refs, itertools.cycle(range(len(refs))))
            self._routes[uid] = cached
        return cached

    async def call(self, uid: str, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call `method` on the next replica (round robin); retry once on a stale route."""
        for attempt in (1, 2):
            refs, turn = await self._refs(uid)
            ref = refs[next(turn) % len(refs)]
            try:
                return await getattr(ref, method)(*args, **kwargs)
            except _STALE_ROUTE_ERRORS as exc:
                logger.warning("replica of %s unreachable (%s); refreshing route", uid, exc)
                self.invalidate(uid)
                if attempt == 2:
                    raise Unavailable(f"model {uid} is unreachable: {exc}") from None
        raise AssertionError("unreachable")
