"""What one generated sequence asks of the sampler and the stopping rules, as plain data: built
by the replica from an OpenAI request, read by any engine."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class SamplingParams:
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0: no top-k cut
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    logit_bias: dict[int, float] = field(default_factory=dict)
    logprobs: bool = False
    top_logprobs: int = 0
    # Token ids that end the sequence (the model's end-of-turn and end-of-text tokens).
    stop_token_ids: tuple[int, ...] = ()
    # Stop strings (the request's, and its family's that no stop id covers), matched on the
    # decoded text and cut from the output.
    stop: tuple[str, ...] = ()
    # A grammar the output must follow, in llguidance's Lark syntax, checked already
    # (fleet.generation.grammar); None leaves the output free.
    grammar: str | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0 or self.top_k == 1

    @property
    def penalized(self) -> bool:
        return (self.presence_penalty != 0.0 or self.frequency_penalty != 0.0
                or self.repetition_penalty != 1.0)


@dataclass
class TokenChoice:
    """One sampled token, with its log-probability and the most likely alternatives when asked."""

    seq_id: int
    token_id: int
    logprob: float | None = None
    top_logprobs: list[tuple[int, float]] | None = None


@dataclass
class NewSequence:
    """A sequence entering a batch: its prompt and how to sample it."""

    seq_id: int
    prompt_ids: list[int]
    params: SamplingParams
    # A vision engine's inputs for the prompt's images (fleet.engines.base.ImagePrompt.media).
    media: Any = None
