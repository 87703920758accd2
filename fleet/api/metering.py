"""What each request used, noted as it is served: the one place where the per-key limits
(fleet.api.rate_limits) and the usage records (fleet.api.usage_recorder) learn of a request.

The metering middleware sits behind the key check (so the request's Grant is in its scope) and
in front of every route. For each HTTP request it puts a `Metered` in a context variable; the
router notes in it which model the request reached and the tokens it used (fleet.api.routing
and fleet.api.streams, where the metrics learn the same numbers), the image and audio routes
their images and seconds. When the answer has been sent to its end, the middleware hands the
filled `Metered` to the limiter (tokens per minute, budgets) and the recorder (usage rows,
written to the database in batches off the hot path). A request that reached no model
(management, the UI, a 404) is neither counted nor recorded.

Why a context variable: the numbers are known deep in the router, several calls below a route
handler, and streamed answers finish in the response's own task; a task started by the request
inherits the variable, and the object it holds is shared, so every note lands in the one
`Metered` of its request. It costs one object and one `ContextVar.set` per request."""

from __future__ import annotations

import time
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol

from fleet.api.auth.keys import Grant
from fleet.api.auth.middleware import GRANT_SCOPE_KEY


@dataclass(slots=True)
class Metered:
    """One request's use: who (its key; None without keys), which model, what it used, and,
    once answered, its HTTP status and latency."""

    grant: Grant | None
    started: float  # time.perf_counter() at its arrival
    model: str | None = None  # the model uid it reached; None: no model
    endpoint: str | None = None  # the metrics' name of the route (chat, embeddings, ...)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    images: int = 0
    audio_seconds: float = 0.0
    status: int = 0
    latency_s: float = 0.0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


_current: ContextVar[Metered | None] = ContextVar("fleet_metered", default=None)


def reached(model: str, endpoint: str) -> None:
    """The request reached `model`'s route `endpoint` (the router, as it counts the start)."""
    metered = _current.get()
    if metered is not None:
        metered.model, metered.endpoint = model, endpoint


def used_tokens(prompt: int, completion: int) -> None:
    """Tokens the answer used, as the engine counted them (added: a request may call twice)."""
    metered = _current.get()
    if metered is not None:
        metered.prompt_tokens += prompt
        metered.completion_tokens += completion


def made_images(count: int) -> None:
    metered = _current.get()
    if metered is not None:
        metered.images += count


def heard_audio(seconds: float) -> None:
    """Seconds of audio transcribed or spoken."""
    metered = _current.get()
    if metered is not None:
        metered.audio_seconds += seconds


class Refusal(Protocol):
    """What the limiter answers a request past a limit: a 429 with its headers."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


class Limiter(Protocol):
    """Per-key limits (fleet.api.rate_limits). `admit` is called at an inference request's
    arrival (LIMITED_PATHS) and either refuses it or takes its place (a concurrent slot, a
    request of the minute); the headers it returns go on the answer; `finished` is called once
    with what it used, however the request ended. Any other request of a limited key gets
    `headers`: where the key stands, nothing taken."""

    def admit(self, grant: Grant) -> Refusal | list[tuple[bytes, bytes]]: ...

    def finished(self, metered: Metered) -> None: ...

    def headers(self, grant: Grant) -> list[tuple[bytes, bytes]]: ...


# The routes that a key's limits count: those that run a model. Not the listings, management,
# the UI, nor Anthropic's count_tokens, which tokenizes without generating (Anthropic limits it
# apart from Messages): a client polling /v1/models must not spend its key's requests.
LIMITED_PATHS = frozenset({
    "/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/rerank", "/v1/messages",
    "/v1/responses",
    "/v1/images/generations", "/v1/images/edits", "/v1/images/variations",
    "/v1/images/inpainting", "/v1/images/ocr",
    "/v1/audio/transcriptions", "/v1/audio/translations", "/v1/audio/speech",
})


class UsageSink(Protocol):
    """Where finished requests go to be recorded (fleet.api.usage_recorder): `add` must not
    block; the writing happens elsewhere."""

    def add(self, metered: Metered) -> None: ...


class MeteringMiddleware:
    """ASGI: a Metered per HTTP request; the limiter's admission and headers for keys with
    limits; what the request used handed on when its answer is complete."""

    def __init__(self, app: Any, limiter: Limiter | None, sink: UsageSink | None) -> None:
        self._app = app
        self._limiter = limiter
        self._sink = sink

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        grant: Grant | None = scope.get(GRANT_SCOPE_KEY)
        extra: list[tuple[bytes, bytes]] = []
        # The limiter of a request that took a place (an inference request of a limited key),
        # to give it back once the answer ends; None: nothing taken.
        taken: Limiter | None = None
        if self._limiter is not None and grant is not None and grant.limited:
            if scope["path"] in LIMITED_PATHS:
                admission = self._limiter.admit(grant)
                if not isinstance(admission, list):
                    await send({"type": "http.response.start", "status": admission.status,
                                "headers": admission.headers})
                    await send({"type": "http.response.body", "body": admission.body})
                    return
                extra, taken = admission, self._limiter
            else:
                extra = self._limiter.headers(grant)
        metered = Metered(grant, time.perf_counter())
        token = _current.set(metered)

        async def send_noting(message: dict) -> None:
            if message["type"] == "http.response.start":
                metered.status = message["status"]
                if extra:
                    message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        try:
            await self._app(scope, receive, send_noting)
        finally:
            _current.reset(token)
            metered.latency_s = time.perf_counter() - metered.started
            if metered.status == 0:  # the client left before any answer
                metered.status = 499
            if taken is not None:  # also when the route failed or the client left
                taken.finished(metered)
            if self._sink is not None and metered.model is not None:
                self._sink.add(metered)


def metered(app: Any, limiter: Limiter | None, sink: UsageSink | None) -> Any:
    """`app` behind the metering middleware, when something wants what it notes."""
    if limiter is None and sink is None:
        return app
    return MeteringMiddleware(app, limiter, sink)
