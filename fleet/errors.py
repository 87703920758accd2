"""Exceptions that carry their HTTP meaning, raised anywhere below the API and mapped to the
OpenAI error body in one place (fleet.api.errors). They cross process boundaries (pickled by
xoscar), so they keep their arguments simple."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class FleetError(Exception):
    status_code = 500
    error_type = "internal_error"

    def __init__(self, message: str, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.code = code

    def __reduce__(self):
        return (type(self), (self.message, self.code))


class BadRequest(FleetError):
    status_code = 400
    error_type = "invalid_request_error"


class InsufficientMemory(BadRequest):
    """A launch that fits on no worker (fleet/cluster/placement.py). A 4xx, not a 5xx: the
    cluster works, and asking again will not help until the request changes (a smaller
    quantization, a shorter context, fewer sequences) or memory is freed, while clients retry
    5xx answers on their own (the openai SDK does) and would only repeat the refusal. 507
    Insufficient Storage is WebDAV's answer about storage, and a 5xx too."""

    def __init__(self, message: str, code: str | None = "insufficient_memory"):
        super().__init__(message, code)


class Unauthorized(FleetError):
    """No API key, or one the cluster does not know (fleet.api.auth)."""

    status_code = 401
    error_type = "authentication_error"


class Forbidden(FleetError):
    """A known API key without the permission, or the model, that the request needs."""

    status_code = 403
    error_type = "permission_error"


class NotFound(FleetError):
    status_code = 404
    error_type = "not_found_error"


class Conflict(FleetError):
    """The request is well formed but clashes with the cluster's current state (a cached model
    that a running replica reads): it succeeds once that state changes, unlike a 400."""

    status_code = 409
    error_type = "conflict_error"


class LaunchFailed(FleetError):
    """The engine could not start the model; the message holds the engine's own error."""

    status_code = 503
    error_type = "launch_error"


class Unavailable(FleetError):
    """The model cannot answer now (no replica ready: it is launching, restarting, waiting for
    a worker): a 503 with Retry-After, since asking again soon may well work."""

    status_code = 503
    error_type = "service_unavailable"
    retry_after_s = 2


class TooManyRequests(FleetError):
    """A model's request queue is full; the client should retry after a short wait."""

    status_code = 429
    error_type = "rate_limit_error"
    retry_after_s = 1


class PayloadTooLarge(FleetError):
    status_code = 413
    error_type = "invalid_request_error"


def validation_message(errors: Sequence[Any]) -> str:
    """pydantic's errors (FastAPI's or pydantic's own) as one line that names the fields: how a
    body that fails its model is refused, at the API and wherever else a request is read (the
    state file's launch requests)."""
    parts = []
    for item in list(errors)[:5]:
        location = ".".join(str(p) for p in item.get("loc", ()) if p != "body") or "body"
        parts.append(f"{location}: {item.get('msg')}")
    return "invalid request: " + "; ".join(parts)
