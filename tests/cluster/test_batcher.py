"""The dynamic batcher: a lone request runs at once, requests queued while the engine is busy
share its next call, the clients of the last batch are waited for briefly when they come back
one after the other, a request bigger than a batch runs in chunks that let others in between,
and a full queue refuses at once."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from fleet.cluster.replica.batcher import DynamicBatcher
from fleet.errors import TooManyRequests

RUN_S = 0.04  # what one engine call takes here


class Engine:
    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def run(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        time.sleep(RUN_S)
        return [item * 10 for item in items]


def _batcher(engine: Engine, **kwargs) -> DynamicBatcher:
    return DynamicBatcher(engine.run, ThreadPoolExecutor(max_workers=1), **kwargs)


def test_a_lone_client_never_waits():
    async def scenario() -> list[float]:
        engine = Engine()
        batcher = _batcher(engine)
        waits = []
        for i in range(4):  # one client, each request sent when the last one is answered
            started = time.perf_counter()
            assert await batcher.submit([i], cost=1) == [i * 10]
            waits.append(time.perf_counter() - started - RUN_S)
        assert engine.batches == [[0], [1], [2], [3]]
        return waits

    assert max(asyncio.run(scenario())) < 0.01


def test_requests_queued_while_busy_share_the_next_call():
    async def scenario() -> Engine:
        engine = Engine()
        batcher = _batcher(engine, gather_share=0)
        first = asyncio.create_task(batcher.submit([0], cost=1))
        await asyncio.sleep(0.01)  # the engine is busy with the first
        rest = [asyncio.create_task(batcher.submit([i], cost=1)) for i in range(1, 5)]
        assert await first == [0]
        assert [await r for r in rest] == [[10], [20], [30], [40]]
        return engine

    assert asyncio.run(scenario()).batches == [[0], [1, 2, 3, 4]]


def test_the_last_batch_clients_coming_back_one_by_one_run_together():
    async def closed_loop(gather_share: float) -> list[list[int]]:
        """Four clients, each coming back 2 ms after the one before it (as a busy API sends
        them), for three rounds."""
        engine = Engine()
        batcher = _batcher(engine, gather_share=gather_share)

        async def client(k: int) -> None:
            for round_ in range(3):
                await batcher.submit([round_ * 4 + k], cost=1)
                await asyncio.sleep(0.002 * k)

        await asyncio.gather(*(client(k) for k in range(4)))
        return engine.batches

    gathered = asyncio.run(closed_loop(gather_share=0.3))
    assert [len(b) for b in gathered] == [4, 4, 4]
    # Without the wait, the first one back runs alone and the batches break up.
    assert len(asyncio.run(closed_loop(gather_share=0))) > 3


def test_a_request_over_the_budget_runs_in_chunks_with_others_in_between():
    async def scenario() -> Engine:
        engine = Engine()
        batcher = _batcher(engine, max_batch_items=4, max_batch_tokens=100, gather_share=0)
        big = asyncio.create_task(batcher.submit(list(range(10)), cost=[1] * 10))
        await asyncio.sleep(0.01)  # its first chunk is running
        small = asyncio.create_task(batcher.submit([99], cost=1))
        assert await big == [i * 10 for i in range(10)]  # every result, in order
        assert await small == [990]
        return engine

    # The small request ran after the big one's first chunk, not after all of it.
    assert asyncio.run(scenario()).batches == [[0, 1, 2, 3], [99], [4, 5, 6, 7], [8, 9]]


def test_chunks_also_respect_the_token_budget():
    async def scenario() -> Engine:
        engine = Engine()
        batcher = _batcher(engine, max_batch_items=64, max_batch_tokens=100, gather_share=0)
        # 60 + 60 > 100: apart; an item over the budget alone is a chunk of its own.
        assert await batcher.submit([1, 2, 3, 4], cost=[60, 60, 500, 10]) == [10, 20, 30, 40]
        return engine

    assert asyncio.run(scenario()).batches == [[1], [2], [3], [4]]


def test_a_full_queue_refuses_at_once_and_takes_requests_again_after():
    async def scenario() -> None:
        engine = Engine()
        batcher = _batcher(engine, max_open_requests=2, gather_share=0)
        first = [asyncio.create_task(batcher.submit([i], cost=1)) for i in range(2)]
        await asyncio.sleep(0.005)
        with pytest.raises(TooManyRequests) as refused:
            await batcher.submit([2], cost=1)
        assert refused.value.retry_after_s == 1 and refused.value.code == "model_busy"
        assert "request_limits" in refused.value.message
        assert [await f for f in first] == [[0], [10]]
        assert await batcher.submit([3], cost=1) == [30]  # room again

    asyncio.run(scenario())
