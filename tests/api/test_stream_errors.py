"""An error in the middle of a stream (its 200 already sent) reaches the client as an event with
the same OpenAI error object, type and code as the error would have had before the stream began
(fleet.api.errors.error_reply): chat and completion streams, read from a replica's stream inbox
as the API reads them, and the audio routes' event streams."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson

from fleet.api.errors import error_reply
from fleet.api.metrics import FleetMetrics
from fleet.api.routes.audio import _speech_events, _transcript_events
from fleet.api.routes.generation import _Envelope, _events
from fleet.api.streams import Replica, ReplicaStream
from fleet.channel.api_end import StreamInbox
from fleet.errors import BadRequest, Unavailable
from fleet.messages import StreamError, StreamFrame, Usage

CHUNK = {"index": 0, "delta": {"content": "Hel"}, "logprobs": None, "finish_reason": None}


def _data(stream: bytes) -> list[Any]:
    """The server-sent events' payloads, [DONE] as the string."""
    events = [part.removeprefix(b"data: ") for part in stream.split(b"\n\n") if part]
    return [event.decode() if event == b"[DONE]" else orjson.loads(event) for event in events]


def _non_stream_error(exc: Exception) -> dict[str, Any]:
    return error_reply(exc)[1]["error"]


async def _collect(events: AsyncIterator[bytes]) -> bytes:
    return b"".join([event async for event in events])


def _chat_stream(frames: list[dict[str, Any]], lost: str | None = None
                 ) -> tuple[list[Any], FleetMetrics]:
    """A chat stream whose replica pushes `frames` (then loses its channel, `lost`)."""
    async def run() -> tuple[bytes, FleetMetrics]:
        metrics = FleetMetrics()
        inbox = StreamInbox()
        for frame in frames:
            inbox.add(_typed(frame))
        if lost is not None:
            inbox.fail(lost)
        started = metrics.request_started("m", "chat_completions")
        stream = ReplicaStream("m", "chat_completions", Replica(None, "m-0", "w"), "s1", 3,
                               started, metrics, inbox)
        return await _collect(_events(stream, _Envelope("chat", "m"), 1, False)), metrics

    body, metrics = asyncio.run(run())
    return _data(body), metrics


def _typed(frame: dict[str, Any]) -> StreamFrame:
    """A frame as the channel delivers it, an engine's error (a message) an Unavailable."""
    error = frame.get("error")
    if isinstance(error, str):
        frame = {**frame, "error": StreamError.of(Unavailable(error))}
    return StreamFrame(stream="s1", **frame)


def _errors_counted(metrics: FleetMetrics) -> dict[str, float]:
    return {sample.labels["kind"]: sample.value for family in metrics.errors.collect()
            for sample in family.samples if sample.name.endswith("_total")}


def test_an_engine_failure_mid_stream_is_the_error_a_whole_answer_would_get():
    events, metrics = _chat_stream([
        {"chunks": [CHUNK], "done": False},
        {"chunks": [], "done": True, "error": "the engine failed: RuntimeError: boom"}])
    assert events[-1] == "[DONE]"
    error = events[-2]
    # llm_service raises Unavailable(error) for the same failure in a whole answer.
    assert error == {"error": _non_stream_error(Unavailable("the engine failed: RuntimeError: boom"))}
    assert error["error"] == {"message": "the engine failed: RuntimeError: boom",
                              "type": "service_unavailable", "param": None, "code": None}
    assert _errors_counted(metrics) == {"service_unavailable": 1.0}


def test_text_that_arrived_with_the_failure_reaches_the_client_before_the_error():
    # Both frames are waiting when the API reads: the text is not dropped for the error.
    events, _ = _chat_stream([
        {"chunks": [CHUNK], "done": False},
        {"chunks": [{**CHUNK, "delta": {"content": "lo"}}], "done": True,
         "error": "the engine failed: RuntimeError: boom"}])
    texts = [e["choices"][0]["delta"]["content"] for e in events[:-2] if e["choices"]]
    assert texts == ["", "Hel", "lo"]  # the role's opening event, then both pieces
    assert events[-2]["error"]["message"] == "the engine failed: RuntimeError: boom"
    lost, _ = _chat_stream([{"chunks": [CHUNK], "done": False}], lost="connection reset")
    assert [e["choices"][0]["delta"]["content"] for e in lost[:-2]] == ["", "Hel"]


def test_a_replica_lost_mid_stream_keeps_its_code():
    events, _ = _chat_stream([{"chunks": [CHUNK], "done": False}], lost="connection reset")
    error = events[-2]["error"]
    assert error["type"] == "service_unavailable" and error["code"] == "replica_lost"
    assert "stopped in the middle of this stream (connection reset)" in error["message"]
    assert set(error) == {"message", "type", "param", "code"}


def test_a_stream_that_breaks_in_fleets_own_code_is_an_internal_error_as_elsewhere():
    # A chunk that cannot be written as JSON (a replica's frames are checked against their type
    # on the channel, so only Fleet's own code can make one): it fails in the route itself.
    events, metrics = _chat_stream([{"chunks": [{**CHUNK, 1: "not a JSON key"}], "done": True,
                                     "usage": Usage.of(3, 1)}])
    error = events[-2]["error"]
    assert events[-1] == "[DONE]"
    assert error["type"] == "internal_error" and error["code"] is None
    assert error["message"].startswith("internal error: TypeError")
    assert _errors_counted(metrics) == {"internal_error": 1.0}


async def _failing(items: list[Any], error: Exception) -> AsyncIterator[Any]:
    for item in items:
        yield item
    raise error


def test_audio_streams_send_the_same_error_object():
    refused = BadRequest("the audio ended early", code="bad_audio")
    broken = RuntimeError("decoder crashed")
    cases = [
        (_transcript_events(_failing([{"type": "delta", "text": "Hi"}], refused)), refused),
        (_transcript_events(_failing([], broken)), broken),
        (_speech_events(_failing([b"\0\0"], refused)), refused),
        (_speech_events(_failing([], broken)), broken),
    ]
    for events, cause in cases:
        data = _data(asyncio.run(_collect(events)))
        error = next(event for event in data if isinstance(event, dict) and "error" in event)
        assert error == {"type": "error", "error": _non_stream_error(cause)}
    assert _non_stream_error(refused)["type"] == "invalid_request_error"
    assert _non_stream_error(broken)["type"] == "internal_error"


def test_a_polled_stream_also_gets_its_text_before_the_error():
    """Streams polled from the replica (replica channels off): the same order."""
    from types import SimpleNamespace

    from fleet.cluster.replica.services.llm import LLMService, _Stream

    async def run() -> list[Any]:
        failure = StreamError.of(Unavailable("the engine failed: RuntimeError: boom"))
        stream = _Stream(choices=[], prompt_tokens=3, chunks=[CHUNK], done=True, error=failure)
        service = SimpleNamespace(_streams={"s1": stream})
        first = await LLMService.next_chunks(service, "s1")  # type: ignore[arg-type]
        last = await LLMService.next_chunks(service, "s1")  # type: ignore[arg-type]
        # The API raises the error the last poll carries (fleet.api.streams.ReplicaStream).
        error = last.error.exception() if last.error is not None else None
        return [first, error.message if isinstance(error, Unavailable) else None,
                service._streams]

    first, error, left = asyncio.run(run())
    assert first == StreamFrame(stream="s1", chunks=[CHUNK])
    assert error == "the engine failed: RuntimeError: boom" and left == {}
