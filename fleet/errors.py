"""Exceptions that carry their HTTP meaning, raised anywhere below the API and mapped to the
OpenAI error body in one place (fleet.api.errors). They cross process boundaries (pickled by
xoscar), so they keep their arguments simple."""

from __future__ import annotations

import functools
import re
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
    """A launch that fits on no worker (fleet/cluster/supervisor/placement.py). A 4xx, not a 5xx: the
    cluster works, and asking again will not help until the request changes (a smaller
    quantization, a shorter context, fewer sequences) or memory is freed, while clients retry
    5xx answers on their own (the openai SDK does) and would only repeat the refusal. 507
    Insufficient Storage is WebDAV's answer about storage, and a 5xx too."""

    def __init__(self, message: str, code: str | None = "insufficient_memory"):
        super().__init__(message, code)


class Unauthorized(FleetError):
    """No API key, or one the cluster does not know (fleet.api.auth.middleware)."""

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


class StateNotSaved(FleetError):
    """The cluster's state could not be written (fleet.database: a full or read-only disk, a
    database that is down): the change asked for was not made, so that a restart cannot undo
    or redo it behind the user's back."""

    status_code = 500
    error_type = "internal_error"

    def __init__(self, message: str, code: str | None = "state_not_saved"):
        super().__init__(message, code)


class TooManyRequests(FleetError):
    """A model's request queue is full; the client should retry after a short wait."""

    status_code = 429
    error_type = "rate_limit_error"
    retry_after_s = 1


class PayloadTooLarge(FleetError):
    status_code = 413
    error_type = "invalid_request_error"


# pydantic names the member of a union that an error comes from in its location
# (`input.constrained-str`, `prompt.list[constrained-int].0`, `documents.0.str`); the reader
# needs the field and the position, not the member.
_UNION_MEMBER = re.compile(r"^(constrained-|function-|lax-|nullable)|\[|^(str|int|float|bool)$")
# Messages that say it plainer than pydantic, for the way Fleet's request models use them.
_PLAIN = {"none_required": "is not supported: send null or leave it out"}


def _location(loc: Sequence[Any]) -> str:
    parts = [str(p) for i, p in enumerate(loc)
             if p != "body" and not (i > 0 and isinstance(p, str) and _UNION_MEMBER.search(p))]
    return ".".join(parts) or "body"


def _message(item: dict[str, Any]) -> str:
    context = item.get("ctx") or {}
    if item.get("type") in ("string_too_short", "too_short") and context.get("min_length") == 1:
        return "must not be empty"
    return _PLAIN.get(item.get("type", ""), str(item.get("msg")).removeprefix("Value error, "))


def _field(where: str) -> str:
    """The field a location is in: `input` of `input.0`, `worker_ip` of `query.worker_ip`."""
    parts = where.split(".")
    return parts[1] if parts[0] in ("query", "path", "header", "cookie") and len(parts) > 1 \
        else parts[0]


def _is_type_mismatch(item: dict[str, Any]) -> bool:
    return str(item.get("type", "")).endswith("_type")  # string_type, list_type, model_type...


def validation_message(errors: Sequence[Any]) -> str:
    """pydantic's errors (FastAPI's or pydantic's own) as one line that names the fields: how a
    body that fails its model is refused, at the API and wherever else a request is read (the
    saved state's launch requests).

    A union reports each member that it tried: where one member matched the value's type and
    failed a constraint, the others' type mismatches ("Input should be a valid list") would
    only hide it, so they are left out."""
    located = [(_location(item.get("loc", ())), dict(item)) for item in errors]
    constrained = {_field(where) for where, item in located if not _is_type_mismatch(item)}
    parts: list[str] = []
    for where, item in located:
        if _is_type_mismatch(item) and _field(where) in constrained:
            continue
        part = f"{where}: {_message(item)}"
        if part not in parts:
            parts.append(part)
    return "invalid request: " + "; ".join(parts[:5])


# ---- errors as plain data, for the messages that cross processes (fleet.messages and the
# replica channel's codec)
@functools.cache
def error_classes() -> dict[str, type[FleetError]]:
    """FleetError and its subclasses in fleet.errors, by name: the only errors rebuilt. A class
    counts when this module itself holds it under that name: xoscar, when an actor's error
    crosses it, makes a subclass of the error's class with the same name and module whose
    message is fixed (the first error it wrapped), and that one must never stand in for ours."""
    found: dict[str, type[FleetError]] = {}
    pending: list[type[FleetError]] = [FleetError]
    while pending:
        cls = pending.pop()
        if globals().get(cls.__name__) is cls:
            found[cls.__name__] = cls
        pending.extend(cls.__subclasses__())
    return found


def error_fields(error: BaseException) -> tuple[str, str, str | None, int]:
    """An error as plain data that another process rebuilds (`rebuild_error`): its class's name,
    message, code and HTTP status. Anything but Fleet's own errors is a FleetError (500)."""
    if isinstance(error, FleetError) and type(error).__name__ in error_classes():
        return type(error).__name__, error.message, error.code, error.status_code
    if isinstance(error, FleetError):
        return "FleetError", error.message, error.code, error.status_code
    return "FleetError", f"{type(error).__name__}: {error}", None, FleetError.status_code


def rebuild_error(name: str, message: str, code: Any, status: Any) -> FleetError:
    """The error that `error_fields` described, as one of this module's classes (looked up in
    a fixed table, never imported by name): what arrives from another process runs no code."""
    cls = error_classes().get(name, FleetError)
    code = str(code) if code is not None else None
    try:
        error = cls(message, code)
    except TypeError:  # a class whose constructor wants more: its meaning, as a plain error
        error = FleetError(message, code)
    if isinstance(status, int) and 400 <= status < 600 and status != error.status_code:
        error.status_code = status  # an error class this side does not know keeps its status
    return error
