"""Generation requests on llama.cpp's server slots (see fleet.engines.llamacpp_llm).

llama.cpp batches its parallel slots itself: every running sequence is decoded in the same batch,
and sequences join and leave between steps. Fleet only decides which sequence gets a slot: one
worker thread per slot takes the oldest waiting choice (first come, first served), hands it to
llama.cpp (a blocking call that streams text pieces to a callback), and turns what comes back into
the events every Fleet scheduler emits (fleet.generation.scheduling), so the OpenAI output (tool
calls, reasoning, logprobs) is built by the same code for every engine. No more calls are in flight
than there are slots, so nothing waits inside llama.cpp, where it could be neither counted nor
cancelled.

A running choice is cancelled by returning True from its callback: llama.cpp then drops the task
and frees the slot. That happens at the choice's next text piece.

The engine's `completions` makes the call: the binding's own (xllamacpp's handle_completions),
or, for a model loaded with a vision projector, the same call through llama.cpp's listener
(fleet.engines.llamacpp_server.LlamaServer.stream_completion), the only one that takes images."""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

from fleet.admission import Admission
from fleet.engines.llamacpp_vision import LlamaCppMedia
from fleet.errors import BadRequest, Conflict, Unavailable
from fleet.generation.grammar import llama_cpp_grammar
from fleet.generation.params import SamplingParams
from fleet.generation.scheduling import (
    GenerationRequest,
    SchedulerStats,
    choice_params,
    logprob_entry,
)
from fleet.generation.stops import StopStringMatcher
from fleet.messages import STREAM_DONE, Events, StreamError, StreamFailed, TokenEvent

logger = logging.getLogger(__name__)

LLAMA_RANDOM_SEED = 0xFFFFFFFF


def completion_body(prompt_ids: list[int], params: SamplingParams,
                    media: LlamaCppMedia | None = None) -> dict[str, Any]:
    """llama.cpp's completion request for one choice. Its defaults are not OpenAI's (top_k 40,
    min_p 0.05, penalties over the last 64 tokens only), so every setting is spelled out. A
    prompt with images (`media`, fleet.engines.llamacpp_vision) goes as its text and images,
    which llama.cpp tokenizes and encodes itself; any other as token ids."""
    body: dict[str, Any] = {
        "prompt": prompt_ids if media is None else media.completion_prompt(),
        "stream": True,
        "stream_options": {"include_usage": True},
        "n_predict": params.max_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "top_k": params.top_k,
        "min_p": 0.0,
        "typical_p": 1.0,
        "repeat_penalty": params.repetition_penalty,
        "presence_penalty": params.presence_penalty,
        "frequency_penalty": params.frequency_penalty,
        # Penalties count the whole sequence, as OpenAI's and Transformers' do (llama.cpp: last 64).
        "repeat_last_n": len(prompt_ids) + params.max_tokens if params.penalized else 0,
        # Fleet watches the stop strings itself (_ChoiceOutput): llama.cpp would cut them as
        # well, but its stream never says which one it met, and the answer must name it.
        "stop": [],
        # Every chunk then says how many tokens were made so far: the count at a stop string.
        "timings_per_token": bool(params.stop),
        "logit_bias": [[token, bias] for token, bias in params.logit_bias.items()],
        "cache_prompt": True,
    }
    if params.grammar is not None:
        # llama.cpp samples through llguidance itself: the grammar Fleet checked, in its syntax.
        body["grammar"] = llama_cpp_grammar(params.grammar)
    if params.seed is not None:
        # llama.cpp's seed is a 32-bit unsigned int whose top value means "random": fold the
        # API's 64-bit seeds into the rest (seeds below it pass unchanged).
        body["seed"] = params.seed % LLAMA_RANDOM_SEED
    # Each sampled token's id comes with its probabilities only: ask for them to find stop ids.
    probs = params.top_logprobs if params.logprobs else 0
    if params.logprobs or params.stop_token_ids:
        probs = max(probs, 1)
    if probs:
        body["n_probs"] = probs
    return body


def _entry(item: dict[str, Any]) -> dict[str, Any]:
    return logprob_entry(item.get("token", ""), item.get("logprob"), item.get("bytes"))


class _ChoiceOutput:
    """llama.cpp's streamed chunks for one choice -> scheduler events."""

    def __init__(self, index: int, params: SamplingParams):
        self.index = index
        self._params = params
        self._stop_ids = set(params.stop_token_ids)
        self._stops = StopStringMatcher(params.stop)
        self._tokens = 0  # tokens seen through their probabilities (when asked for)
        self.finished = False
        self.error: StreamError | None = None

    def feed(self, chunk: dict[str, Any]) -> TokenEvent | None:
        """The event for one chunk; sets `finished` or `error` when the choice is over."""
        if "choices" not in chunk:
            self.error = _server_error(chunk)
            return None
        choice = chunk["choices"][0]
        text = choice.get("text") or ""
        items = (choice.get("logprobs") or {}).get("content") or []
        stop_at = next((i for i, item in enumerate(items) if item.get("id") in self._stop_ids), None)
        if stop_at is not None:
            # A stop token ends the choice where it stands; its own text is not sent.
            gone = "".join(item.get("token", "") for item in items[stop_at:])
            if gone and text.endswith(gone):
                text = text[:-len(gone)]
            items = items[:stop_at + 1]
        self._tokens += len(items)
        logprobs = None
        if self._params.logprobs and items:
            top = self._params.top_logprobs
            logprobs = [{**_entry(item), "top_logprobs": [_entry(t) for t in
                                                          (item.get("top_logprobs") or [])[:top]]}
                        for item in items]
        text, stopped = self._stops.feed(text)
        if stopped:
            made = (chunk.get("timings") or {}).get("predicted_n")
            return self._finish(text, logprobs, "stop", made if isinstance(made, int) else
                                self._tokens, self._stops.matched)
        reason = choice.get("finish_reason")
        if stop_at is None and not reason:
            return TokenEvent(self.index, text, logprobs)
        text += self._stops.flush()  # held as the start of a stop string that never came
        if stop_at is not None:
            return self._finish(text, logprobs, "stop", self._tokens)
        usage = chunk.get("usage") or {}
        return self._finish(text, logprobs, reason, int(usage.get("completion_tokens", self._tokens)))

    def _finish(self, text: str, logprobs: list[dict[str, Any]] | None, reason: str,
                tokens: int, stop: str | None = None) -> TokenEvent:
        self.finished = True
        return TokenEvent(self.index, text, logprobs, "length" if reason == "length" else "stop",
                          tokens, stop)


