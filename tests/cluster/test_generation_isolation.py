"""Fleet's continuous-batching scheduler driving the real Transformers engine on a tiny Qwen2:
its request limit (a 429 past it, the place given back when a request ends or is cancelled),
and one bad sequence failing only its own request: two requests in one prefill, one of them
with a setting the engine cannot take (a seed past 64 bits, which the API now refuses, but which made
torch raise in prefill and failed every sequence of the batch)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from fleet.catalogue.registry import parse_family
from fleet.cluster.replica.generation_scheduler import GenerationScheduler
from fleet.engines.transformers_llm import TransformersLLM
from fleet.errors import TooManyRequests
from fleet.generation.params import SamplingParams
from fleet.generation.scheduling import GenerationRequest
from fleet.messages import Event
from tests.llm_builders import build_tiny_qwen2
from tests.llm_checks import event_fields


class Inbox:
    """What each request received, and a way to wait for its end."""

    def __init__(self) -> None:
        self.events: dict[str, list[dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def deliver(self, name: str):
        self.events[name] = []

        def take(events: list[Event]) -> None:
            with self._lock:
                self.events[name].extend(event_fields(e) for e in events)
        return take

    def wait_ended(self, *names: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if all(self._ended(self.events[n]) for n in names):
                    return
            time.sleep(0.01)
        raise TimeoutError(f"not ended: {self.events}")

    @staticmethod
    def _ended(events: list[dict[str, Any]]) -> bool:
        return bool(events) and ("error" in events[-1] or events[-1].get("done") is True)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> TransformersLLM:
    path: Path = build_tiny_qwen2(tmp_path_factory.mktemp("tiny") / "qwen2")
    family = parse_family("LLM", {
        "model_name": "tiny-qwen2", "model_ability": ["generate"], "context_length": 256,
        "model_specs": [{"model_format": "pytorch", "model_size_in_billions": 0,
                         "quantizations": ["none"], "model_uri": str(path)}]})
    engine = TransformersLLM(str(path), family, "cpu")
    engine.load()
    return engine


def test_a_sequence_the_engine_cannot_take_fails_only_its_own_request(engine):
    scheduler = GenerationScheduler(engine)
    inbox = Inbox()
    prompt = engine.encode("Hello there")
    good = SamplingParams(max_tokens=6, temperature=0.0)
    bad = SamplingParams(max_tokens=6, temperature=1.0, seed=2**64)  # torch: overflow
    # Submitted before the loop runs: both join the same prefill.
    scheduler.submit(GenerationRequest("good", prompt, good, 2, inbox.deliver("good")))
    scheduler.submit(GenerationRequest("bad", prompt, bad, 1, inbox.deliver("bad")))
    loop = threading.Thread(target=scheduler.run_forever)
    loop.start()
    try:
        inbox.wait_ended("good", "bad")
        assert "error" in inbox.events["bad"][-1]
        assert "the engine failed" in inbox.events["bad"][-1]["error"]
        good_events = inbox.events["good"]
        assert not any("error" in e for e in good_events) and good_events[-1] == {"done": True}
        finished = [e for e in good_events if "finish_reason" in e]
        assert sorted(e["index"] for e in finished) == [0, 1]  # both of its choices
        assert all(e["completion_tokens"] >= 1 for e in finished)
        # The engine and the scheduler go on serving.
        scheduler.submit(GenerationRequest("next", prompt, good, 1, inbox.deliver("next")))
        inbox.wait_ended("next")
        assert inbox.events["next"][-1] == {"done": True}
        assert scheduler.stats.running == 0 and engine.batch_size == 0
    finally:
        scheduler.stop()
        loop.join(timeout=30)


def test_past_its_request_limit_a_request_is_refused_until_one_ends(engine):
    scheduler = GenerationScheduler(engine, max_requests=1)
    inbox = Inbox()
    prompt = engine.encode("Hello there")
    params = SamplingParams(max_tokens=4, temperature=0.0)
    scheduler.submit(GenerationRequest("first", prompt, params, 1, inbox.deliver("first")))
    with pytest.raises(TooManyRequests) as refused:
        scheduler.submit(GenerationRequest("second", prompt, params, 1, inbox.deliver("second")))
    assert refused.value.code == "model_busy" and "limit is 1" in refused.value.message
    scheduler.cancel("first")  # cancelled while it waits: its place is given back
    loop = threading.Thread(target=scheduler.run_forever)
    loop.start()
    try:
        deadline = time.monotonic() + 30
        while scheduler.stats.finished < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert inbox.events["first"] == []  # cancelled before it ran
        scheduler.submit(GenerationRequest("third", prompt, params, 1, inbox.deliver("third")))
        inbox.wait_ended("third")
        assert inbox.events["third"][-1] == {"done": True}
        with pytest.raises(TooManyRequests):  # the limit still holds after all that
            scheduler.submit(GenerationRequest("a", prompt, params, 1, inbox.deliver("a")))
            scheduler.submit(GenerationRequest("b", prompt, params, 1, inbox.deliver("b")))
    finally:
        scheduler.stop()
        loop.join(timeout=30)
