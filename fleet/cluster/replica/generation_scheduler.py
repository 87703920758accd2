"""Continuous batching for token-by-token engines, in one place for every such engine.

One thread owns the engine and loops: take new requests and cancellations, run the prompts of
those that fit into the running batch (their first token comes out at once), then one decode
step for the whole batch. Finished sequences leave the batch between steps, so a request that
arrives while others are generating joins at the next step instead of waiting for the batch to
drain. Each sequence carries its own sampling settings; its text is decoded and checked for
stop strings right here, so a stopped sequence costs no further step.

The engine contract is fleet.engines.base.StepwiseLLMEngine: `prefill(list[NewSequence]) ->
list[TokenChoice]` (first tokens), `decode() -> list[TokenChoice]` (one per running sequence),
`release(seq_ids)`, `tokenizer`."""

from __future__ import annotations

import itertools
import logging
import queue
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from fleet.admission import DEFAULT_REQUEST_LIMIT, Admission
from fleet.engines.base import StepwiseLLMEngine
from fleet.generation.detokenizer import IncrementalDetokenizer, TokenDecoder
from fleet.generation.params import NewSequence, TokenChoice
from fleet.generation.scheduling import (
    GenerationRequest,
    SchedulerStats,
    choice_params,
    logprob_entry,
)
from fleet.generation.stops import StopStringMatcher
from fleet.messages import STREAM_DONE, Events, StreamError, StreamFailed, TokenEvent

logger = logging.getLogger(__name__)

__all__ = ["Events", "GenerationRequest", "GenerationScheduler", "SchedulerStats"]


class _Sequence:
    """One choice of a request: its text so far and when it has to stop."""

    def __init__(self, seq_id: int, index: int, request: GenerationRequest,
                 tokenizer: TokenDecoder):
        self.seq_id = seq_id
        self.index = index
        self.request = request
        self.params = request.params
        self.detokenizer = IncrementalDetokenizer(tokenizer)
        self.stops = StopStringMatcher(list(self.params.stop))
        self.tokenizer = tokenizer
        self.generated = 0
        self.finish_reason: str | None = None

    def accept(self, choice: TokenChoice) -> TokenEvent:
        """The event for one sampled token; sets finish_reason when the sequence is done."""
        self.generated += 1
        logprobs = [self._logprob_entry(choice)] if self.params.logprobs else None
        if choice.token_id in self.params.stop_token_ids:
            text = self._rest()
            self.finish_reason = "stop"
        else:
            text, stopped = self.stops.feed(self.detokenizer.add(choice.token_id))
            if stopped:
                self.finish_reason = "stop"
            elif self.generated >= self.params.max_tokens:
                text += self._rest()
                self.finish_reason = "length"
        if self.finish_reason:
            return TokenEvent(self.index, text, logprobs, self.finish_reason, self.generated,
                              self.stops.matched)
        return TokenEvent(self.index, text, logprobs)

    def _rest(self) -> str:
        """What the detokenizer and the stop matcher still hold when the sequence ends."""
        text, stopped = self.stops.feed(self.detokenizer.flush())
        return text if stopped else text + self.stops.flush()

    def _logprob_entry(self, choice: TokenChoice) -> dict[str, Any]:
        def piece(token_id: int) -> str:
            return self.tokenizer.decode([token_id])

        return {**logprob_entry(piece(choice.token_id), choice.logprob),
                "top_logprobs": [logprob_entry(piece(t), lp)
                                 for t, lp in (choice.top_logprobs or [])]}


def _new_sequence(sequence: _Sequence) -> NewSequence:
    return NewSequence(sequence.seq_id, sequence.request.prompt_ids,
                       choice_params(sequence.params, sequence.index), sequence.request.media)


