"""The dynamic batcher: a lone request runs at once, requests queued while the engine is busy
share its next call, and the clients of the last batch are waited for briefly when they come back
one after the other."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

from fleet.cluster.batcher import DynamicBatcher

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
