"""The API's outer door, in-process: which Host names a server answers to, for each kind of
listen address, and the guard's answers to cross-origin and mistyped requests (driven as ASGI,
the way uvicorn does)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from fleet.api.auth.request_guard import HostRule, RequestGuard, guarded, host_name


@pytest.mark.parametrize(("header", "name"), [
    ("127.0.0.1:9997", "127.0.0.1"), ("LocalHost", "localhost"), ("[::1]:9997", "::1"),
    ("::1", "::1"), ("example.com.", "example.com"), ("Fleet.Internal:80", "fleet.internal"),
])
def test_host_names_are_read_without_port_case_or_brackets(header, name):
    assert host_name(header) == name


def test_a_loopback_server_answers_to_loopback_names_only():
    rule = HostRule("127.0.0.1")
    for name in ("127.0.0.1", "localhost", "127.0.0.2", "::1", "app.localhost"):
        assert rule.allows(name), name
    for name in ("attacker.example", "192.0.2.7", "localhost.attacker.example", "0.0.0.0"):
        assert not rule.allows(name), name


def test_a_server_on_one_address_answers_to_it_and_to_the_names_it_is_given():
    rule = HostRule("10.0.0.5", ["fleet.internal", "*.corp.example"])
    for name in ("10.0.0.5", "fleet.internal", "gpu1.corp.example"):
        assert rule.allows(name), name
    for name in ("10.0.0.6", "localhost", "corp.example", "attacker.example"):
        assert not rule.allows(name), name


def test_a_server_on_every_interface_answers_to_ip_literals_and_its_own_names():
    import socket

    rule = HostRule("0.0.0.0")
    for name in ("10.1.2.3", "::1", "localhost", host_name(socket.gethostname())):
        assert rule.allows(name), name
    assert not rule.allows("attacker.example")


def test_a_star_turns_the_host_check_off():
    assert HostRule("127.0.0.1", ["*"]).allows("anything.example")


def _drive(app: Any, method: str, path: str, headers: dict[str, str],
           body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """One request through `app` as uvicorn would send it: (status, headers, body)."""
    sent: list[dict] = []
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    if body:
        raw.append((b"content-length", str(len(body)).encode()))
    scope = {"type": "http", "method": method, "path": path, "headers": raw,
             "query_string": b"", "scheme": "http", "server": ("127.0.0.1", 9997)}
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start = sent[0]
    answer = b"".join(m.get("body", b"") for m in sent[1:])
    return (start["status"], {k.decode(): v.decode() for k, v in start.get("headers", [])},
            answer)


async def _ok(scope: dict, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"served"})


GUARD = RequestGuard(_ok, HostRule("127.0.0.1"), upload_paths=frozenset({"/v1/upload"}))
HOST = {"host": "127.0.0.1:9997"}
JSON = {**HOST, "content-type": "application/json"}


def _error(reply: tuple[int, dict[str, str], bytes], status: int) -> dict[str, Any]:
    assert reply[0] == status, reply
    return orjson.loads(reply[2])["error"]


def test_a_rebound_host_is_refused_before_anything_reads_the_request():
    error = _error(_drive(GUARD, "POST", "/v1/models",
                          {**JSON, "host": "attacker.example:9997",
                           "origin": "http://attacker.example:9997"}, b"{}"), 400)
    assert error["code"] == "host_not_allowed"
    assert "--allowed-host attacker.example" in error["message"]


def test_cross_origin_requests_that_change_state_are_refused():
    for origin in ("http://evil.example", "null", "http://127.0.0.1:8000"):
        error = _error(_drive(GUARD, "POST", "/v1/embeddings", {**JSON, "origin": origin},
                              b"{}"), 403)
        assert error["code"] == "origin_not_allowed" and "--cors-origin" in error["message"]
    assert _error(_drive(GUARD, "DELETE", "/v1/models/m", {**HOST, "origin": "http://e.x"}),
                  403)["type"] == "permission_error"
    # The same page's own requests, and reading across origins (the browser keeps the answer
    # from the page unless CORS allows it), are served.
    assert _drive(GUARD, "POST", "/v1/embeddings", {**JSON, "origin": "http://127.0.0.1:9997"},
                  b"{}")[0] == 200
    assert _drive(GUARD, "GET", "/v1/models", {**HOST, "origin": "http://evil.example"})[0] == 200


def test_a_body_must_say_it_is_json_where_the_route_takes_json():
    for content_type in ("text/plain", "application/x-www-form-urlencoded", ""):
        headers = {**HOST, "content-type": content_type} if content_type else HOST
        error = _error(_drive(GUARD, "POST", "/v1/embeddings", headers, b'{"input": "x"}'), 415)
        assert "application/json" in error["message"]
    for content_type in ("application/json; charset=utf-8", "application/vnd.api+json"):
        assert _drive(GUARD, "POST", "/v1/embeddings", {**HOST, "content-type": content_type},
                      b"{}")[0] == 200
    assert _drive(GUARD, "POST", "/v1/models/m/cancel", HOST)[0] == 200  # no body, no type
    # Upload routes take forms, and check what they get themselves.
    form = {**HOST, "content-type": "multipart/form-data; boundary=x"}
    assert _drive(GUARD, "POST", "/v1/upload", form, b"--x--")[0] == 200


def test_allowed_origins_pass_and_get_cors_answers():
    app = guarded(_ok, "127.0.0.1", [], ["https://app.example"], frozenset())
    preflight = _drive(app, "OPTIONS", "/v1/chat/completions", {
        **HOST, "origin": "https://app.example", "access-control-request-method": "POST",
        "access-control-request-headers": "authorization, content-type"})
    assert preflight[0] == 200
    assert preflight[1]["access-control-allow-origin"] == "https://app.example"
    served = _drive(app, "POST", "/v1/chat/completions",
                    {**JSON, "origin": "https://app.example"}, b"{}")
    assert served[0] == 200 and served[1]["access-control-allow-origin"] == "https://app.example"
    other = _drive(app, "OPTIONS", "/v1/chat/completions", {
        **HOST, "origin": "https://evil.example", "access-control-request-method": "POST"})
    assert "access-control-allow-origin" not in other[1]
    _error(_drive(app, "POST", "/v1/chat/completions",
                  {**JSON, "origin": "https://evil.example"}, b"{}"), 403)


def test_without_cors_origins_no_answer_says_cors():
    app = guarded(_ok, "127.0.0.1", [], [], frozenset())
    reply = _drive(app, "GET", "/v1/models", {**HOST, "origin": "https://app.example"})
    assert reply[0] == 200 and not any(k.startswith("access-control") for k in reply[1])
