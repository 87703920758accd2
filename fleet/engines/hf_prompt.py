"""The prompt side of the LLM engines that read a model's Hugging Face tokenizer (Transformers,
vLLM): its chat template, the special tokens a template writes, tokenizing, and the ids that end
a turn; for a family that sees, the model's processor (fleet.engines.transformers_vision), whose
tokenizer and template these are. Both engines give the replica the same prompt for the same
folder this way, token for token (fleet.engines.base.BaseLLMEngine)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fleet.engines.base import ReadsNoImages
from fleet.generation.openai_params import stop_token_ids

if TYPE_CHECKING:
    from fleet.engines.transformers_vision import VisionInputs


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
    model images sets `reads_images` and overrides `encode_with_images`)."""

    tokenizer: Any
    eos_token_ids: tuple[int, ...]
    # The processor of a model whose family sees, loaded by `load_prompt_side`.
    _vision: VisionInputs | None = None

    def load_prompt_side(self, model_path: str, trust_remote_code: bool) -> None:
        """The tokenizer and the ids that end a turn; for an engine that `reads_images`, the
        model's processor, and its tokenizer."""
        if self.reads_images:
            from fleet.engines.transformers_vision import VisionInputs

            self._vision = VisionInputs.load(model_path, trust_remote_code)
            self.tokenizer = self._vision.tokenizer
        else:
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(
                model_path, trust_remote_code=trust_remote_code)
        self.eos_token_ids = model_eos_ids(model_path, self.tokenizer)

    @property
    def chat_template(self) -> str | dict[str, str] | None:
        # A vision model's template (the one that writes its image tokens) is its processor's.
        if self._vision is not None and self._vision.chat_template:
            return self._vision.chat_template
        return getattr(self.tokenizer, "chat_template", None)

    @property
    def template_tokens(self) -> dict[str, str]:
        return {k: str(v) for k, v in self.tokenizer.special_tokens_map.items() if isinstance(v, str)}

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=add_special_tokens))

    def stop_token_ids(self, family_stops: list[str], family_stop_ids: list[int]) -> tuple[int, ...]:
        # The model's eos and the family's end-of-turn tokens that this tokenizer has.
        return stop_token_ids(self.tokenizer, self.eos_token_ids, family_stops, family_stop_ids)
