"""A causal LM on PyTorch/Transformers, driven step by step for continuous batching.

The running batch shares one key/value cache. Sequences join after their prompt is run
(`prefill`) and leave when they finish (`release`); every `decode` adds one token to each.
Rows of different lengths live side by side: each row's cache is aligned to the right and the
attention mask hides the padding on its left, with explicit position ids per row, which is how
Transformers' own left-padded `generate` works, so the numbers are the model's own."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch

from fleet.catalogue.schemas import LLMFamily
from fleet.engines.base import (
    ImagePrompt,
    StepwiseLLMEngine,
    checked_options,
    wants_remote_code,
)
from fleet.engines.constrained import GrammarMatchers
from fleet.engines.hf_prompt import HuggingFacePromptSide
from fleet.engines.launch_options import TransformersLLMOptions
from fleet.engines.torch_sampling import SamplerState, sample
from fleet.engines.transformers_vision import vision_model_class
from fleet.generation.params import NewSequence, SamplingParams, TokenChoice

logger = logging.getLogger(__name__)


@dataclass
class _Row:
    state: SamplerState
    next_input: int  # the token sampled last, fed to the model at the next decode
    position: int  # its position in the sequence
    # Added to `position` for the rotary embedding: a prompt whose images the model placed on a
    # grid (Qwen2-VL's multimodal RoPE) continues from the grid's end, not from its length.
    rope_offset: int = 0


def pick_device(requested: str | None) -> str:
    """CUDA when present, unless the launch names a device."""
    if requested and requested not in ("auto", ""):
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


def pick_dtype(device: str, requested: str | None) -> torch.dtype:
    if requested and requested != "auto":
        return getattr(torch, requested)
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    # CPUs without AMX run bf16 matmuls slower than fp32; fp32 is the safe default.
    return torch.float32


def _left_pad(tensor: torch.Tensor, length: int, dim: int) -> torch.Tensor:
    missing = length - tensor.shape[dim]
    if missing <= 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


class TransformersLLM(HuggingFacePromptSide):
    scheduling: ClassVar[Literal["fleet"]] = "fleet"  # a step at a time, see StepwiseLLMEngine

    def __init__(self, model_path: str, family: LLMFamily, device: str | None,
                 options: TransformersLLMOptions | None = None):
        options = checked_options(options, TransformersLLMOptions)
        self._model_path = model_path
        self._family = family
        self._device = pick_device(device)
        self._dtype_name = options.torch_dtype or options.dtype
        self._trust_remote_code = wants_remote_code(family, options)
        self.model: Any = None
        self.tokenizer: Any = None
        # The launch's context_length, else the family's; capped by the model's at load.
        self.context_length = options.context_length or family.context_length
        self.eos_token_ids: tuple[int, ...] = ()
        self.vocab_size = 0
        self._rows: list[_Row] = []
        self._cache: Any = None
        self._mask: torch.Tensor | None = None  # [rows, cached length]: 1 where a row has a token
        self._cache_arg = "past_key_values"
        self._grammars: GrammarMatchers | None = None  # made at the first constrained request
        # A family that sees is loaded with its processor (fleet.engines.transformers_vision).
        self.reads_images = "vision" in family.abilities

    def load(self) -> None:
        from transformers import AutoModelForCausalLM

        dtype = pick_dtype(self._device, self._dtype_name)
        self.load_prompt_side(self._model_path, self._trust_remote_code)
        model_class: Any = vision_model_class() if self._vision else AutoModelForCausalLM
        # The ignore: transformers declares PreTrainedModel.to with functools.wraps(Module.to),
        # which typeshed types as the plain function, `self` included, not a bound method.
        self.model = model_class.from_pretrained(
            self._model_path, dtype=dtype, trust_remote_code=self._trust_remote_code,
        ).to(self._device).eval()  # type: ignore[arg-type]
        self.vocab_size = int(self.model.get_output_embeddings().weight.shape[0])
        model_limit = getattr(self.model.config.get_text_config(), "max_position_embeddings", None)
        if model_limit:
            self.context_length = min(self.context_length, int(model_limit))
        # Transformers 5.x renamed the cache argument of `forward`; older releases call it
        # `past_key_values`. Ask the model which one it takes instead of pinning a release.
        forward_args = inspect.signature(self.model.forward).parameters
        self._cache_arg = "cache" if "cache" in forward_args else "past_key_values"
        self._warm_up()

    def _warm_up(self) -> None:
        # The first forward pass pays for lazy initialisation; pay it at load, not in a request.
        warm = NewSequence(-1, self.tokenizer.encode("Hello", add_special_tokens=False) or [0],
                           SamplingParams(max_tokens=2, temperature=0.0))
        self.prefill([warm])
        self.decode()
        self.release([-1])

    # ---- images (fleet.engines.base.BaseLLMEngine) ---------------------------------------
    def encode_with_images(self, text: str, images: list[bytes]) -> ImagePrompt:
        if self._vision is None:
            return super().encode_with_images(text, images)
        return self._vision.encode(text, images)

    @property
    def batch_size(self) -> int:
        return len(self._rows)

    def close(self) -> None:
        self._rows, self._cache, self._mask = [], None, None
        self.model = None

    @torch.inference_mode()
    def prefill(self, sequences: Sequence[NewSequence]) -> list[TokenChoice]:
        """Run the prompts (together, left-padded), sample each one's first token, and add them
        to the running batch. A prompt with images runs on its own: what a model takes for its
        images (pixel values, grids, token types...) differs by model, and the model lays out
        its own positions for them."""
        if all(s.media is None for s in sequences):
            return self._prefill_text(sequences)
        choices: dict[int, TokenChoice] = {}
        texts = [s for s in sequences if s.media is None]
        if texts:
            choices.update(zip((s.seq_id for s in texts), self._prefill_text(texts), strict=True))
        for sequence in sequences:
            if sequence.media is not None:
                choices[sequence.seq_id] = self._prefill_images(sequence)
        return [choices[s.seq_id] for s in sequences]

    def _prefill_images(self, sequence: NewSequence) -> TokenChoice:
        from transformers import DynamicCache

        assert self._vision is not None  # media is made by encode_with_images
        length = len(sequence.prompt_ids)
        cache = DynamicCache(config=self.model.config)
        output = self.model(
            input_ids=torch.tensor([sequence.prompt_ids], dtype=torch.long, device=self._device),
            use_cache=True, logits_to_keep=1, **{self._cache_arg: cache},
            **self._vision.model_inputs(sequence.media, self._device, self.model.dtype),
        )
        offset = self._vision.take_rope_offset(self.model)
        state = SamplerState(sequence.seq_id, sequence.params, list(sequence.prompt_ids),
                             matcher=self._matcher(sequence.params.grammar))
        [choice] = sample(output.logits[:, -1, :], [state])
        self._join(cache, torch.ones((1, length), dtype=torch.long),
                   [_Row(state, choice.token_id, length, offset)])
        return choice

    def _prefill_text(self, sequences: Sequence[NewSequence]) -> list[TokenChoice]:
        longest = max(len(s.prompt_ids) for s in sequences)
        ids = torch.zeros((len(sequences), longest), dtype=torch.long)
        mask = torch.zeros((len(sequences), longest), dtype=torch.long)
        for row, sequence in enumerate(sequences):
            ids[row, longest - len(sequence.prompt_ids):] = torch.tensor(sequence.prompt_ids)
            mask[row, longest - len(sequence.prompt_ids):] = 1
        positions = (mask.cumsum(dim=-1) - 1).clamp(min=0)
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        padded = bool((mask == 0).any())
        output = self.model(
            input_ids=ids.to(self._device),
            attention_mask=mask.to(self._device) if padded else None,
            position_ids=positions.to(self._device),
            use_cache=True, logits_to_keep=1, **{self._cache_arg: cache},
        )
        states = [SamplerState(s.seq_id, s.params, list(s.prompt_ids),
                               matcher=self._matcher(s.params.grammar)) for s in sequences]
        choices = sample(output.logits[:, -1, :], states)
        self._join(cache, mask, [
            _Row(state, choice.token_id, len(sequence.prompt_ids))
            for state, choice, sequence in zip(states, choices, sequences, strict=True)
        ])
        return choices

    def _matcher(self, grammar: str | None) -> Any:
        if grammar is None:
            return None
        if self._grammars is None:
            self._grammars = GrammarMatchers(self.tokenizer, self.vocab_size)
        return self._grammars.matcher(grammar)

    def _join(self, cache: Any, mask: torch.Tensor, rows: list[_Row]) -> None:
        if self._cache is None or self._mask is None:
            self._cache, self._mask, self._rows = cache, mask, rows
            return
        length = max(self._mask.shape[1], mask.shape[1])
        for running, joining in zip(self._cache.layers, cache.layers, strict=True):
            running.keys = torch.cat([_left_pad(running.keys, length, 2),
                                      _left_pad(joining.keys, length, 2)], dim=0)
            running.values = torch.cat([_left_pad(running.values, length, 2),
                                        _left_pad(joining.values, length, 2)], dim=0)
        self._mask = torch.cat([_left_pad(self._mask, length, 1), _left_pad(mask, length, 1)], dim=0)
        self._rows.extend(rows)

    @torch.inference_mode()
    def decode(self) -> list[TokenChoice]:
        """One more token for every sequence in the batch."""
        if not self._rows or self._mask is None:
            return []
        ids = torch.tensor([[row.next_input] for row in self._rows], dtype=torch.long)
        positions = torch.tensor([[row.position + row.rope_offset] for row in self._rows],
                                 dtype=torch.long)
        self._mask = torch.cat([self._mask, self._mask.new_ones((len(self._rows), 1))], dim=1)
        padded = bool((self._mask == 0).any())
        output = self.model(
            input_ids=ids.to(self._device),
            attention_mask=self._mask.to(self._device) if padded else None,
            position_ids=positions.to(self._device),
            use_cache=True, logits_to_keep=1, **{self._cache_arg: self._cache},
        )
        choices = sample(output.logits[:, -1, :], [row.state for row in self._rows])
        for row, choice in zip(self._rows, choices, strict=True):
            row.next_input = choice.token_id
            row.position += 1
        return choices

    def release(self, seq_ids: Sequence[int]) -> None:
        """Drop finished or cancelled sequences from the batch, and the padding they leave."""
        gone = set(seq_ids)
        keep = [i for i, row in enumerate(self._rows) if row.state.seq_id not in gone]
        if len(keep) == len(self._rows):
            return
        if not keep:
            self._rows, self._cache, self._mask = [], None, None
            return
        assert self._mask is not None
        index = torch.tensor(keep, dtype=torch.long)
        mask = self._mask.index_select(0, index)
        # Columns that are padding in every remaining row are dead weight for each later step.
        used = mask.any(dim=0).nonzero()
        start = int(used[0]) if len(used) else mask.shape[1]
        self._mask = mask[:, start:]
        device_index = index.to(self._device)
        for layer in self._cache.layers:
            layer.keys = layer.keys.index_select(0, device_index)[:, :, start:]
            layer.values = layer.values.index_select(0, device_index)[:, :, start:]
        self._rows = [self._rows[i] for i in keep]


# mypy checks here that the class is everything the protocol asks for.
_PROTOCOL: type[StepwiseLLMEngine] = TransformersLLM
