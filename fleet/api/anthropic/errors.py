"""Errors on the Messages routes, in Anthropic's shape:
`{"type": "error", "error": {"type": ..., "message": ...}}`, the type read from the status as
Anthropic's API sets it.

Every part of the API that refuses a request writes OpenAI's shape (fleet.api.errors): the key
check, the browser checks, the body cap and parser, the routes and FastAPI's own 404 and 405.
Rather than teach each of them a second shape, one ASGI layer outside them all rewrites the
error answers of these paths (`AnthropicErrors`): one place, whatever refused the request. It
reads nothing else: a successful answer, streamed or whole, passes through as it is. An error
after a stream's headers is an event of the stream (fleet.api.anthropic.events)."""

from __future__ import annotations

from typing import Any

import orjson

MESSAGES_PATH = "/v1/messages"
COUNT_TOKENS_PATH = "/v1/messages/count_tokens"
PATHS = frozenset({MESSAGES_PATH, COUNT_TOKENS_PATH})

# Anthropic's error type of each status; any other 4xx is an invalid request, any other 5xx an
# api_error. 503 (a model loading, restarting, or with no replica ready) is Anthropic's
# overloaded_error: its clients retry it, as they should.
_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
          503: "overloaded_error", 529: "overloaded_error"}


def error_type(status: int) -> str:
    return _TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")


def error_body(status: int, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error_type(status), "message": message}}


def _message_of(body: bytes) -> str:
    try:
        parsed = orjson.loads(body)
        return str(parsed["error"]["message"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return body.decode("utf-8", "replace") or "request refused"


class AnthropicErrors:
    """ASGI: the error answers (status >= 400) of the Messages paths in Anthropic's shape; every
    other request passes untouched."""

    def __init__(self, app: Any):
        self._app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] not in PATHS:
            await self._app(scope, receive, send)
            return
        start: dict[str, Any] | None = None
        parts: list[bytes] = []

        async def reshape(message: dict[str, Any]) -> None:
            nonlocal start
            if message["type"] == "http.response.start" and message["status"] >= 400:
                start = message  # held until the body has come
                return
            if start is None or message["type"] != "http.response.body":
                await send(message)
                return
            parts.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = orjson.dumps(error_body(start["status"], _message_of(b"".join(parts))))
            headers = [(name, value) for name, value in start.get("headers", [])
                       if name.lower() not in (b"content-length", b"content-type")]
            await send({**start, "headers": [*headers, (b"content-type", b"application/json"),
                                             (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})

        await self._app(scope, receive, reshape)
