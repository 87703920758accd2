"""A lean front for the API's busiest routes, the small JSON requests that retrieval pipelines
send in bursts (embeddings, rerank).

Why: on a small machine the engine and the API share the cores, so the API's CPU per request is
taken from the engine. FastAPI's per-request machinery (its middleware stack, matching the path
against every route, dependency solving, a second JSON parse into dicts before validation) cost
about 0.3 ms of CPU per request, measured with py-spy under load: with MiniLM, whose batched
engine time is about 2 ms a request on two cores, that alone was a tenth of the throughput.
This front answers the POST routes it is given itself: raw body -> pydantic's own JSON validation
(the same request models) -> the route's handler -> bytes, with the same error bodies as the rest
of the API. Every other request goes on to FastAPI, where these routes are declared as well, so
/docs describes them."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError

from fleet.api.errors import error_body, retry_headers, validation_message
from fleet.errors import BadRequest, FleetError, PayloadTooLarge

logger = logging.getLogger(__name__)

# Far above any embeddings or rerank batch a client sends; a cap so a runaway body cannot
# fill the API's memory.
MAX_BODY_BYTES = 64 * 1024 * 1024
_JSON_HEADERS = [(b"content-type", b"application/json")]


@dataclass(frozen=True)
class FastRoute:
    """`handler(validated_body) -> JSON bytes`; `path` also names the route in the metrics."""

    path: str
    body_model: type[BaseModel]
    handler: Callable[[Any], Awaitable[bytes]]


class FastJsonRoutes:
    """ASGI: serves the POST routes it holds, hands everything else to `app`."""

    def __init__(self, app: Any, routes: list[FastRoute], max_body_bytes: int = MAX_BODY_BYTES):
        self._app = app
        self._routes = {route.path: route for route in routes}
        self._max_body_bytes = max_body_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        route = (self._routes.get(scope["path"])
                 if scope["type"] == "http" and scope["method"] == "POST" else None)
        if route is None:
            await self._app(scope, receive, send)
            return
        scope["route"] = route  # what the latency middleware labels the request with
        status, body, headers = await self._answer(route, receive)
        await send({"type": "http.response.start", "status": status,
                    "headers": _JSON_HEADERS + headers})
        await send({"type": "http.response.body", "body": body})

    async def _answer(self, route: FastRoute,
                      receive: Any) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        try:
            raw = await self._read_body(receive)
            return 200, await route.handler(route.body_model.model_validate_json(raw)), []
        except ValidationError as exc:
            return 400, _error(validation_message(exc.errors()), "invalid_request_error"), []
        except FleetError as exc:
            headers = [(k.lower().encode(), v.encode())
                       for k, v in (retry_headers(exc) or {}).items()]
            return exc.status_code, _error(exc.message, exc.error_type, exc.code), headers
        except Exception as exc:
            logger.exception("unhandled error on %s", route.path)
            return 500, _error(f"internal error: {type(exc).__name__}: {exc}",
                               "internal_error"), []

    async def _read_body(self, receive: Any) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":  # the answer would go nowhere
                raise BadRequest("client disconnected before its request body arrived")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._max_body_bytes:
                raise PayloadTooLarge(f"request body is larger than {self._max_body_bytes} bytes",
                                      code="payload_too_large")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _error(message: str, error_type: str, code: str | None = None) -> bytes:
    return orjson.dumps(error_body(message, error_type, code))
