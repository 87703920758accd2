"""Grammar-constrained sampling for Fleet's step-wise engines: one llguidance matcher per
constrained sequence, and the logits mask it gives at each step (fleet.engines.torch_sampling
applies it to the rows that have one; rows without a grammar cost nothing).

Everything here runs in the engine's thread: matchers are made at prefill and advanced after each
sampled token, like the rest of a sequence's state. The grammar text was checked by the replica
before the request queued (fleet.generation.grammar)."""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch

logger = logging.getLogger(__name__)

MATCHER_CACHE_SIZE = 64


class GrammarMatchers:
    """Makes matchers for one tokenizer. llguidance's view of the vocabulary takes ~0.5 s to build
    for a 49k-token vocabulary, so it is made at the first constrained request, not at load; a
    compiled matcher per grammar is kept (an LRU keyed by the grammar text) and copied for each
    sequence, so a schema used again is not compiled again."""

    def __init__(self, tokenizer: Any, vocab_size: int):
        self._tokenizer = tokenizer
        self._vocab_size = vocab_size
        self._ll_tokenizer: Any = None
        self._compiled: OrderedDict[str, Any] = OrderedDict()

    def matcher(self, grammar: str) -> Any:
        import llguidance

        compiled = self._compiled.get(grammar)
        if compiled is None:
            compiled = llguidance.LLMatcher(self._vocabulary(),
                                            llguidance.LLMatcher.grammar_from_lark(grammar))
            if compiled.is_error():  # checked before it queued; a tokenizer-specific failure
                raise ValueError(f"the grammar does not compile: {compiled.get_error()}")
            self._compiled[grammar] = compiled
            if len(self._compiled) > MATCHER_CACHE_SIZE:
                self._compiled.popitem(last=False)
        else:
            self._compiled.move_to_end(grammar)
        return compiled.deep_copy()

    def _vocabulary(self) -> Any:
        if self._ll_tokenizer is None:
            import llguidance.hf

            # Sized to the model's logits, which may have more rows than the tokenizer has tokens.
            size = max(self._vocab_size, len(self._tokenizer))
            self._ll_tokenizer = llguidance.hf.from_tokenizer(self._tokenizer, n_vocab=size)
        return self._ll_tokenizer


def mask_rows(logits: torch.Tensor, rows: Sequence[int], matchers: Sequence[Any]) -> torch.Tensor:
    """`logits` with the tokens each matcher forbids set to -inf in its row (a copy)."""
    import llguidance.torch as llt

    vocab = logits.shape[-1]
    bitmask = llt.allocate_token_bitmask(len(rows), vocab)
    for position, matcher in enumerate(matchers):
        llt.fill_next_token_bitmask(matcher, bitmask, position)
    # Unpacked here rather than with llguidance's apply_token_bitmask_inplace, which is
    # torch.compile'd: its first call compiles C++ for seconds in the engine thread (and needs
    # a compiler on the worker). The mask is made on the CPU; the logits may be on a GPU.
    bits = torch.arange(32, dtype=torch.int32)
    allowed = ((bitmask.unsqueeze(-1) >> bits) & 1).flatten(1)[:, :vocab].bool()
    index = torch.tensor(list(rows), dtype=torch.long, device=logits.device)
    masked = logits.clone()
    masked[index] = logits.index_select(0, index).masked_fill(
        ~allowed.to(logits.device, non_blocking=True), float("-inf"))
    return masked


def advance(matcher: Any, token: int) -> None:
    """Feed the sampled token to the matcher; a refusal (which the mask makes impossible) is
    logged, and the matcher then allows only the end of the sequence."""
    if not matcher.consume_token(token):
        logger.warning("the grammar refused token %d: %s", token, matcher.get_error())
