"""What a replica hands to a generation scheduler, and what it expects back, shared by every
scheduler: Fleet's own continuous-batching loop for step-wise engines
(fleet.cluster.replica.generation_scheduler) and the schedulers that engines bring themselves (llama.cpp's
server batches its parallel slots on its own).

A scheduler streams events per request through `request.deliver` (fleet.messages): a TokenEvent
per choice and text delta (the finishing event of a choice carries `finish_reason` and the
choice's `completion_tokens`), then STREAM_DONE once every choice has finished, or a StreamFailed
whose error keeps its kind (a refusal stays a 4xx, an engine's crash is a 503)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

from fleet.generation.params import SamplingParams
from fleet.messages import Events


@dataclass(eq=False)  # compared and hashed by identity
class GenerationRequest:
    """A prompt to continue `n` times. `deliver` receives its event batches in the scheduler's
    thread, as they are made: it must be quick and thread-safe (see LLMService._deliver)."""

    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
    n: int
    deliver: Callable[[Events], None]
    # A vision engine's inputs for the prompt's images (fleet.engines.base.ImagePrompt.media).
    media: Any = None


@dataclass
class SchedulerStats:
    running: int = 0
    waiting: int = 0
    steps: int = 0
    last_batch_size: int = 0
    max_batch_size_seen: int = 0
    finished: int = 0

    def saw_batch(self, size: int) -> None:
        self.last_batch_size = size
        self.max_batch_size_seen = max(self.max_batch_size_seen, size)


def logprob_entry(token: str, logprob: float | None, token_bytes: list[int] | None = None
                  ) -> dict[str, Any]:
    """One token of OpenAI's logprobs content: its text, log probability and UTF-8 bytes."""
    return {"token": token, "logprob": logprob,
            "bytes": token_bytes or list(token.encode("utf-8"))}


def choice_params(params: SamplingParams, index: int) -> SamplingParams:
    """The settings of choice `index` of a request: the choices of one seeded request must differ
    from each other, and stay reproducible."""
    if params.seed is None or index == 0:
        return params
    return replace(params, seed=params.seed + index)


class Scheduler(Protocol):
    """Runs a replica's generation requests. `submit` raises TooManyRequests when the replica's
    request limit is reached; `run_forever` occupies the thread it is given until `stop`."""

    stats: SchedulerStats

    def submit(self, request: GenerationRequest) -> None: ...

    def cancel(self, request_id: str) -> None: ...

    def stop(self) -> None: ...

    def run_forever(self) -> None: ...
