"""Every error leaves the API in OpenAI's shape, `{"error": {"message", "type", "code"}}`, plus
a `detail` copy of the message, which is where Xinference's client looks for it."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from fleet.errors import FleetError

logger = logging.getLogger(__name__)


def error_body(message: str, error_type: str, code: str | None = None) -> dict[str, Any]:
    return {
        "error": {"message": message, "type": error_type, "param": None, "code": code},
        "detail": message,
    }


def error_response(status: int, message: str, error_type: str, code: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(message, error_type, code), status_code=status,
                        headers=headers)


def retry_headers(exc: FleetError) -> dict[str, str] | None:
    retry_after = getattr(exc, "retry_after_s", None)
    return {"Retry-After": str(retry_after)} if retry_after else None


def validation_message(errors: Sequence[Any]) -> str:
    """pydantic's errors (FastAPI's or pydantic's own) as one line that names the fields."""
    parts = []
    for item in list(errors)[:5]:
        location = ".".join(str(p) for p in item.get("loc", ()) if p != "body") or "body"
        parts.append(f"{location}: {item.get('msg')}")
    return "invalid request: " + "; ".join(parts)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(FleetError)
    async def _fleet_error(_: Request, exc: FleetError) -> JSONResponse:
        return error_response(exc.status_code, exc.message, exc.error_type, exc.code,
                              retry_headers(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        # OpenAI answers 400, not FastAPI's 422, for a malformed body.
        return error_response(400, validation_message(exc.errors()), "invalid_request_error")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return error_response(exc.status_code, str(exc.detail), kind)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error")
        return error_response(500, f"internal error: {type(exc).__name__}: {exc}", "internal_error")
