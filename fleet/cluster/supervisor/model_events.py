"""What the supervisor did to a model's replicas on its own, and why: scale-ups and downs of
autoscaling, idle unloads and loads on demand (`GET /v1/models/{uid}/events`), and how many of
each direction there were (/metrics). Kept in memory, the last KEEP per model: it is the recent
story of a running model, not an audit log (the supervisor's log has every one too)."""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from typing import Any

logger = logging.getLogger(__name__)

KEEP = 100
KINDS = frozenset({"scale_up", "scale_down", "scale_up_failed", "unload", "load", "load_failed",
                   "keep_alive"})
# The direction each kind counts as in fleet_model_scale_events (a failed step counts nowhere:
# it changed nothing).
_DIRECTION = {"scale_up": "up", "load": "up", "scale_down": "down", "unload": "down"}


class ModelEvents:
    def __init__(self) -> None:
        self._events: dict[str, deque[dict[str, Any]]] = {}
        self._counts: dict[str, Counter[str]] = {}

    def record(self, uid: str, kind: str, before: int, after: int, reason: str) -> None:
        assert kind in KINDS, kind
        event = {"time": time.time(), "kind": kind, "from": before, "to": after,
                 "reason": reason}
        self._events.setdefault(uid, deque(maxlen=KEEP)).append(event)
        direction = _DIRECTION.get(kind)
        if direction is not None:
            self._counts.setdefault(uid, Counter())[direction] += 1
        logger.info("model %s: %s %d -> %d (%s)", uid, kind, before, after, reason)

    def recent(self, uid: str) -> list[dict[str, Any]]:
        """Oldest first."""
        return list(self._events.get(uid, ()))

    def counts(self, uid: str) -> dict[str, int]:
        """Events so far by direction ("up", "down")."""
        counts = self._counts.get(uid, Counter())
        return {"up": counts["up"], "down": counts["down"]}

    def forget(self, uid: str) -> None:
        """A terminated model's story ends with it."""
        self._events.pop(uid, None)
        self._counts.pop(uid, None)
