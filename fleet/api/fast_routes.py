"""A lean front for the API's busiest routes: the small JSON requests that retrieval pipelines
send in bursts (embeddings, rerank), and chat and completions, whose streams send an event per
token.

Why: on a small machine the engine and the API share the cores, so the API's CPU per request is
taken from the engine. FastAPI's per-request machinery (its middleware stack, matching the path
against every route, dependency solving, a second JSON parse into dicts before validation) cost
about 0.3 ms of CPU per request, measured with py-spy under load: with MiniLM, whose batched
engine time is about 2 ms a request on two cores, that alone was a tenth of the throughput.
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

from fleet.api.auth import check_model
from fleet.api.errors import error_reply
from fleet.errors import BadRequest, PayloadTooLarge

# Far above any embeddings or rerank batch a client sends; a cap so a runaway body cannot
# fill the API's memory.
MAX_BODY_BYTES = 64 * 1024 * 1024
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
        try:
            body = route.body_model.model_validate_json(await self._read_body(receive))
            check_model(scope, body.model)  # a key limited to some models (fleet.api.auth)
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