class GenerationScheduler:
    def __init__(self, engine: StepwiseLLMEngine, max_running: int = 32,
                 max_requests: int = DEFAULT_REQUEST_LIMIT, max_prefill_tokens: int = 8192):
        self._engine = engine
        self._max_running = max_running
        self._max_prefill_tokens = max_prefill_tokens
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._waiting: deque[GenerationRequest] = deque()
        self._running: dict[int, _Sequence] = {}
        self._ids = itertools.count()
        # Requests submitted and not yet finished: admitted on the event loop, released on the
        # engine thread, so both under the lock.
        self._admission = Admission(max_requests)
        self._lock = threading.Lock()
        self.stats = SchedulerStats()

    # ---- called on the event loop -------------------------------------------------------
    def submit(self, request: GenerationRequest) -> None:
        with self._lock:
            self._admission.admit()
        self._inbox.put(("add", request))

    def cancel(self, request_id: str) -> None:
        self._inbox.put(("cancel", request_id))

    def stop(self) -> None:
        self._inbox.put(("stop", None))

    # ---- the engine thread ---------------------------------------------------------------
    def run_forever(self) -> None:
        while True:
            if not self._take_commands(block=not self._running and not self._waiting):
                return
            # Events leave after each engine call: a joining request's first token must not
            # wait for the batch's next decode step.
            self._step(self._admit)
            if self._running:
                self._step(self._decode)
            self.stats.running, self.stats.waiting = len(self._running), len(self._waiting)

    def _step(self, work: Callable[[dict[GenerationRequest, Events]], None]) -> None:
        events: dict[GenerationRequest, Events] = {}
        try:
            work(events)
        except Exception as exc:
            self._fail_all(exc, events)
        for request, batch in events.items():
            request.deliver(batch)

    def _decode(self, events: dict[GenerationRequest, Events]) -> None:
        self._record_batch()
        self._handle(self._engine.decode(), events)

    def _take_commands(self, block: bool) -> bool:
        """Apply queued commands; False when told to stop."""
        try:
            command = self._inbox.get(block=block)
        except queue.Empty:
            return True
        while True:
            kind, payload = command
            if kind == "stop":
                return False
            if kind == "add":
                self._waiting.append(payload)
            else:
                self._cancel(payload)
            try:
                command = self._inbox.get_nowait()
            except queue.Empty:
                return True

    def _cancel(self, request_id: str) -> None:
        for request in [r for r in self._waiting if r.request_id == request_id]:
            self._waiting.remove(request)
            self._request_done()
        gone = [s.seq_id for s in self._running.values() if s.request.request_id == request_id]
        if gone:
            self._engine.release(gone)
            for seq_id in gone:
                del self._running[seq_id]
            self._request_done()

    def _admit(self, events: dict[GenerationRequest, Events]) -> None:
        joining: list[_Sequence] = []
        budget = self._max_prefill_tokens
        while self._waiting:
            request = self._waiting[0]
            cost = len(request.prompt_ids) * request.n
            fits = len(self._running) + len(joining) + request.n <= self._max_running
            if joining and (not fits or cost > budget):
                break
            if not fits and self._running:
                break
            self._waiting.popleft()
            budget -= cost
            joining += [_Sequence(next(self._ids), i, request, self._engine.tokenizer)
                        for i in range(request.n)]
        if not joining:
            return
        try:
            choices = self._engine.prefill([_new_sequence(s) for s in joining])
        except Exception:
            choices = self._prefill_each_request(joining, events)
        joined = {s.seq_id: s for s in joining}
        for choice in choices:  # one per sequence that did join
            self._running[choice.seq_id] = joined[choice.seq_id]
        self._handle(choices, events)

    def _prefill_each_request(self, joining: list[_Sequence],
                              events: dict[GenerationRequest, Events]) -> list[TokenChoice]:
        """After a prefill of several requests failed: each request alone, so that one bad
        sequence (a setting the engine cannot take) fails its own request, not the batch."""
        logger.warning("prefill of %d sequences failed; running each request alone",
                       len(joining))
        choices: list[TokenChoice] = []
        requests = list(dict.fromkeys(s.request for s in joining))
        for request in requests:
            sequences = [s for s in joining if s.request is request]
            try:
                choices += self._engine.prefill([_new_sequence(s) for s in sequences])
            except Exception as exc:
                logger.exception("prefill of request %s failed", request.request_id)
                self._engine.release([s.seq_id for s in sequences])  # whatever it kept
                self._request_done()
                events.setdefault(request, []).append(StreamFailed(StreamError.of(exc)))
        return choices

    def _handle(self, choices: list[TokenChoice], events: dict[GenerationRequest, Events]) -> None:
        finished = []
        for choice in choices:
            sequence = self._running[choice.seq_id]
            events.setdefault(sequence.request, []).append(sequence.accept(choice))
            if sequence.finish_reason:
                finished.append(sequence)
        if not finished:
            return
        self._engine.release([s.seq_id for s in finished])
        for sequence in finished:
            del self._running[sequence.seq_id]
            request = sequence.request
            if not any(s.request is request for s in self._running.values()):
                self._request_done()
                events[request].append(STREAM_DONE)

    def _request_done(self) -> None:
        with self._lock:
            self._admission.release()
        self.stats.finished += 1

    def _record_batch(self) -> None:
        stats = self.stats
        stats.steps += 1
        stats.saw_batch(len(self._running))

    def _fail_all(self, error: Exception, events: dict[GenerationRequest, Events]) -> None:
        """An engine error fails the requests in the batch, not the replica."""
        logger.error("generation step failed", exc_info=error)
        failed = StreamFailed(StreamError.of(error))
        requests = {s.request for s in self._running.values()}
        self._engine.release(list(self._running))
        self._running.clear()
        for request in requests:
            self._request_done()
            events.setdefault(request, []).append(failed)
