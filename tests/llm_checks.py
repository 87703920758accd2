"""Checks that every LLM engine must pass the same way through a real cluster (llama.cpp in
tests/e2e/test_llamacpp.py, vLLM in tests/e2e/test_vllm.py): streamed text, exact lengths and
logprobs, concurrent streams running together, and a client that leaves mid-stream."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from fleet.messages import Event, StreamFailed, TokenEvent
from tests.concurrency import run_while_watching

IM_END = 2  # SmolLM2's end-of-turn token


def streamed_text(chunks) -> tuple[str, str | None, Any]:
    """The text, finish reason and usage of an openai SDK stream (chat or completions)."""
    text, reason, usage = "", None, None
    for chunk in chunks:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            text += (choice.delta.content if hasattr(choice, "delta") else choice.text) or ""
            reason = choice.finish_reason or reason
    return text, reason, usage


def check_length_and_logprobs(openai_client, model: str, messages: list[dict[str, str]]) -> None:
    """Two greedy choices of exactly three tokens, with two top logprobs each."""
    answer = openai_client.chat.completions.create(
        model=model, messages=messages, temperature=0, max_tokens=3, n=2, logprobs=True,
        top_logprobs=2)
    assert [c.finish_reason for c in answer.choices] == ["length", "length"]
    assert answer.usage.completion_tokens == 6
    assert answer.choices[0].message.content == answer.choices[1].message.content
    entries = answer.choices[0].logprobs.content
    assert len(entries) == 3 and "".join(e.token for e in entries) == answer.choices[0].message.content
    for entry in entries:
        assert entry.logprob <= 0 and len(entry.top_logprobs) == 2
        assert entry.top_logprobs[0].logprob == pytest.approx(entry.logprob, abs=1e-4)


def run_concurrent_streams(client, openai_client, model: str, count: int,
                           max_tokens: int) -> dict[str, int]:
    """`count` streams at once, each answered; returns the replica's batch figures after them
    (the most sequences it ran together: `max_size`)."""
    def one(i: int) -> tuple[str, str | None]:
        text, reason, _ = streamed_text(openai_client.chat.completions.create(
            model=model, stream=True, temperature=0, max_tokens=max_tokens,
            messages=[{"role": "user", "content": f"Count from {i} to {i + 10}."}]))
        return text, reason

    results, seen = run_while_watching(
        one, count, lambda: client.replicas(model)[0]["batch"].get("running", 0))
    for i, (text, reason) in enumerate(results):
        assert reason in ("stop", "length") and text.strip(), (i, text)
    assert max(seen) > 1
    batch = client.replicas(model)[0]["batch"]
    assert batch["running"] == 0
    return batch


def leave_mid_stream(endpoint: str, client, model: str) -> None:
    """A long stream whose client goes after a few events: the engine stops it."""
    body = {"model": model, "stream": True, "max_tokens": 1500, "temperature": 0,
            "logit_bias": {str(IM_END): -100},
            "messages": [{"role": "user", "content": "Write a long story."}]}
    with httpx.Client(base_url=endpoint, timeout=60) as http:
        with http.stream("POST", "/v1/chat/completions", json=body) as response:
            lines = response.iter_lines()
            for _ in range(6):
                next(lines)
            assert client.replicas(model)[0]["batch"]["running"] == 1
    deadline = time.monotonic() + 10
    while client.replicas(model)[0]["batch"]["running"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert client.replicas(model)[0]["batch"]["running"] == 0


def event_fields(event: Event) -> dict[str, Any]:
    """A scheduler's event (fleet.messages) as the fields it carries, for comparisons:
    {"index", "text", "logprobs"?, "finish_reason"?, "completion_tokens"?, "stop"?},
    {"done": True}, or {"error": message}."""
    if isinstance(event, StreamFailed):
        return {"error": event.error.message}
    if not isinstance(event, TokenEvent):
        return {"done": True}
    fields: dict[str, Any] = {"index": event.index, "text": event.text}
    if event.logprobs is not None:
        fields["logprobs"] = event.logprobs
    if event.finish_reason is not None:
        fields["finish_reason"] = event.finish_reason
        fields["completion_tokens"] = event.completion_tokens
    if event.stop is not None:
        fields["stop"] = event.stop
    return fields
