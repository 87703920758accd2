"""Dynamic batching, in one place for every engine that takes batches (embeddings, rerank).

Requests queue while the engine is busy; when it comes free, everything queued (up to a token
and an item budget) runs as one engine call, and each request gets its own slice back. A lone
request therefore runs at once, never waiting for company, and under load the batch grows by
itself to what arrived during the previous call. Budgets count tokens, not only requests, so one
huge input cannot make a batch that starves the rest.

A request bigger than one batch's budget runs as several engine calls, one chunk at a time, each
chunk queued behind whatever arrived while the previous one ran: one big request neither takes
the engine's memory for one giant call nor holds the requests behind it for its whole length.
The queue is bounded (`max_open_requests`, the model's `request_limits`): past it a request is
refused at once with a 429 rather than queued for longer than its client will wait."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from fleet.admission import DEFAULT_REQUEST_LIMIT, Admission

logger = logging.getLogger(__name__)

# How long a batch may wait for the rest of the last batch's clients (DynamicBatcher._gather): a
# share of what the last batch took to run, so that the wait stays small next to the work it
# saves; and never more than a cap (engines whose batches take seconds, such as diffusion
# pipelines, set a longer one).
GATHER_SHARE = 0.3
GATHER_MAX_S = 0.02

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")


@dataclass
class _Pending(Generic[ItemT]):
    items: list[ItemT]
    cost: int
    future: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class DynamicBatcher(Generic[ItemT, ResultT]):
    """`run_batch(items) -> results` (one result per item) is called in `executor`."""

    def __init__(
        self,
        run_batch: Callable[[list[ItemT]], Sequence[ResultT]],
        executor: Executor,
        max_batch_items: int = 64,
        max_batch_tokens: int = 16384,
        gather_share: float = GATHER_SHARE,
        max_open_requests: int = DEFAULT_REQUEST_LIMIT,
        gather_max_s: float = GATHER_MAX_S,
    ):
        self._run_batch = run_batch
        self._executor = executor
        self._max_items = max_batch_items
        self._max_tokens = max_batch_tokens
        self._admission = Admission(max_open_requests)  # requests submitted, not answered yet
        self._gather_share = gather_share
        self._gather_max_s = gather_max_s
        self._last_run_s = 0.0
        self._queue: deque[_Pending[ItemT]] = deque()
        self._arrived = asyncio.Event()
        self._finished_at = 0.0  # loop time when the last batch's results were handed out
        self._arrivals_since_finish = 0
        self._worker: asyncio.Task[None] | None = None
        self.last_batch_size = 0
        self.max_batch_size_seen = 0
        self.batches_run = 0

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def in_progress(self) -> int:
        """Requests submitted and not answered yet (a replica being removed waits for them)."""
        return self._admission.in_progress

    def stats(self) -> dict[str, int]:
        """The replica's `batch` figures (GET /v1/models/{uid}/replicas)."""
        return {"last_size": self.last_batch_size, "max_size": self.max_batch_size_seen,
                "batches": self.batches_run, "queued": self.queued}

    async def submit(self, items: list[ItemT], cost: int | Sequence[int]) -> list[ResultT]:
        """Run `items` in some batch (or, when they exceed a batch's budget, in several);
        returns their results in order. `cost`: the tokens of each item, or of them all (then
        taken as evenly spread). Raises TooManyRequests when the queue is full."""
        with self._admission:
            chunks = self._chunks(items, _per_item(cost, len(items)))
            if len(chunks) == 1:
                return await self._submit_one(items, chunks[0][1])
            results: list[ResultT] = []
            for chunk, chunk_cost in chunks:
                results.extend(await self._submit_one(chunk, chunk_cost))
            return results

    def _chunks(self, items: list[ItemT], costs: list[int]) -> list[tuple[list[ItemT], int]]:
        """`items` cut into runs that each fit a batch's budget (an item over the token budget
        alone makes a run of its own), with the cost of each run."""
        total = sum(costs)
        if len(items) <= self._max_items and total <= self._max_tokens:
            return [(items, total)]
        chunks: list[tuple[list[ItemT], int]] = []
        start, running = 0, 0
        for index, item_cost in enumerate(costs):
            if index > start and (index - start >= self._max_items
                                  or running + item_cost > self._max_tokens):
                chunks.append((items[start:index], running))
                start, running = index, 0
            running += item_cost
        chunks.append((items[start:], running))
        return chunks

    async def _submit_one(self, items: list[ItemT], cost: int) -> list[ResultT]:
        pending: _Pending[ItemT] = _Pending(items=items, cost=max(1, cost))
        self._queue.append(pending)
        self._arrivals_since_finish += 1
        self._arrived.set()
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain())
        try:
            return await asyncio.shield(pending.future)
        except asyncio.CancelledError:
            # A caller that gave up leaves the queue if its batch has not started.
            if not pending.future.done() and pending in self._queue:
                self._queue.remove(pending)
            raise

    def _next_batch(self) -> list[_Pending[ItemT]]:
        batch = [self._queue.popleft()]  # the head always runs, however big
        items, cost = len(batch[0].items), batch[0].cost
        while self._queue:
            head = self._queue[0]
            if items + len(head.items) > self._max_items or cost + head.cost > self._max_tokens:
                break
            batch.append(self._queue.popleft())
            items += len(head.items)
            cost += head.cost
        return batch

    async def _run(self, items: list[ItemT]) -> Sequence[Any]:
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, self._run_batch, items
        )

    async def _run_each_alone(self, batch: list[_Pending[ItemT]]) -> None:
        """After a batch failed: one bad request must not fail its neighbours."""
        for pending in batch:
            try:
                _settle(pending, result=list(await self._run(pending.items)))
            except Exception as exc:
                _settle(pending, error=exc)

    async def _gather(self) -> None:
        """Wait briefly for the clients of the last batch to come back before the next batch
        starts. Under closed-loop load (a burst of clients, each sending its next request when
        answered) they are on their way, and without the wait the engine settles into two half
        batches that alternate, one running while the other is in transit (measured with MiniLM
        at concurrency 16: batches of 8). The wait ends when as many requests have arrived since
        the last batch finished as it held, or a share of the last batch's run time after it
        finished (a request's way back through the API costs about a millisecond of CPU, and
        the API handles a batch's clients one after the other): a lone client, already back,
        never waits, and a request that comes later than that runs at once."""
        loop = asyncio.get_running_loop()
        deadline = self._finished_at + min(self._gather_max_s, self._gather_share * self._last_run_s)
        while (self._arrivals_since_finish < self.last_batch_size
               and len(self._queue) < self._max_items):
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except asyncio.TimeoutError:
                return

    async def _drain(self) -> None:
        while self._queue:
            if self._gather_share > 0:
                await self._gather()
            batch = self._next_batch()
            self.last_batch_size = len(batch)
            self.max_batch_size_seen = max(self.max_batch_size_seen, len(batch))
            self.batches_run += 1
            started = asyncio.get_running_loop().time()
            try:
                results = await self._run([item for pending in batch for item in pending.items])
            except Exception as exc:
                if len(batch) > 1:
                    await self._run_each_alone(batch)
                else:
                    _settle(batch[0], error=exc)
                continue
            offset = 0
            for pending in batch:
                count = len(pending.items)
                _settle(pending, result=list(results[offset : offset + count]))
                offset += count
            self._finished_at = asyncio.get_running_loop().time()
            self._last_run_s = self._finished_at - started
            self._arrivals_since_finish = 0


