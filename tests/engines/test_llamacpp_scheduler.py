"""The llama.cpp scheduler's own logic, on a scripted stand-in for xllamacpp's server: slots and
first-come-first-served waiting, the request limit (429), cancellation of waiting and running
choices, n choices, errors, and llama.cpp's chunks turned into Fleet's events (stop ids, logprobs,
token counts). The real server is checked end to end in tests/e2e/test_llamacpp.py."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from fleet.engines.llamacpp_scheduler import LlamaCppScheduler, _ChoiceOutput, completion_body
from fleet.errors import Conflict, TooManyRequests
from fleet.generation.params import SamplingParams
from fleet.generation.scheduling import GenerationRequest
from fleet.messages import Event
from tests.llm_checks import event_fields

PIECES = [(" Hello", 11), (" world", 12), ("!", 13)]


def _chunk(text: str, token_id: int | None = None, finish: str | None = None,
           tokens: int = 0) -> dict[str, Any]:
    choice: dict[str, Any] = {"text": text, "index": 0, "finish_reason": finish, "logprobs": None}
    if token_id is not None:
        top = [{"id": token_id, "token": text, "bytes": list(text.encode()), "logprob": -0.1},
               {"id": 99, "token": "?", "bytes": [63], "logprob": -3.0}]
        choice["logprobs"] = {"content": [{**top[0], "top_logprobs": top}]}
    chunk = {"choices": [choice], "object": "text_completion"}
    if finish:
        chunk["usage"] = {"completion_tokens": tokens, "prompt_tokens": 3}
    return chunk


class FakeServer:
    """Streams PIECES to the callback, like xllamacpp's handle_completions; a prompt of [0] holds
    its slot (between pieces) until `release` is set, and [666] answers with an error."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.release = threading.Event()
        self.stopped_early = 0

    def handle_completions(self, body: dict[str, Any], callback: Any) -> None:
        self.bodies.append(body)
        if body["prompt"] == [666]:
            callback({"error": {"code": 500, "message": "out of cheese"}})
            return
        for position, (text, token_id) in enumerate(PIECES):
            if callback(_chunk(text, token_id if "n_probs" in body else None)):
                self.stopped_early += 1
                return
            if body["prompt"] == [0] and position == 0:
                self.release.wait(10)
        callback(_chunk("", finish="stop", tokens=len(PIECES)))


class Engine:
    def __init__(self) -> None:
        self.server = FakeServer()
        self.completions = self.server.handle_completions


class Harness:
    """A scheduler running on its own threads, its events gathered per request on the loop."""

    def __init__(self, slots: int = 2, max_requests: int = 8):
        self.loop = asyncio.get_running_loop()
        self.engine = Engine()
        self.scheduler = LlamaCppScheduler(self.engine, slots=slots, max_requests=max_requests)
        self.events: dict[str, list[dict[str, Any]]] = {}
        self.finished: dict[str, asyncio.Event] = {}
        self.runner = self.loop.run_in_executor(None, self.scheduler.run_forever)

    def submit(self, request_id: str, prompt: list[int], n: int = 1, **settings: Any) -> None:
        self.events[request_id], self.finished[request_id] = [], asyncio.Event()

        def on_loop(events: list[Event]) -> None:
            fields = [event_fields(e) for e in events]
            self.events[request_id].extend(fields)
            if any("done" in e or "error" in e for e in fields):
                self.finished[request_id].set()

        def deliver(events: list[Event]) -> None:  # in a slot's thread
            self.loop.call_soon_threadsafe(on_loop, events)

        params = SamplingParams(max_tokens=16, **settings)
        self.scheduler.submit(GenerationRequest(request_id, prompt, params, n, deliver))

    async def wait(self, request_id: str) -> list[dict[str, Any]]:
        await asyncio.wait_for(self.finished[request_id].wait(), 10)
        return self.events[request_id]

    async def until(self, condition: Any) -> None:
        for _ in range(500):
            if condition():
                return
            await asyncio.sleep(0.01)
        raise AssertionError("condition not met")

    async def close(self) -> None:
        self.engine.server.release.set()
        self.scheduler.stop()
        await asyncio.wait_for(self.runner, 10)


def run_with_harness(scenario: Any, **options: Any) -> None:
    """`scenario(harness)` on a fresh event loop, the scheduler stopped however it ends."""
    async def main() -> None:
        harness = Harness(**options)  # made on the running loop
        try:
            await scenario(harness)
        finally:
            await harness.close()

    asyncio.run(main())


def test_request_body_spells_out_openai_defaults():
    body = completion_body([1, 2, 3], SamplingParams(max_tokens=5, temperature=0.0))
    assert body["prompt"] == [1, 2, 3] and body["n_predict"] == 5 and body["stream"] is True
    assert (body["top_k"], body["min_p"], body["top_p"]) == (0, 0.0, 1.0)  # llama.cpp: 40, 0.05
    assert body["repeat_last_n"] == 0 and "seed" not in body and "n_probs" not in body
    tuned = completion_body([1, 2], SamplingParams(max_tokens=5, seed=7, presence_penalty=0.5,
                                                   logit_bias={2: -100.0}, stop_token_ids=(9,)))
    assert tuned["seed"] == 7 and tuned["logit_bias"] == [[2, -100.0]]
    assert tuned["repeat_last_n"] == 7  # prompt and answer, not llama.cpp's last 64
    assert tuned["n_probs"] == 1  # token ids come with probabilities only: needed for stop ids
    assert completion_body([1], SamplingParams(max_tokens=1, logprobs=True, top_logprobs=3))["n_probs"] == 3


