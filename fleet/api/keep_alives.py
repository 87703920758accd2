"""A request's own `keep_alive` (Ollama's field on chat, completions, embeddings and rerank): the
model's keep_alive from then on, so that it stays loaded that long after this request (0: it
is unloaded once answered; -1: never).

The supervisor holds a model's keep_alive (fleet.cluster.supervisor.elastic); telling it costs
a call, and clients that send the field send it with every request. So each API process keeps
the value it last told the supervisor for each model, and calls only when a request asks for
another one. What it keeps is forgotten whenever the supervisor says the model changed (the
route events that the router follows): a relaunch under the same uid, or another API process
that set a different value, is then asked again rather than trusted. A request without the
field costs nothing here: the route only looks at it when it is there."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fleet.keep_alive import parse_keep_alive

_UNKNOWN = object()


class KeepAlives:
    def __init__(self, supervisor: Any, uid_of: Callable[[str], Awaitable[str]]):
        self._supervisor = supervisor
        self._uid_of = uid_of  # a model name (an alias, fleet.model_aliases) -> its uid
        # Model uid -> the keep_alive in seconds (None: never) it was last given from here.
        self._told: dict[str, float | None] = {}

    async def apply(self, name: str, value: str | float) -> None:
        """Make `value` (a duration the request's body checked already) the keep_alive of the
        model that `name` names; NotFound when there is no such model, as the request itself
        would get."""
        uid = await self._uid_of(name)
        seconds = parse_keep_alive(value)
        if self._told.get(uid, _UNKNOWN) == seconds:
            return
        await self._supervisor.set_keep_alive(uid, value)
        self._told[uid] = seconds

    def forget(self, uid: str | None = None) -> None:
        """What was told of `uid` (of every model when None) may be out of date."""
        if uid is None:
            self._told.clear()
        else:
            self._told.pop(uid, None)
