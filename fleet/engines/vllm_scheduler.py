"""Generation requests on vLLM's async engine (see fleet.engines.vllm_llm).

vLLM batches by itself: every request it holds is scheduled by its own continuous batching (and
its prefix cache, chunked prefill and paged KV cache). Fleet hands it each choice of a request as
one vLLM request, with the prompt as token ids (rendered and tokenized by the replica, the same
way for every engine), and turns vLLM's streamed deltas into the events every Fleet scheduler
emits (fleet.generation.scheduling), so the OpenAI output (tool calls, reasoning, logprobs) is
built by the same code as on the other engines. A prompt with images comes with its media, a
VLLMImagePrompt: the ids vLLM takes for it, and the images.

Threads: vLLM's AsyncLLM lives on one asyncio loop, and that loop runs on the replica's engine
thread (`run_forever`). Every call into vLLM is made there: `submit`, `cancel` and `stop`, which
are called from the replica's event loop, only schedule work onto it. A cancelled choice is a
cancelled task: vLLM's `generate` aborts its request when the task that iterates it is cancelled.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from fleet.admission import Admission
from fleet.errors import Conflict
from fleet.generation.params import SamplingParams
from fleet.generation.scheduling import (
    GenerationRequest,
    SchedulerStats,
    choice_params,
    logprob_entry,
)
from fleet.messages import STREAM_DONE, StreamError, StreamFailed, TokenEvent

logger = logging.getLogger(__name__)


def vllm_sampling_params(params: SamplingParams) -> Any:
    """vLLM's SamplingParams for one choice: every setting spelled out, deltas streamed."""
    from vllm import SamplingParams as VLLMSamplingParams
    from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

    return VLLMSamplingParams(
        n=1,
        max_tokens=params.max_tokens,
        temperature=params.temperature,
        top_p=params.top_p,
        top_k=params.top_k,  # 0: no cut, in both
        min_p=0.0,
        seed=params.seed,
        presence_penalty=params.presence_penalty,
        frequency_penalty=params.frequency_penalty,
        repetition_penalty=params.repetition_penalty,
        logit_bias=dict(params.logit_bias) or None,
        # The model's eos is vLLM's own stop; these are the family's end-of-turn ids on top.
        stop_token_ids=list(params.stop_token_ids),
        stop=list(params.stop) or None,
        # Only the sampled token's when logprobs are off: cheap, and nothing reads them.
        logprobs=params.top_logprobs if params.logprobs else None,
        # The grammar Fleet checked, in llguidance's Lark syntax (the engine runs vLLM's
        # llguidance backend, see fleet.engines.vllm_llm).
        structured_outputs=(StructuredOutputsParams(grammar=params.grammar)
                            if params.grammar is not None else None),
        output_kind=RequestOutputKind.DELTA,
    )


@dataclass(frozen=True)
class VLLMImagePrompt:
    """The media of a chat prompt with images on vLLM (fleet.engines.base.ImagePrompt.media,
    made by fleet.engines.vllm_llm): the prompt's ids with each image's placeholder once, as
    the chat template wrote it, and the images (Pillow), in their order in the prompt. vLLM's
    multimodal processor expands every placeholder to that image's tokens itself, and would
    expand the already expanded ones of the request's `prompt_ids` a second time."""

    placeholder_ids: list[int]
    images: list[Any]


def vllm_prompt(request: GenerationRequest) -> Any:
    """The prompt of a request as vLLM's `generate` takes it: token ids, and a chat's images."""
    from vllm.inputs import TokensPrompt

    if request.media is None:
        return TokensPrompt(prompt_token_ids=request.prompt_ids)
    media: VLLMImagePrompt = request.media
    return TokensPrompt(prompt_token_ids=media.placeholder_ids,
                        multi_modal_data={"image": media.images})


def _logprobs(token_ids: list[int], entries: Any, top: int) -> list[dict[str, Any]]:
    """OpenAI's logprobs content for the tokens of one delta, from vLLM's per-token maps
    ({token id: Logprob(logprob, rank, decoded_token)}, the sampled token always included)."""
    content = []
    for token_id, options in zip(token_ids, entries or [], strict=False):
        sampled = options.get(token_id)
        best = sorted((o for o in options.values() if o.rank is not None and o.rank <= top),
                      key=lambda o: o.rank)
        content.append({
            **logprob_entry(sampled.decoded_token or "" if sampled else "",
                            sampled.logprob if sampled else None),
            "top_logprobs": [logprob_entry(o.decoded_token or "", o.logprob) for o in best],
        })
    return content


