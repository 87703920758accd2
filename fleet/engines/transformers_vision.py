"""What a vision model in Hugging Face format takes for a chat's images: its processor turns the
rendered prompt and the images into token ids (each image's placeholder expanded to the tokens the
model reads for it) and the model's image inputs (pixel values, and whatever else the model asks
for: image grids, image sizes, token types). The Transformers engine runs the model on them; the
vLLM engine reads the processor's template and tokenizer, and the count of the expanded prompt
(vLLM expands the placeholders itself, fleet.engines.vllm_llm).

The prompt side stays Fleet's (the chat template renders the messages, an image part as the
model's image token); the processor is used for what only it knows, the images. Its slow
(Pillow) image processors are asked for: the fast ones need torchvision, which is not installed
beside Fleet's torch (Transformers 5.19, vLLM's, takes `backend="pil"` as 5.25 does)."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import torch

from fleet.engines.base import ImagePrompt
from fleet.errors import BadRequest

# The processor's outputs that are the prompt itself, not the model's inputs for its images.
_PROMPT_KEYS = frozenset({"input_ids", "attention_mask"})


def vision_model_class() -> Any:
    """Transformers' class for models that read images and write text (LLaVA, Qwen2-VL,
    Gemma 3, Idefics3, Mistral 3...)."""
    from transformers import AutoModelForImageTextToText

    return AutoModelForImageTextToText


@dataclass
class VisionInputs:
    processor: Any

    @classmethod
    def load(cls, model_path: str, trust_remote_code: bool) -> VisionInputs:
        from transformers import AutoProcessor

        try:
            processor = AutoProcessor.from_pretrained(
                model_path, trust_remote_code=trust_remote_code, backend="pil")
        except (OSError, ValueError) as exc:
            raise ValueError(f"{model_path} has no image processor that Transformers can load "
                             f"({exc}); a model with the vision ability needs one") from exc
        if getattr(processor, "image_processor", None) is None:
            raise ValueError(f"{model_path}'s processor has no image processor: it cannot read "
                             "images, though its family has the vision ability")
        return cls(processor)

    @property
    def tokenizer(self) -> Any:
        return self.processor.tokenizer

    @property
    def chat_template(self) -> str | None:
        return getattr(self.processor, "chat_template", None)

    def encode(self, text: str, images: list[bytes]) -> ImagePrompt:
        """The prompt's ids with its images' tokens in place, and the model's image inputs.
        Runs off the engine thread, like tokenizing a text prompt."""
        encoded = self.process(text, read_pictures(images))
        ids = [int(token) for token in encoded["input_ids"][0]]
        media = {key: value for key, value in encoded.items() if key not in _PROMPT_KEYS}
        return ImagePrompt(ids, media)

    def process(self, text: str, pictures: list[Any]) -> Any:
        """The processor's output for the prompt and its pictures (read_pictures): `input_ids`,
        one row, each image's placeholder expanded, and the model's image inputs as tensors."""
        try:
            return self.processor(text=[text], images=pictures, return_tensors="pt",
                                  add_special_tokens=False)
        except ValueError as exc:  # e.g. the prompt's image tokens and the images disagree
            raise BadRequest(f"the model's processor refused the images: {exc}",
                             code="invalid_image") from None

    def model_inputs(self, media: dict[str, Any], device: str, dtype: torch.dtype
                     ) -> dict[str, Any]:
        """`media` as the model's forward takes it: on its device, pixel values in its dtype."""
        return {key: value.to(device, dtype=dtype) if torch.is_floating_point(value)
                else value.to(device) for key, value in media.items()}

    @staticmethod
    def take_rope_offset(model: Any) -> int:
        """How far a prompt's positions end beyond its length, after a prefill that laid its
        images on a grid (Qwen2-VL's multimodal RoPE: the model keeps it as `rope_deltas`);
        0 for models whose positions are plain counts. Taken, so that no later call of the
        model reads it for another sequence."""
        inner: Any = getattr(model, "model", None)
        deltas = getattr(inner, "rope_deltas", None)
        if deltas is None:
            return 0
        inner.rope_deltas = None
        return int(deltas.reshape(-1)[0])


def read_pictures(images: list[bytes]) -> list[Any]:
    """The chat's images, in order, as RGB Pillow images; BadRequest naming one that is not."""
    return [_picture(data, index) for index, data in enumerate(images)]


def _picture(data: bytes, index: int) -> Any:
    from PIL import Image

    try:
        picture = Image.open(io.BytesIO(data))
        picture.load()
    except Exception as exc:  # Pillow raises many kinds on a broken file
        raise BadRequest(f"image {index} of the chat could not be read: {exc}",
                         code="invalid_image") from None
    return picture.convert("RGB")
