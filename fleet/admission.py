"""Admission: whether a replica takes one more request, in one place for every queue that has a
limit (the dynamic batcher of embeddings, rerank, images, OCR and transcriptions, speech, and the
generation scheduler of every engine), and the request limits a replica is launched with.

A request is admitted while fewer than the limit are in progress, and refused at once past it
with a 429 (TooManyRequests, Retry-After) rather than queued for longer than its client will
wait. Its place is released when it has been answered, has failed or was cancelled.

Admission sits on every request's path, so it is plain counting: no lock and no allocation.
Where requests are admitted on one thread and released on another (the schedulers that run on
an engine's threads), the caller holds the lock it takes for its own queues around both.

It lives outside fleet.cluster because the engines' own schedulers (llama.cpp, vLLM) admit
requests too, and engines do not import the cluster."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fleet.errors import BadRequest, TooManyRequests

# Requests one replica holds at once (answered, queued or generating) unless its launch sets
# request_limits: far beyond what one replica runs together, so that only a flood is refused.
DEFAULT_REQUEST_LIMIT = 256


def _checked_limit(value: Any, what: str) -> int:
    # bool is an int to Python; `request_limits: true` is a mistake, not a limit of 1.
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BadRequest(f"{what} must be a whole number of at least 1, not {value!r}",
                         code="invalid_request_limits")
    return value


@dataclass(frozen=True, slots=True)
class RequestLimits:
    """A replica's request limits, read once from its launch (`of`) and handed, typed,
    to what serves its requests. `max_requests`: the launch option request_limits, the requests
    the replica holds at once."""

    max_requests: int = DEFAULT_REQUEST_LIMIT

    def __post_init__(self) -> None:
        _checked_limit(self.max_requests, "request_limits")

    @classmethod
    def of(cls, request_limits: int | None) -> RequestLimits:
        """The limits of a replica's launch (fleet.messages.ReplicaLaunch.request_limits), None
        for the default. BadRequest for anything else than a whole number of at least 1 (the
        API's launch request refuses those already)."""
        return cls() if request_limits is None else cls(max_requests=request_limits)


DEFAULT_LIMITS = RequestLimits()


class Admission:
    """Counts the requests in progress against `limit`: `admit` takes a place or raises
    TooManyRequests, `release` gives it back. Also a context manager (admit on entry, release
    on exit, however the block ends)."""

    __slots__ = ("_in_progress", "_limit")

    def __init__(self, limit: int):
        self._limit = _checked_limit(limit, "an admission limit")
        self._in_progress = 0

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def in_progress(self) -> int:
        """Requests admitted and not released yet."""
        return self._in_progress

    def admit(self) -> None:
        """Take a place for one request; TooManyRequests (nothing taken) when all are taken."""
        if self._in_progress >= self._limit:
            raise self.refusal()
        self._in_progress += 1

    def release(self) -> None:
        """Give a place back. One release too many (a request both cancelled and finished) is
        ignored: a count below zero would admit more than the limit from then on."""
        if self._in_progress > 0:
            self._in_progress -= 1

    def refusal(self) -> TooManyRequests:
        """The error for a request past the limit (a subclass may word it for its queue)."""
        return TooManyRequests(
            f"this model already has {self._in_progress} requests in progress (its limit is "
            f"{self._limit}, the launch option request_limits); retry shortly", code="model_busy")

    def __enter__(self) -> Admission:
        self.admit()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()