@dataclass(eq=False)
class _Request:
    request: GenerationRequest
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    left: int = 0  # choices not finished yet


class VLLMScheduler:
    def __init__(self, engine: Any, loop: asyncio.AbstractEventLoop, max_running: int,
                 max_requests: int):
        self._engine = engine  # vllm.v1.engine.async_llm.AsyncLLM, used on `loop` only
        self._loop = loop
        self._max_running = max_running
        # `_requests` and its admission: filled on the replica's event loop, emptied on the
        # engine thread.
        self._lock = threading.Lock()
        self._requests: dict[str, _Request] = {}
        self._admission = Admission(max_requests)
        self._decoding = 0  # choices that have their first token and are not finished
        self.stats = SchedulerStats()

    # ---- called on the replica's event loop ------------------------------------------------
    def submit(self, request: GenerationRequest) -> None:
        with self._lock:
            if request.request_id in self._requests:
                # A second request under one id would hold a place that nothing gives back.
                raise Conflict(f"request {request.request_id!r} is already in progress")
            self._admission.admit()
            self._requests[request.request_id] = _Request(request, left=request.n)
            self._count()
        self._loop.call_soon_threadsafe(self._start, request.request_id)

    def cancel(self, request_id: str) -> None:
        self._loop.call_soon_threadsafe(self._drop, request_id)

    def stop(self) -> None:
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._shut_down)

    # ---- the engine thread ------------------------------------------------------------------
    def run_forever(self) -> None:
        """Runs vLLM's loop on this thread until `stop`."""
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    def _start(self, request_id: str) -> None:
        held = self._requests.get(request_id)
        if held is None:  # cancelled before it started
            return
        held.tasks = [self._loop.create_task(self._choice(held, index))
                      for index in range(held.request.n)]

    async def _choice(self, held: _Request, index: int) -> None:
        request = held.request
        params = choice_params(request.params, index)
        tokens, decoding = 0, False
        try:
            async for output in self._engine.generate(
                    vllm_prompt(request), vllm_sampling_params(params),
                    request_id=f"{request.request_id}-{index}"):
                completion = output.outputs[0]
                if not decoding:
                    decoding = True
                    self._decoding += 1
                    self.stats.saw_batch(min(self._decoding, self._max_running))
                self.stats.steps += 1
                tokens += len(completion.token_ids)
                logprobs = None
                if params.logprobs and completion.token_ids:
                    logprobs = _logprobs(list(completion.token_ids), completion.logprobs,
                                         params.top_logprobs)
                if output.finished:
                    reason = "length" if completion.finish_reason == "length" else "stop"
                    # vLLM names the stop string it met (or the stop token's id).
                    stop = completion.stop_reason if isinstance(completion.stop_reason, str) else None
                    request.deliver([TokenEvent(index, completion.text, logprobs, reason, tokens,
                                                stop)])
                else:
                    request.deliver([TokenEvent(index, completion.text, logprobs)])
        except asyncio.CancelledError:
            return  # the request was cancelled: vLLM aborted it, nothing more is delivered
        except Exception as exc:
            logger.exception("vLLM failed request %s", request.request_id)
            if self._requests.get(request.request_id) is held:  # its first choice to fail
                self._drop(request.request_id)
                request.deliver([StreamFailed(StreamError.of(exc))])
            return
        finally:
            if decoding:
                self._decoding -= 1
        held.left -= 1
        if held.left == 0 and self._requests.get(request.request_id) is held:
            with self._lock:
                del self._requests[request.request_id]
                self._admission.release()
                self.stats.finished += 1
                self._count()
            request.deliver([STREAM_DONE])

    def _drop(self, request_id: str) -> None:
        """Forget a request and stop its choices (vLLM frees their sequences)."""
        with self._lock:
            held = self._requests.pop(request_id, None)
            if held is not None:
                self._admission.release()
            self._count()
        if held is None:
            return
        self.stats.finished += 1
        current = asyncio.current_task(self._loop) if self._loop.is_running() else None
        for task in held.tasks:
            if task is not current:
                task.cancel()

    def _shut_down(self) -> None:
        for request_id in list(self._requests):
            self._drop(request_id)
        try:
            self._engine.shutdown()  # ends vLLM's engine-core process
        except Exception as exc:
            logger.warning("vLLM shutdown: %s", exc)
        self._loop.stop()

    def _count(self) -> None:
        """Choices held: those beyond what vLLM runs at once wait in its queue (under the lock)."""
        held = sum(r.left for r in self._requests.values())
        self.stats.running = min(held, self._max_running)
        self.stats.waiting = held - self.stats.running
