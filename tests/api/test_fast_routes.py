"""The lean front for the busiest routes answers like the rest of the API: the OpenAI error shape
for a bad body, a Fleet error's status and headers, 413 for a body over the cap, 500 for a bug,
and everything else goes on to the application behind it. Driven as ASGI, the way uvicorn does."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from pydantic import BaseModel, Field

from fleet.api.fast_routes import FastJsonRoutes, FastRoute
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
    await send({"type": "http.response.start", "status": 299, "headers": []})
    await send({"type": "http.response.body", "body": b"behind"})


def request(path: str, body: bytes, method: str = "POST", chunk: int = 0,
            limit: int = 1024) -> tuple[int, dict[bytes, bytes], bytes, dict]:
    app = FastJsonRoutes(behind, [FastRoute("/v1/echo", EchoRequest, echo)], max_body_bytes=limit)
    parts = [body[i:i + chunk] for i in range(0, len(body), chunk)] if chunk else [body]
    messages = [{"type": "http.request", "body": p, "more_body": i < len(parts) - 1}
                for i, p in enumerate(parts)]
    sent: list[dict] = []
    scope = {"type": "http", "method": method, "path": path}

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
    assert status == 413 and "larger than 1024 bytes" in _error(body)["message"]
    status, _, body, _ = request("/v1/echo", b'{"model": "bug"}')
    assert status == 500 and "ZeroDivisionError" in _error(body)["message"]


def test_other_paths_and_methods_go_to_the_application_behind():
    assert request("/v1/other", b"{}")[2] == b"behind"
    assert request("/v1/echo", b"", method="GET")[2] == b"behind"