def _per_item(cost: int | Sequence[int], count: int) -> list[int]:
    if isinstance(cost, int):
        share, extra = divmod(cost, max(1, count))
        return [share + (1 if i < extra else 0) for i in range(count)]
    return list(cost)


def _settle(pending: _Pending[Any], result: Any = None, error: Exception | None = None) -> None:
    """Answer a request unless its caller has already gone."""
    if pending.future.done():
        return
    if error is not None:
        pending.future.set_exception(error)
    else:
        pending.future.set_result(result)


KeyT = TypeVar("KeyT", bound=Hashable)


def run_grouped(items: Sequence[ItemT], key: Callable[[ItemT], KeyT],
                run_group: Callable[[KeyT, list[ItemT]], Sequence[ResultT]]) -> list[ResultT]:
    """For a `run_batch` whose items go through the engine together only when they share
    settings (an image's size and steps, a chunk's task and language): one `run_group(key,
    items)` call per key, the results put back in the items' order."""
    groups: dict[KeyT, list[int]] = {}
    for index, item in enumerate(items):
        groups.setdefault(key(item), []).append(index)
    results: list[Any] = [None] * len(items)
    for group_key, indices in groups.items():
        outputs = run_group(group_key, [items[i] for i in indices])
        for index, output in zip(indices, outputs, strict=True):
            results[index] = output
    return results
