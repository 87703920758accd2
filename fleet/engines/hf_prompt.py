"""The prompt side of the LLM engines that read a model's Hugging Face tokenizer (Transformers,
vLLM): its chat template, the special tokens a template writes, tokenizing, and the ids that end
a turn. Both engines give the replica the same prompt for the same folder this way, token for
token (fleet.engines.base.BaseLLMEngine)."""

from __future__ import annotations

from typing import Any

from fleet.engines.base import ReadsNoImages
from fleet.generation.openai_params import stop_token_ids


def _as_list(value: Any) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, list | tuple) else [int(value)]


def model_eos_ids(model_path: str, tokenizer: Any) -> tuple[int, ...]:
    """The model's end-of-sequence ids: its generation config's and its tokenizer's."""
    from transformers import GenerationConfig

    eos: set[int] = set()
    try:
        eos |= set(_as_list(GenerationConfig.from_pretrained(model_path).eos_token_id))
    except OSError:
        pass  # no generation_config.json: the tokenizer's eos is all there is
    eos |= set(_as_list(tokenizer.eos_token_id))
    return tuple(sorted(eos))


class HuggingFacePromptSide(ReadsNoImages):
    """Read-only uses of `tokenizer`, safe off the engine thread (an engine that shows the
    model images overrides the ReadsNoImages side)."""

    tokenizer: Any
    eos_token_ids: tuple[int, ...]

    @property
    def chat_template(self) -> str | dict[str, str] | None:
        return getattr(self.tokenizer, "chat_template", None)

    @property
    def template_tokens(self) -> dict[str, str]:
        return {k: str(v) for k, v in self.tokenizer.special_tokens_map.items() if isinstance(v, str)}

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=add_special_tokens))

    def stop_token_ids(self, family_stops: list[str], family_stop_ids: list[int]) -> tuple[int, ...]:
        # The model's eos and the family's end-of-turn tokens that this tokenizer has.
        return stop_token_ids(self.tokenizer, self.eos_token_ids, family_stops, family_stop_ids)
