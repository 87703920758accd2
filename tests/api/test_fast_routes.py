"""The lean front for the busiest routes answers like the rest of the API: the OpenAI error shape
for a bad body, a Fleet error's status and headers, 413 for a body over the cap, 500 for a bug,
and everything else goes on to the application behind it. Driven as ASGI, the way uvicorn does."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from pydantic import BaseModel, Field

from fleet.api.fast_routes import EventStream, FastJsonRoutes, FastRoute
from fleet.errors import TooManyRequests


class EchoRequest(BaseModel):
    model: str = Field(min_length=1)
    n: int = 1


async def echo(body: EchoRequest) -> bytes:
    if body.model == "busy":
        raise TooManyRequests("queue full", code="queue_full")
    if body.model == "bug":
        raise ZeroDivisionError("division by zero")
    return orjson.dumps({"model": body.model, "n": body.n})


async def behind(scope: dict, receive: Any, send: Any) -> None:
    body = b""
    if scope["method"] == "PUT":  # echoes the body it reads
        body = (await receive())["body"]
    await send({"type": "http.response.start", "status": 299, "headers": []})
    await send({"type": "http.response.body", "body": b"behind" + body})


def request(path: str, body: bytes, method: str = "POST", chunk: int = 0,
            limit: int = 1024, headers: list | None = None
            ) -> tuple[int, dict[bytes, bytes], bytes, dict]:
    app = FastJsonRoutes(behind, [FastRoute("/v1/echo", EchoRequest, echo)], max_body_bytes=limit,
                         max_other_body_bytes=limit // 2)
    parts = [body[i:i + chunk] for i in range(0, len(body), chunk)] if chunk else [body]
    messages = [{"type": "http.request", "body": p, "more_body": i < len(parts) - 1}
                for i, p in enumerate(parts)]
    sent: list[dict] = []
    scope = {"type": "http", "method": method, "path": path, "headers": headers or []}

    async def receive() -> dict:
        return messages.pop(0)

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], dict(sent[0]["headers"]), sent[1]["body"], scope


def _error(body: bytes) -> dict:
    payload = orjson.loads(body)
    assert set(payload["error"]) == {"message", "type", "param", "code"}
    return payload["error"]


def test_a_good_body_is_answered_and_named_for_the_metrics():
    status, headers, body, scope = request("/v1/echo", b'{"model": "a", "n": 3}', chunk=5)
    assert status == 200 and headers[b"content-type"] == b"application/json"
    assert orjson.loads(body) == {"model": "a", "n": 3}
    assert scope["route"].path == "/v1/echo"


def test_bad_bodies_are_400_in_the_openai_shape():
    status, _, body, _ = request("/v1/echo", b"{not json")
    assert status == 400 and "invalid request" in _error(body)["message"]
    status, _, body, _ = request("/v1/echo", b'{"model": "a", "n": "many"}')
    assert status == 400 and "n:" in _error(body)["message"]
    status, _, body, _ = request("/v1/echo", b'{"n": 1}')
    assert status == 400 and "model" in _error(body)["message"]


def test_fleet_errors_keep_their_status_and_headers():
    status, headers, body, _ = request("/v1/echo", b'{"model": "busy"}')
    assert status == 429 and headers[b"retry-after"] == b"1"
    assert _error(body)["code"] == "queue_full"


def test_a_body_over_the_cap_is_413_and_a_bug_is_500():
    status, _, body, _ = request("/v1/echo", b'{"model": "' + b"x" * 2000 + b'"}', chunk=100)
    assert status == 413 and "limit of 1024 (FLEET_MAX_BODY_BYTES" in _error(body)["message"]
    status, _, body, _ = request("/v1/echo", b'{"model": "bug"}')
    assert status == 500 and "ZeroDivisionError" in _error(body)["message"]


def test_other_paths_and_methods_go_to_the_application_behind():
    assert request("/v1/other", b"{}")[2] == b"behind"
    assert request("/v1/echo", b"", method="GET")[2] == b"behind"
    assert request("/v1/other", b"x" * 500, method="PUT", chunk=64)[2] == b"behind" + b"x" * 500


def test_other_bodies_have_their_own_smaller_cap():
    status, _, body, _ = request("/v1/other", b"x" * 600, method="PUT", chunk=100)
    error = _error(body)
    assert status == 413 and error["code"] == "payload_too_large"
    assert "limit of 512 (FLEET_MAX_MANAGEMENT_BODY_BYTES" in error["message"]
    # A declared length over the cap is refused before any of the body is read.
    status, _, body, _ = request("/v1/other", b"", headers=[(b"content-length", b"99999")])
    assert status == 413 and "99999 bytes" in _error(body)["message"]


def test_a_stream_is_written_event_by_event_and_stopped_when_the_client_leaves():
    cleaned: list[str] = []

    async def events(leave: bool):
        try:
            yield b"data: 1\n\n"
            yield b"data: 2\n\n"
            if leave:
                await asyncio.sleep(30)  # a long generation the client will not wait for
            yield b"data: [DONE]\n\n"
        finally:
            cleaned.append("leave" if leave else "end")

    async def stream(body: EchoRequest) -> EventStream:
        return EventStream(events(body.model == "leave"))

    async def scenario(model: str) -> list[dict]:
        app = FastJsonRoutes(behind, [FastRoute("/v1/s", EchoRequest, stream,
                                                watch_disconnect=True)])
        sent: list[dict] = []
        body = {"type": "http.request", "body": orjson.dumps({"model": model}),
                "more_body": False}
        replies = iter([body])

        async def receive() -> dict:
            try:
                return next(replies)
            except StopIteration:
                await asyncio.sleep(0.2 if model == "leave" else 30)
                return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            sent.append(message)

        await asyncio.wait_for(app({"type": "http", "method": "POST", "path": "/v1/s"},
                                   receive, send), 5)
        return sent

    sent = asyncio.run(scenario("end"))
    assert sent[0]["status"] == 200 and (b"content-type", b"text/event-stream") in sent[0]["headers"]
    assert [m["body"] for m in sent[1:]] == [b"data: 1\n\n", b"data: 2\n\n", b"data: [DONE]\n\n", b""]
    sent = asyncio.run(scenario("leave"))
    assert [m["body"] for m in sent[1:]] == [b"data: 1\n\n", b"data: 2\n\n"]  # then nothing
    assert cleaned == ["end", "leave"]  # the stream's clean-up ran both times
