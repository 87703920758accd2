"""Sampling for a batch of sequences that each carry their own settings, in torch.

Work is vectorized where the batch agrees (greedy rows, unseeded sampling rows) and per row
only where a row asks for something of its own (penalties, a seed, top-k/top-p), so that a batch
of plain requests costs a handful of tensor operations per step."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from fleet.engines.constrained import advance, mask_rows
from fleet.generation.params import SamplingParams, TokenChoice


@dataclass
class SamplerState:
    """A sequence's sampling settings and what the penalties need to remember."""

    seq_id: int
    params: SamplingParams
    prompt_ids: list[int]
    generated: list[int] = field(default_factory=list)
    generator: torch.Generator | None = None
    # llguidance's matcher when the output follows a grammar (fleet.engines.constrained).
    matcher: Any = None

    def __post_init__(self) -> None:
        if self.params.seed is not None and not self.params.greedy:
            self.generator = torch.Generator().manual_seed(int(self.params.seed))


def _apply_penalties(row: torch.Tensor, state: SamplerState) -> torch.Tensor:
    params = state.params
    if params.repetition_penalty != 1.0:
        # Over prompt and output, as Hugging Face defines it: shrink the logit of a seen token.
        seen = torch.tensor(sorted(set(state.prompt_ids) | set(state.generated)), dtype=torch.long)
        values = row[seen]
        row[seen] = torch.where(values > 0, values / params.repetition_penalty,
                                values * params.repetition_penalty)
    if state.generated and (params.presence_penalty or params.frequency_penalty):
        # Over the output only, as OpenAI defines them.
        ids, counts = torch.unique(torch.tensor(state.generated, dtype=torch.long), return_counts=True)
        row[ids] -= params.presence_penalty + params.frequency_penalty * counts.to(row.dtype)
    return row


def _cut_top_k_top_p(row: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    if 0 < params.top_k < row.shape[-1]:
        threshold = torch.topk(row, params.top_k).values[-1]
        row = row.masked_fill(row < threshold, float("-inf"))
    if params.top_p < 1.0:
        sorted_logits, order = torch.sort(row, descending=True)
        cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
        # Keep the smallest set whose mass reaches top_p (the first token is always kept).
        drop = cumulative - torch.softmax(sorted_logits, dim=-1) >= params.top_p
        row = row.scatter(0, order[drop], float("-inf"))
    return row


def _prepare_logits(logits: torch.Tensor, states: Sequence[SamplerState]) -> torch.Tensor:
    """Bias and penalties, per row and only for rows that ask for them."""
    adjusted = logits
    for index, state in enumerate(states):
        params = state.params
        if not (params.logit_bias or params.penalized):
            continue
        if adjusted is logits:
            adjusted = logits.clone()
        row = adjusted[index]
        for token_id, bias in params.logit_bias.items():
            if 0 <= token_id < row.shape[-1]:
                row[token_id] += bias
        if params.penalized:
            adjusted[index] = _apply_penalties(row, state)
    return adjusted


def _draw(logits: torch.Tensor, states: Sequence[SamplerState]) -> list[int]:
    chosen = [0] * len(states)
    greedy = [i for i, s in enumerate(states) if s.params.greedy]
    if greedy:
        picks = logits[greedy].argmax(dim=-1).tolist()
        for index, token in zip(greedy, picks, strict=True):
            chosen[index] = token
    shared: list[int] = []
    shared_probs: list[torch.Tensor] = []
    for index, state in enumerate(states):
        params = state.params
        if params.greedy:
            continue
        row = _cut_top_k_top_p(logits[index] / params.temperature, params)
        probs = torch.softmax(row, dim=-1)
        if state.generator is not None:
            # A seeded row draws from its own generator: the same seed gives the same text
            # whatever else shares the batch.
            chosen[index] = int(torch.multinomial(probs, 1, generator=state.generator))
        else:
            shared.append(index)
            shared_probs.append(probs)
    if shared:
        picks = torch.multinomial(torch.stack(shared_probs), 1).squeeze(-1).tolist()
        for index, token in zip(shared, picks, strict=True):
            chosen[index] = token
    return chosen


def _constrain(logits: torch.Tensor, states: Sequence[SamplerState]) -> torch.Tensor:
    """The logits with each grammar's forbidden tokens masked, in the rows that have a grammar;
    `logits` itself (no copy, no work) when no row has one."""
    rows = [i for i, s in enumerate(states) if s.matcher is not None]
    if not rows:
        return logits
    return mask_rows(logits, rows, [states[i].matcher for i in rows])


def sample(logits: torch.Tensor, states: Sequence[SamplerState]) -> list[TokenChoice]:
    """One token per row of `logits` (shape [rows, vocab]); records it in the row's state.
    Log probabilities are the model's own, before any grammar mask."""
    logits = logits.float()
    tokens = _draw(_prepare_logits(_constrain(logits, states), states), states)
    want_logprobs = [i for i, s in enumerate(states) if s.params.logprobs]
    log_probs = torch.log_softmax(logits[want_logprobs], dim=-1) if want_logprobs else None
    choices = []
    for index, (state, token) in enumerate(zip(states, tokens, strict=True)):
        state.generated.append(token)
        if state.matcher is not None:
            advance(state.matcher, token)
        choice = TokenChoice(seq_id=state.seq_id, token_id=token)
        if log_probs is not None and state.params.logprobs:
            row = log_probs[want_logprobs.index(index)]
            choice.logprob = float(row[token])
            if state.params.top_logprobs:
                top = torch.topk(row, state.params.top_logprobs)
                choice.top_logprobs = list(zip(top.indices.tolist(), top.values.tolist(), strict=True))
        choices.append(choice)
    return choices
