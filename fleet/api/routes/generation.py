"""POST /v1/chat/completions and /v1/completions, whole or streamed as server-sent events.

The replica does the work and returns OpenAI choice objects; this layer adds the envelope
(id, object, created, model), frames the stream, and cancels generation when the client leaves."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any

import msgspec
import orjson
from fastapi import APIRouter

from fleet.api.chat_images import with_images
from fleet.api.fast_routes import EventStream
from fleet.api.hot_routes import HotRoute
from fleet.api.protocol.generation import ChatCompletionRequest, CompletionRequest
from fleet.api.streams import ReplicaStream, relay
from fleet.messages import GenerationResult, Usage

if TYPE_CHECKING:
    from fleet.api.cluster_handle import ClusterHandle

router = APIRouter()

_OBJECTS = {"chat": ("chat.completion", "chat.completion.chunk", "chatcmpl-"),
            "completion": ("text_completion", "text_completion", "cmpl-")}


def _usage(usage: Usage | None) -> dict[str, int] | None:
    return None if usage is None else msgspec.structs.asdict(usage)


def _event(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


class _Envelope:
    def __init__(self, kind: str, model: str):
        self.kind = kind
        self.whole, self.chunk, prefix = _OBJECTS[kind]
        self.id = prefix + uuid.uuid4().hex
        self.created = int(time.time())
        self.model = model

    def wrap(self, obj: str, **fields: Any) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model,
                "system_fingerprint": None, **fields}


async def generation(cluster: ClusterHandle, body: ChatCompletionRequest | CompletionRequest,
                     kind: str) -> bytes | EventStream:
    """The answer to one chat ("chat") or completion ("completion") request: the whole JSON,
    or the stream (served by fleet.api.fast_routes)."""
    endpoint = "chat_completions" if kind == "chat" else "completions"
    envelope = _Envelope(kind, body.model)
    call = body.generation_call()
    if kind == "chat":
        call = await with_images(cluster, body.model, call)
    if body.keep_alive is not None:  # Ollama's: the model's from now on
        await cluster.router.keep_alives.apply(body.model, body.keep_alive)
    if not body.stream:
        result: GenerationResult = await cluster.router.call(
            body.model, endpoint, "generate", call, tokens=GenerationResult.token_counts)
        payload = envelope.wrap(envelope.whole, choices=result.choices, usage=_usage(result.usage))
        return orjson.dumps(payload)
    stream = await cluster.router.open_stream(body.model, endpoint, call)
    return EventStream(_events(stream, envelope, body.n, body.include_usage))


class _OpenAIChunks:
    """The chunks of a chat or completion stream (fleet.api.streams.StreamDialect)."""

    def __init__(self, envelope: _Envelope, n: int, include_usage: bool):
        self._envelope = envelope
        self._n = n
        self._include_usage = include_usage
        self._usage_field = {"usage": None} if include_usage else {}

    def opening(self) -> list[bytes]:
        envelope = self._envelope
        if envelope.kind != "chat":
            return []
        # OpenAI opens each choice with the role before any content.
        return [_event(envelope.wrap(envelope.chunk, **self._usage_field, choices=[
            {"index": index, "delta": {"role": "assistant", "content": ""},
             "logprobs": None, "finish_reason": None}])) for index in range(self._n)]

    def chunks(self, chunks: list[dict[str, Any]]) -> list[bytes]:
        envelope, usage_field = self._envelope, self._usage_field
        return [_event(envelope.wrap(envelope.chunk, **usage_field, choices=[choice]))
                for choice in chunks]

    def closing(self, usage: Usage | None) -> list[bytes]:
        events = []
        if self._include_usage:
            events.append(_event(self._envelope.wrap(self._envelope.chunk, choices=[],
                                                      usage=_usage(usage))))
        events.append(_DONE)
        return events

    @staticmethod
    def failure(status: int, error: dict[str, Any]) -> list[bytes]:
        # The error object, type and code a request gets before its stream begins, as OpenAI
        # sends it in a stream (fleet.api.errors.stream_error).
        return [_event({"error": error}), _DONE]


_DONE = b"data: [DONE]\n\n"


def _events(stream: ReplicaStream, envelope: _Envelope, n: int,
            include_usage: bool) -> AsyncGenerator[bytes, None]:
    return relay(stream, _OpenAIChunks(envelope, n, include_usage))


async def chat(cluster: ClusterHandle, body: ChatCompletionRequest) -> bytes | EventStream:
    return await generation(cluster, body, "chat")


async def completion(cluster: ClusterHandle, body: CompletionRequest) -> bytes | EventStream:
    return await generation(cluster, body, "completion")


# A client that leaves cancels its answer, and the replica stops generating for it.
CHAT = HotRoute("/v1/chat/completions", ChatCompletionRequest, chat,
                name="create_chat_completion", watch_disconnect=True)
COMPLETION = HotRoute("/v1/completions", CompletionRequest, completion,
                      name="create_completion", watch_disconnect=True)
CHAT.declare(router)
COMPLETION.declare(router)
