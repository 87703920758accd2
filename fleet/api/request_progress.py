"""Which model each named request went to, for Xinference's progress route
(`GET /v1/requests/{request_id}/progress`): a client names its request (`request_id`, in
Xinference's `kwargs`), and the API, which alone knows where it sent it, asks that model's
replicas how far it is. Finished requests are remembered a while, so that a client polling
after the answer came still reads 1.0; the table is bounded, oldest dropped first."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from fleet.errors import BadRequest

KEEP_FINISHED_S = 600.0
MAX_REMEMBERED = 10_000


@dataclass
class TrackedRequest:
    model_uid: str
    finished_at: float | None = None  # monotonic; None while running


class RequestTable:
    def __init__(self, keep_finished_s: float = KEEP_FINISHED_S, limit: int = MAX_REMEMBERED):
        self._keep_s = keep_finished_s
        self._limit = limit
        self._requests: OrderedDict[str, TrackedRequest] = OrderedDict()

    def _forget_old(self) -> None:
        now = time.monotonic()
        for request_id, tracked in list(self._requests.items()):
            if tracked.finished_at is not None and now - tracked.finished_at > self._keep_s:
                del self._requests[request_id]
        while len(self._requests) > self._limit:
            self._requests.popitem(last=False)

    @contextmanager
    def running(self, request_id: str | None, model_uid: str) -> Iterator[None]:
        """Remembers the request while the block runs, and as finished afterwards."""
        if request_id is None:
            yield
            return
        self._forget_old()
        current = self._requests.get(request_id)
        if current is not None and current.finished_at is None:
            raise BadRequest(f"request_id {request_id!r} names a request that is still running",
                             code="duplicate_request_id")
        tracked = self._requests[request_id] = TrackedRequest(model_uid)
        self._requests.move_to_end(request_id)
        try:
            yield
        finally:
            tracked.finished_at = time.monotonic()

    def get(self, request_id: str) -> TrackedRequest | None:
        self._forget_old()
        return self._requests.get(request_id)
