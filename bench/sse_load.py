"""Closed-loop load of streamed chat requests, with a client that costs the server little CPU.

On a 2-core machine the load client shares the cores with the engine it measures, and the direct
baseline (the engine's library in-process) has no client at all. An asyncio client spends about
0.13 ms of CPU per streamed token (a loop iteration, a future and a coroutine resume for every
event); this one is a plain `selectors` loop over raw sockets: one `select` and one `recv` per
event, and the stream searched as bytes (first content, then the usage at the end) instead of
parsed. Each connection sends one request (Connection: close), reads the stream to its end, and
sends the next, `concurrency` of them at once."""

from __future__ import annotations

import json
import re
import selectors
import socket
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from common import percentile

_FIRST_CONTENT = re.compile(rb'"(?:content|text)":"[^"]')
_COMPLETION_TOKENS = re.compile(rb'"completion_tokens":(\d+)')


@dataclass(frozen=True)
class Dialect:
    """How a stream shows its first generated text and, in its last events, the tokens it
    generated: OpenAI's chat and completions by default; Anthropic's Messages and OpenAI's
    Responses below."""

    first_content: re.Pattern[bytes] = _FIRST_CONTENT
    generated_tokens: re.Pattern[bytes] = _COMPLETION_TOKENS


CHAT = Dialect()
MESSAGES = Dialect(re.compile(rb'"text":"[^"]'), re.compile(rb'"output_tokens":(\d+)'))
# Text's deltas are the only "delta" strings of an answer without tools.
RESPONSES = Dialect(re.compile(rb'"delta":"[^"]'), re.compile(rb'"output_tokens":(\d+)'))


@dataclass
class _Stream:
    sock: socket.socket
    started: float
    dialect: Dialect
    first: float | None = None
    head: bytes = b""
    tail: bytes = b""
    pieces: list[bytes] = field(default_factory=list)

    def feed(self, chunk: bytes) -> None:
        if not self.head:
            self.head = chunk
        if self.first is None and self.dialect.first_content.search(self.tail + chunk):
            self.first = time.perf_counter() - self.started
        self.tail = (self.tail + chunk)[-4096:]  # the usage event comes last

    def result(self) -> tuple[float, int]:
        counts = self.dialect.generated_tokens.findall(self.tail)
        if not self.head.startswith(b"HTTP/1.1 200") or not counts:
            raise RuntimeError(f"the stream failed: {self.head[:300]!r} ... {self.tail[-300:]!r}")
        return self.first or 0.0, int(counts[-1])


def _open(host: str, port: int, request: bytes, dialect: Dialect) -> _Stream:
    sock = socket.create_connection((host, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    stream = _Stream(sock, time.perf_counter(), dialect)
    sock.sendall(request)
    sock.setblocking(False)
    return stream


def closed_loop(url: str, body_for: Callable[[int], dict[str, Any]], concurrency: int,
                duration_s: float, headers: dict[str, str] | None = None,
                dialect: Dialect = CHAT) -> dict[str, float]:
    """Tokens/s over the window and time to first token (p50/p99) of the streams it ran;
    `headers` go with every request."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80

    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())

    def request(i: int) -> bytes:
        payload = json.dumps(body_for(i)).encode()
        return (f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
                f"{extra}Connection: close\r\n\r\n").encode() + payload

    selector = selectors.DefaultSelector()
    counter = iter(range(10**9))
    ttfts: list[float] = []
    tokens = 0
    started = time.perf_counter()
    stop_at = started + duration_s
    for _ in range(concurrency):
        stream = _open(host, port, request(next(counter)), dialect)
        selector.register(stream.sock, selectors.EVENT_READ, stream)
    while selector.get_map():
        for key, _ in selector.select():
            stream = key.data
            chunk = stream.sock.recv(65536)
            if chunk:
                stream.feed(chunk)
                continue
            selector.unregister(stream.sock)
            stream.sock.close()
            first, generated = stream.result()
            ttfts.append(first)
            tokens += generated
            if time.perf_counter() < stop_at:
                stream = _open(host, port, request(next(counter)), dialect)
                selector.register(stream.sock, selectors.EVENT_READ, stream)
    elapsed = time.perf_counter() - started
    selector.close()
    return {"requests": len(ttfts), "tokens_per_s": round(tokens / elapsed, 1),
            "ttft_p50_ms": round(statistics.median(ttfts) * 1000, 1),
            "ttft_p99_ms": round(percentile(ttfts, 0.99) * 1000, 1)}