def test_chunks_become_events_with_stop_ids_and_logprobs():
    output = _ChoiceOutput(1, SamplingParams(max_tokens=8, logprobs=True, top_logprobs=1,
                                             stop_token_ids=(12,)))
    first = event_fields(output.feed(_chunk(" Hello", 11)))
    assert first["text"] == " Hello" and first["index"] == 1 and not output.finished
    assert first["logprobs"] == [{"token": " Hello", "logprob": -0.1, "bytes": list(b" Hello"),
                                  "top_logprobs": [{"token": " Hello", "logprob": -0.1,
                                                    "bytes": list(b" Hello")}]}]
    stopped = event_fields(output.feed(_chunk(" world", 12)))
    assert stopped["text"] == "" and output.finished  # the stop token's own text is not sent
    assert (stopped["finish_reason"], stopped["completion_tokens"]) == ("stop", 2)
    plain = _ChoiceOutput(0, SamplingParams(max_tokens=3))
    assert "logprobs" not in event_fields(plain.feed(_chunk(" Hello", 11)))
    last = event_fields(plain.feed(_chunk("", finish="length", tokens=3)))
    assert (last["finish_reason"], last["completion_tokens"]) == ("length", 3)
    broken = _ChoiceOutput(0, SamplingParams(max_tokens=3))
    assert broken.feed({"error": {"message": "boom"}}) is None
    assert broken.error is not None and broken.error.message == "the engine failed: boom"


def _timed(chunk: dict[str, Any], made: int) -> dict[str, Any]:
    """A chunk with llama.cpp's per-token timings (`timings_per_token`)."""
    return {**chunk, "timings": {"predicted_n": made}}


def test_fleet_watches_the_stop_strings_and_names_the_one_met():
    """llama.cpp's stream never says which stop string it met, so Fleet watches them itself:
    llama.cpp gets none, and counts each chunk's tokens for the count at a stop."""
    params = SamplingParams(max_tokens=8, stop=("world", "never"))
    body = completion_body([1], params)
    assert body["stop"] == [] and body["timings_per_token"] is True
    assert completion_body([1], SamplingParams(max_tokens=8))["timings_per_token"] is False
    output = _ChoiceOutput(0, params)
    assert event_fields(output.feed(_timed(_chunk(" Hello wor"), 2)))["text"] == " Hello "
    stopped = event_fields(output.feed(_timed(_chunk("ld!"), 3)))
    assert output.finished and stopped["text"] == ""
    assert (stopped["finish_reason"], stopped["stop"], stopped["completion_tokens"]) == (
        "stop", "world", 3)
    # Text held as the start of a stop string that never came is sent at the end.
    held = _ChoiceOutput(0, params)
    assert event_fields(held.feed(_timed(_chunk(" new"), 1)))["text"] == " ne"  # "w" held
    last = event_fields(held.feed(_chunk("", finish="stop", tokens=1)))
    assert last["text"] == "w" and "stop" not in last


def test_slots_limit_and_first_come_first_served():
    async def scenario(harness: Harness) -> None:
        harness.submit("held", [0])
        await harness.until(lambda: harness.scheduler.stats.running == 1)
        harness.submit("next", [5])
        with pytest.raises(Conflict):  # an id in progress: it would hold a place for good
            harness.submit("next", [5])
        with pytest.raises(TooManyRequests):
            harness.submit("third", [5])
        await asyncio.sleep(0.05)
        assert (harness.scheduler.stats.running, harness.scheduler.stats.waiting) == (1, 1)
        harness.engine.server.release.set()
        held = await harness.wait("held")
        assert "".join(e.get("text", "") for e in held) == " Hello world!"
        assert held[-2]["finish_reason"] == "stop" and held[-2]["completion_tokens"] == 3
        assert held[-1] == {"done": True}
        assert (await harness.wait("next"))[-1] == {"done": True}
        assert [b["prompt"] for b in harness.engine.server.bodies] == [[0], [5]]
        harness.submit("third", [5])  # room again
        assert (await harness.wait("third"))[-1] == {"done": True}

    run_with_harness(scenario, slots=1, max_requests=2)


def test_cancel_frees_a_running_slot_and_drops_a_waiting_choice():
    async def scenario(harness: Harness) -> None:
        harness.submit("running", [0])
        harness.submit("waiting", [5])
        await harness.until(lambda: harness.scheduler.stats.running == 1)
        harness.scheduler.cancel("waiting")
        harness.scheduler.cancel("running")
        harness.engine.server.release.set()  # its next piece finds it cancelled
        await harness.until(lambda: harness.scheduler.stats.running == 0)
        assert harness.engine.server.stopped_early == 1
        assert len(harness.engine.server.bodies) == 1  # the waiting one never started
        assert not any("done" in e for e in harness.events["running"])
        assert harness.events["waiting"] == []

    run_with_harness(scenario, slots=1)


def test_n_choices_have_their_own_seeds_and_finish_together():
    async def scenario(harness: Harness) -> None:
        harness.submit("pair", [5], n=2, seed=7)
        events = await harness.wait("pair")
        assert sorted(e["index"] for e in events if "finish_reason" in e) == [0, 1]
        assert events[-1] == {"done": True}
        assert sorted(b["seed"] for b in harness.engine.server.bodies) == [7, 8]

    run_with_harness(scenario, slots=2)


def test_an_engine_error_fails_the_request_and_the_slot_serves_on():
    async def scenario(harness: Harness) -> None:
        harness.submit("bad", [666])
        assert (await harness.wait("bad"))[-1] == {"error": "the engine failed: out of cheese"}
        harness.submit("good", [5])
        assert (await harness.wait("good"))[-1] == {"done": True}

    run_with_harness(scenario, slots=1)