def _server_error(chunk: dict[str, Any]) -> StreamError:
    """llama.cpp's error chunk: a refusal of the request (its code a 4xx) stays one, anything
    else is the engine's failure."""
    error = chunk.get("error")
    if not isinstance(error, dict):
        error = chunk
    message = str(error.get("message") or error)
    if isinstance(error.get("code"), int) and 400 <= error["code"] < 500:
        return StreamError.of(BadRequest(f"llama.cpp refused the request: {message}"))
    return StreamError.of(Unavailable(f"the engine failed: {message}"))


@dataclass(eq=False)
class _Choice:
    request: GenerationRequest
    index: int
    cancelled: bool = False


class LlamaCppScheduler:
    def __init__(self, engine: Any, slots: int, max_requests: int):
        self._engine = engine
        self._slots = slots
        self._lock = threading.Condition()
        self._admission = Admission(max_requests)  # the requests in `_left` (under the lock)
        self._waiting: deque[_Choice] = deque()
        self._running: set[_Choice] = set()
        self._left: dict[str, int] = {}  # request id -> its choices not finished yet
        self._stopped = False
        self.stats = SchedulerStats()

    # ---- called on the event loop -------------------------------------------------------
    def submit(self, request: GenerationRequest) -> None:
        with self._lock:
            if request.request_id in self._left:
                # A second request under one id would hold a place that nothing gives back.
                raise Conflict(f"request {request.request_id!r} is already in progress")
            self._admission.admit()
            self._left[request.request_id] = request.n
            self._waiting.extend(_Choice(request, i) for i in range(request.n))
            self._count()
            self._lock.notify(request.n)

    def cancel(self, request_id: str) -> None:
        with self._lock:
            self._drop(request_id)

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            for request_id in list(self._left):
                self._drop(request_id)
            self._lock.notify_all()

    # ---- the slots -----------------------------------------------------------------------
    def run_forever(self) -> None:
        """One thread per slot, until `stop`."""
        workers = [threading.Thread(target=self._work, name=f"llama-slot-{i}", daemon=True)
                   for i in range(self._slots)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._stopped and not self._waiting:
                    self._lock.wait()
                if self._stopped:
                    return
                choice = self._waiting.popleft()
                self._running.add(choice)
                self.stats.steps += 1
                self._count()
            output = self._generate(choice)
            with self._lock:
                self._running.discard(choice)
                self._count()
                events = self._settle(choice, output)
            if events:
                choice.request.deliver(events)

    def _generate(self, choice: _Choice) -> _ChoiceOutput:
        params = choice_params(choice.request.params, choice.index)
        output = _ChoiceOutput(choice.index, params)

        def on_chunk(chunk: dict[str, Any]) -> bool:
            """Called by llama.cpp for each streamed chunk; True stops the choice."""
            if choice.cancelled:
                return True
            try:
                event = output.feed(chunk)
            except Exception as exc:  # the binding swallows callback errors: keep the reason
                output.error = StreamError.of(exc)
                return True
            if event is not None:
                choice.request.deliver([event])
            return output.finished or output.error is not None

        try:
            request = choice.request
            self._engine.completions(completion_body(request.prompt_ids, params, request.media),
                                     on_chunk)
        except Exception as exc:
            output.error = StreamError.of(exc)
        if not output.finished and output.error is None and not choice.cancelled:
            output.error = StreamError.of(Unavailable(
                "the engine failed: the stream ended before the answer did"))
        return output

    def _settle(self, choice: _Choice, output: _ChoiceOutput) -> Events:
        """The request's closing events once this choice is over (under the lock)."""
        request_id = choice.request.request_id
        if choice.cancelled or request_id not in self._left:
            return []
        if output.error is not None:
            logger.error("llama.cpp failed request %s: %s", request_id, output.error.message)
            self._drop(request_id)
            return [StreamFailed(output.error)]
        self._left[request_id] -= 1
        if self._left[request_id]:
            return []
        del self._left[request_id]
        self._admission.release()
        self.stats.finished += 1
        return [STREAM_DONE]

    def _drop(self, request_id: str) -> None:
        """Forget a request: its waiting choices leave the line, its running ones stop at their
        next piece (under the lock)."""
        if self._left.pop(request_id, None) is None:
            return
        self._admission.release()
        self._waiting = deque(c for c in self._waiting if c.request.request_id != request_id)
        for choice in self._running:
            if choice.request.request_id == request_id:
                choice.cancelled = True
        self.stats.finished += 1
        self._count()

    def _count(self) -> None:
        stats = self.stats
        stats.running, stats.waiting = len(self._running), len(self._waiting)
        stats.saw_batch(stats.running)
