"""A tiny LLaVA built on the spot, because no small vision-language model in Hugging Face format
can be had offline (see /work/shared/test-models.md): a CLIP vision tower (32x32 images in 8x8
patches: 16 image tokens each), a two-layer Llama, random weights, the ChatML tokenizer of
tests.llm_builders with an `<image>` token, and a processor whose Pillow image processor needs
no torchvision. It loads and generates through the real Transformers classes (AutoProcessor,
AutoModelForImageTextToText), so it checks plumbing (images reaching the model, their tokens,
batching), never the text."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from tests import llm_builders

IMAGE_TOKEN = "<image>"
IMAGE_SIZE, PATCH_SIZE = 32, 8
#: The tokens one image takes in the prompt: its patches (the CLS token is dropped).
TOKENS_PER_IMAGE = (IMAGE_SIZE // PATCH_SIZE) ** 2

# The ChatML template of tests.llm_builders, writing `<image>` for an image part.
_TEXT_PARTS = ("{%- for part in content -%}{%- if part.type == 'text' -%}{{- part.text -}}"
               "{%- endif -%}{%- endfor -%}")
_TEXT_AND_IMAGE_PARTS = ("{%- for part in content -%}{%- if part.type == 'text' -%}"
                         "{{- part.text -}}{%- elif part.type == 'image' -%}{{- '<image>' -}}"
                         "{%- endif -%}{%- endfor -%}")
CHAT_TEMPLATE = llm_builders.CHAT_TEMPLATE.replace(_TEXT_PARTS, _TEXT_AND_IMAGE_PARTS)
assert CHAT_TEMPLATE != llm_builders.CHAT_TEMPLATE


def build_tiny_llava(path: Path) -> Path:
    """A random-weight LlavaForConditionalGeneration and its processor at `path` (which must
    not exist yet, or be empty)."""
    import torch
    from transformers import (
        CLIPImageProcessorPil,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tokenizer = llm_builders._chat_tokenizer([])
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    tokenizer.chat_template = CHAT_TEMPLATE
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                       num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                       max_position_embeddings=512, tie_word_embeddings=False,
                       eos_token_id=tokenizer.convert_tokens_to_ids(llm_builders.IM_END))
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                              num_attention_heads=2, image_size=IMAGE_SIZE,
                              patch_size=PATCH_SIZE, projection_dim=32)
    config = LlavaConfig(vision_config=vision, text_config=text,
                         image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
                         vision_feature_layer=-1, vision_feature_select_strategy="default",
                         image_seq_length=TOKENS_PER_IMAGE)
    with llm_builders._seeded(torch):
        model = LlavaForConditionalGeneration(config)
    images = CLIPImageProcessorPil(size={"shortest_edge": IMAGE_SIZE},
                                   crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    processor = LlavaProcessor(image_processor=images, tokenizer=tokenizer, patch_size=PATCH_SIZE,
                               vision_feature_select_strategy="default",
                               chat_template=CHAT_TEMPLATE, image_token=IMAGE_TOKEN,
                               num_additional_image_tokens=1)
    return llm_builders._save(path, model, _WithProcessor(tokenizer, processor))


class _WithProcessor:
    """What llm_builders._save saves as "the tokenizer": here the whole processor."""

    def __init__(self, tokenizer: Any, processor: Any):
        self._tokenizer, self._processor = tokenizer, processor

    def convert_tokens_to_ids(self, token: str) -> int:
        return int(self._tokenizer.convert_tokens_to_ids(token))

    def save_pretrained(self, path: Path) -> None:
        self._processor.save_pretrained(path)


def png(color: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> bytes:
    """A plain image of one colour, as PNG bytes."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


def data_url(image: bytes, media_type: str = "image/png") -> str:
    import base64

    return f"data:{media_type};base64,{base64.b64encode(image).decode()}"
