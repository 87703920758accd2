"""Every error leaves the API in OpenAI's shape, `{"error": {"message", "type", "code"}}`, plus
a `detail` copy of the message, which is where Xinference's client looks for it."""

from __future__ import annotations

import functools
import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from fleet.errors import FleetError, validation_message

logger = logging.getLogger(__name__)


def error_body(message: str, error_type: str, code: str | None = None) -> dict[str, Any]:
    return {
        "error": {"message": message, "type": error_type, "param": None, "code": code},
        "detail": message,
    }


def error_reply(exc: Exception) -> tuple[int, dict[str, Any], dict[str, str] | None]:
    """What a request raised -> (status, OpenAI error body, headers): one mapping for the
    FastAPI routes and for fleet.api.fast_routes."""
    if isinstance(exc, FleetError):
        retry_after = getattr(exc, "retry_after_s", None)
        headers = {"Retry-After": str(retry_after)} if retry_after else None
        return exc.status_code, error_body(exc.message, exc.error_type, exc.code), headers
    if isinstance(exc, (RequestValidationError, ValidationError)):
        # OpenAI answers 400, not FastAPI's 422, for a malformed body.
        return 400, error_body(validation_message(exc.errors()), "invalid_request_error"), None
    logger.error("unhandled error", exc_info=exc)
    return 500, error_body(f"internal error: {type(exc).__name__}: {exc}", "internal_error"), None


def stream_error(exc: Exception) -> dict[str, Any]:
    """The error event of a stream whose answer has begun (its 200 and headers are sent): the
    same `{"error": {...}}` object, type and code that `error_reply` gives a request that has
    not, without the status and headers it can no longer change, and without `detail`, which
    Xinference's client reads from a failed response only."""
    _, body, _ = error_reply(exc)
    return {"error": body["error"]}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(FleetError)
    @app.exception_handler(RequestValidationError)
    @app.exception_handler(ValidationError)  # a body a route validates itself
    @app.exception_handler(Exception)
    async def _raised(_: Request, exc: Exception) -> JSONResponse:
        status, body, headers = error_reply(exc)
        return JSONResponse(body, status_code=status, headers=headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = _allowed_methods(request)
        return JSONResponse(error_body(str(exc.detail), kind), status_code=exc.status_code,
                            headers=headers or None)


def _allowed_methods(request: Request) -> str:
    """The methods of the path's route template: of every route with the first template that
    matches the path, in the order the app tries them. Starlette names only those of the first
    route, and a template often has one route per method (GET and DELETE
    /v1/models/{model_uid})."""
    from fleet.api.auth.permissions import app_routes  # the routes, flattened

    path = request.scope["path"]
    routes = app_routes(request.app)
    first = next((t for t, _ in routes if _template_regex(t).match(path)), None)
    return ", ".join(sorted({m for t, methods in routes if t == first for m in methods}))


@functools.lru_cache(maxsize=256)
def _template_regex(template: str) -> re.Pattern[str]:
    return compile_path(template)[0]

