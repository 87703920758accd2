"""A lean front for the API's busiest routes: the small JSON requests that retrieval pipelines
send in bursts (embeddings, rerank), and chat and completions, whose streams send an event per
token.

Why: on a small machine the engine and the API share the cores, so the API's CPU per request is
taken from the engine. FastAPI's per-request machinery (its middleware stack, matching the path
against every route, dependency solving, a second JSON parse into dicts before validation) costs
CPU on every request, and with a small embedding model, whose batched engine time per request is
small too, that alone was a visible share of the throughput (the profile: docs/benchmarks.md).
This front answers the POST routes it is given itself: raw body -> pydantic's own JSON validation
(the same request models) -> the route's handler -> bytes or a stream of events, with the same
error bodies as the rest of the API. Streams go straight to the server, one `send` per event
(Starlette's StreamingResponse adds a task group and four middleware layers to every token).
Every other request goes on to FastAPI, where these routes are declared as well, so /docs
describes them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import BaseModel

from fleet.api.auth.middleware import check_hot_body
from fleet.api.body_parsing import parse_body
from fleet.api.errors import error_reply
from fleet.errors import BadRequest
from fleet.limits import limits, too_large

_JSON_HEADERS = [(b"content-type", b"application/json")]


@dataclass(frozen=True)
class EventStream:
    """A streamed answer: server-sent events to write as they come."""

    events: AsyncGenerator[bytes, None]
    headers: tuple[tuple[str, str], ...] = (("content-type", "text/event-stream"),
                                            ("cache-control", "no-cache"),
                                            ("x-accel-buffering", "no"))


@dataclass(frozen=True)
class FastRoute:
    """`handler(validated_body) -> JSON bytes or an EventStream`; `path` also names the route
    in the metrics. With `watch_disconnect` the answer is cancelled when the client leaves
    (generation: the replica then stops generating for it)."""

    path: str
    body_model: type[BaseModel]
    handler: Callable[[Any], Awaitable[bytes | EventStream]]
    watch_disconnect: bool = False


_Reply = tuple[int, bytes, list[tuple[bytes, bytes]]]

# Routes that take multipart file uploads (images, audio): their bodies are capped by
# `max_upload_bytes` instead of the management cap.
UPLOAD_PATHS = frozenset({
    "/v1/images/variations", "/v1/images/edits", "/v1/images/inpainting", "/v1/images/ocr",
    "/v1/audio/transcriptions", "/v1/audio/translations",
})


class FastJsonRoutes:
    """ASGI: serves the POST routes it holds, hands everything else to `app`. Bodies are capped
    (fleet.limits: `max_body_bytes` here, `max_management_body_bytes` for the rest, 413 past
    them), so that a runaway body cannot fill the API's memory."""

    def __init__(self, app: Any, routes: list[FastRoute], max_body_bytes: int | None = None,
                 max_other_body_bytes: int | None = None,
                 upload_paths: frozenset[str] = UPLOAD_PATHS):
        self._app = app
        self._routes = {route.path: route for route in routes}
        self._max_body_bytes = max_body_bytes or limits().max_body_bytes
        self._max_other_body_bytes = max_other_body_bytes or limits().max_management_body_bytes
        self._upload_paths = upload_paths

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        route = (self._routes.get(scope["path"])
                 if scope["type"] == "http" and scope["method"] == "POST" else None)
        if route is None:
            await self._other(scope, receive, send)
            return
        scope["route"] = route  # what the latency middleware labels the request with
        try:
            # Large bodies are parsed off the event loop (fleet.api.body_parsing).
            body = await parse_body(route.body_model, await self._read_body(receive))
            # A key limited to some models, or without models:stop for a keep_alive
            # (fleet.api.auth.middleware); every hot body names its model.
            check_hot_body(scope, body)
        except Exception as exc:
            await _send_reply(send, _failure(exc))
            return
        if not route.watch_disconnect:
            await self._reply(route, body, send)
            return
        work = asyncio.ensure_future(self._reply(route, body, send))
        watch = asyncio.ensure_future(_client_gone(receive))
        try:
            await asyncio.wait((work, watch), return_when=asyncio.FIRST_COMPLETED)
        finally:
            watch.cancel()
            if not work.done():  # the client left, or the server is stopping
                work.cancel()
                await asyncio.gather(work, return_exceptions=True)
        if not work.cancelled():
            work.result()  # a failure mid-stream reaches the server, which logs it

    async def _reply(self, route: FastRoute, body: BaseModel, send: Any) -> None:
        try:
            answer = await route.handler(body)
        except Exception as exc:
            await _send_reply(send, _failure(exc))
            return
        if isinstance(answer, bytes):
            await _send_reply(send, (200, answer, []))
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(k.encode(), v.encode()) for k, v in answer.headers]})
        try:
            async for event in answer.events:
                await send({"type": "http.response.body", "body": event, "more_body": True})
        finally:
            await answer.events.aclose()  # runs the stream's clean-up however this ends
        await send({"type": "http.response.body", "body": b""})

    async def _other(self, scope: dict, receive: Any, send: Any) -> None:
        """Every other request goes to `app`, its body (if any) read first up to the cap of
        management bodies (of uploads, on UPLOAD_PATHS): FastAPI would read any size, and turn
        a failure while reading into its own 400."""
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self._app(scope, receive, send)
            return
        cap, limit_name = ((limits().max_upload_bytes, "max_upload_bytes")
                           if scope["path"] in self._upload_paths
                           else (self._max_other_body_bytes, "max_management_body_bytes"))
        try:
            body = await self._read_body(receive, cap, limit_name, _declared_length(scope))
        except Exception as exc:
            await _send_reply(send, _failure(exc))
            return
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if replayed:
                return await receive()  # a disconnect, when the client leaves
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self._app(scope, replay, send)

    async def _read_body(self, receive: Any, cap: int | None = None,
                         limit_name: str = "max_body_bytes", declared: int = 0) -> bytes:
        cap = cap or self._max_body_bytes
        if declared > cap:  # refused before a byte of it is read
            raise too_large(limit_name, declared, cap)
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":  # the answer would go nowhere
                raise BadRequest("client disconnected before its request body arrived")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > cap:
                raise too_large(limit_name, size, cap)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _declared_length(scope: dict) -> int:
    for name, value in scope.get("headers") or ():
        if name == b"content-length":
            return int(value) if value.isdigit() else 0
    return 0


async def _client_gone(receive: Any) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _send_reply(send: Any, reply: _Reply) -> None:
    status, body, headers = reply
    await send({"type": "http.response.start", "status": status,
                "headers": _JSON_HEADERS + headers})
    await send({"type": "http.response.body", "body": body})


def _failure(exc: Exception) -> _Reply:
    status, body, headers = error_reply(exc)
    return status, orjson.dumps(body), [(k.lower().encode(), v.encode())
                                        for k, v in (headers or {}).items()]
