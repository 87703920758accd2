"""Large request bodies are parsed in a helper process: the API's event loop keeps turning while
a hostile body is parsed (in a thread it would not: pydantic holds the GIL), a body with too many
values or that needs too much memory is refused with a 413 that names its limit, errors come back
as they are raised, and a helper that died is replaced."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest
from pydantic import ValidationError

from fleet.api.body_parsing import INLINE_MAX_BYTES, _Helper, parse_body
from fleet.api.protocol.bodies import EmbeddingRequest
from fleet.errors import BadRequest, PayloadTooLarge


def _many_values(count: int) -> bytes:
    """An embeddings body with one token-id input of `count` values (`1,` each)."""
    return b'{"model": "m", "input": [[' + b",".join([b"1"] * count) + b"]]}"


async def _parse_while_ticking(helper: _Helper, body: bytes) -> tuple[object, float, float]:
    """(what parsing returned or raised, how long it took, the longest the loop stood still)."""
    gaps: list[float] = []
    stop = asyncio.Event()

    async def tick() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticker = asyncio.create_task(tick())
    started = time.perf_counter()
    try:
        outcome: object = await helper.parse(EmbeddingRequest, body)
    except Exception as exc:
        outcome = exc
    took = time.perf_counter() - started
    stop.set()
    await ticker
    return outcome, took, max(gaps)


def test_small_bodies_parse_inline_and_large_ones_in_the_helper():
    async def scenario() -> None:
        small = await parse_body(EmbeddingRequest, b'{"model": "m", "input": ["a", "b"]}')
        assert small.input == ["a", "b"]
        text = "x" * (INLINE_MAX_BYTES + 10)
        large = await parse_body(EmbeddingRequest, orjson.dumps({"model": "m", "input": [text]}))
        assert large.input == [text]
        with pytest.raises(ValidationError):  # errors come back as raised
            await parse_body(EmbeddingRequest, orjson.dumps({"model": 5, "input": [text]}))
        with pytest.raises(BadRequest) as refused:
            await parse_body(EmbeddingRequest, orjson.dumps({"model": "m", "input": ["a"] * 30_000}))
        assert "FLEET_MAX_ITEMS" in refused.value.message

    asyncio.run(scenario())


def test_the_loop_turns_while_a_hostile_body_is_parsed_and_it_is_refused():
    helper = _Helper()
    try:
        body = _many_values(6_000_000)  # 12 MiB of values: seconds of pydantic
        outcome, took, stood_still = asyncio.run(_parse_while_ticking(helper, body))
    finally:
        helper.close()
    assert isinstance(outcome, PayloadTooLarge), outcome
    assert outcome.code == "too_many_values" and "FLEET_MAX_JSON_VALUES" in outcome.message
    # Inline, the loop would have stood still for the whole parse (over a second); here it
    # only copies the body to the helper.
    assert took > 0.5 and stood_still < min(0.25, took / 4), (took, stood_still)


def test_a_body_that_outgrows_the_helper_memory_is_413_and_a_new_helper_serves_the_next():
    helper = _Helper(memory_bytes=200 * 1024 * 1024)
    try:
        hostile = orjson.dumps({"model": "m", "input": ["ab"] * 3_000_000})  # ~18 MiB of tiny items
        outcome, _, _ = asyncio.run(_parse_while_ticking(helper, hostile))
        assert isinstance(outcome, PayloadTooLarge), outcome
        assert "FLEET_PARSER_MEMORY_BYTES" in outcome.message
        text = "y" * (INLINE_MAX_BYTES * 2)
        good, _, _ = asyncio.run(_parse_while_ticking(
            helper, orjson.dumps({"model": "m", "input": [text]})))
        assert isinstance(good, EmbeddingRequest) and good.input == [text]
    finally:
        helper.close()


def _empty_objects(count: int) -> bytes:
    """An embeddings body whose input is `count` empty objects: cheap to send, and each one a
    Python dict in the parser (57 MiB of them ran pydantic-core out of memory mid-allocation,
    where it panicked and left the parser asleep, answering nothing)."""
    return b'{"model": "m", "input": [' + b"{}," * count + b"{}]}"


def test_a_parse_past_its_time_kills_the_helper_and_the_next_body_is_parsed():
    helper = _Helper(memory_bytes=256 * 1024 * 1024, timeout_s=3)
    try:
        started = time.perf_counter()
        outcome, _, stood_still = asyncio.run(_parse_while_ticking(
            helper, _empty_objects(20_000_000)))
        assert isinstance(outcome, PayloadTooLarge), outcome
        assert outcome.code == "payload_too_large"
        assert ("FLEET_MAX_PARSE_SECONDS" in outcome.message
                or "FLEET_PARSER_MEMORY_BYTES" in outcome.message), outcome.message
        assert time.perf_counter() - started < 3 + 15  # the limit, and the kill
        assert stood_still < 0.25
        first = helper._process
        assert first is None or not first.is_alive()  # killed, not left asleep
        text = "z" * (INLINE_MAX_BYTES * 2)
        good, took, _ = asyncio.run(_parse_while_ticking(
            helper, orjson.dumps({"model": "m", "input": [text]})))
        assert isinstance(good, EmbeddingRequest) and good.input == [text]
        assert took < 10
    finally:
        helper.close()


def test_a_slow_parse_is_refused_by_its_time_limit():
    helper = _Helper(timeout_s=1)
    try:
        # About two seconds of pydantic on an idle machine (48 MiB of one-digit token ids),
        # within the parser's memory: only the time limit stops it.
        outcome, took, _ = asyncio.run(_parse_while_ticking(helper, _many_values(24_000_000)))
        assert isinstance(outcome, PayloadTooLarge), outcome
        assert "FLEET_MAX_PARSE_SECONDS" in outcome.message
        assert took < 1 + 10
    finally:
        helper.close()


def test_too_many_waiting_bodies_get_429_and_the_rest_are_parsed():
    from fleet.api.body_parsing import MAX_WAITING
    from fleet.errors import TooManyRequests

    helper = _Helper()
    text = "w" * (INLINE_MAX_BYTES + 10)
    body = orjson.dumps({"model": "m", "input": [text]})

    async def flood() -> list[object]:
        return await asyncio.gather(*(helper.parse(EmbeddingRequest, body)
                                      for _ in range(MAX_WAITING + 4)), return_exceptions=True)

    try:
        outcomes = asyncio.run(flood())
    finally:
        helper.close()
    refused = [o for o in outcomes if isinstance(o, TooManyRequests)]
    parsed = [o for o in outcomes if isinstance(o, EmbeddingRequest)]
    assert len(refused) == 4 and len(parsed) == MAX_WAITING
    assert refused[0].code == "parser_busy" and refused[0].retry_after_s == 1


def test_bodies_whose_clients_leave_before_a_thread_takes_them_give_their_places_back():
    """A client that leaves while its body still waits for a parsing thread: the body is never
    parsed, and its place is free again (else MAX_WAITING such clients would make every later
    large body a 429 for good)."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    helper = _Helper()
    helper._threads.shutdown()
    helper._threads = ThreadPoolExecutor(1)  # one thread, held busy: the bodies queue behind it
    hold = threading.Event()
    helper._threads.submit(hold.wait)
    body = orjson.dumps({"model": "m", "input": ["w" * (INLINE_MAX_BYTES + 10)]})

    async def leave_early() -> int:
        tasks = [asyncio.create_task(helper.parse(EmbeddingRequest, body)) for _ in range(5)]
        await asyncio.sleep(0.05)  # each has taken its place and waits for the thread
        taken = helper._held.in_progress
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return taken

    try:
        assert asyncio.run(leave_early()) == 5
        assert helper._held.in_progress == 0
        hold.set()
        parsed = asyncio.run(helper.parse(EmbeddingRequest, body))  # the helper still serves
        assert isinstance(parsed, EmbeddingRequest)
    finally:
        hold.set()
        helper.close()
