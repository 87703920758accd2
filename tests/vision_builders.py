"""Tiny vision-language models built on the spot, because no small one in Hugging Face format can
be had offline (see /work/shared/test-models.md); random weights, the ChatML tokenizer of
tests.llm_builders with the model's image tokens, and a processor whose Pillow image processor
needs no torchvision. They load and generate through the real classes, so they check plumbing
(images reaching the model, their tokens, batching), never the text.

- `build_tiny_llava`: a CLIP vision tower (32x32 images in 8x8 patches: 16 image tokens each)
  and a two-layer Llama, for the Transformers engine (AutoProcessor,
  AutoModelForImageTextToText).
- `build_tiny_idefics3`: a SigLIP vision tower and a two-layer Llama (SmolVLM's architecture),
  for vLLM as well: vLLM's CPU environment here has no torchvision, which vLLM's LLaVA module
  imports (through its Pixtral module and Transformers' Pixtral image processor), while its
  Idefics3 module needs none. Its attention heads are 32 wide, the narrowest vLLM's CPU
  attention takes."""

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


# Idefics3: 64x64 images in 8x8 patches, merged 2x2 by the connector's pixel shuffle: 16 image
# tokens, written between <fake_token_around_image><global-img> and <fake_token_around_image>
# (the processor's expansion of an image that it does not split into tiles).
IDEFICS3_IMAGE_SIZE, IDEFICS3_SCALE = 64, 2
IDEFICS3_IMAGE_TOKENS = (IDEFICS3_IMAGE_SIZE // PATCH_SIZE) ** 2 // IDEFICS3_SCALE ** 2
#: The tokens one image takes in an Idefics3 prompt: its image tokens and the three around them.
IDEFICS3_TOKENS_PER_IMAGE = IDEFICS3_IMAGE_TOKENS + 3
_IDEFICS3_TOKENS = ("<fake_token_around_image>", IMAGE_TOKEN, "<global-img>", "<end_of_utterance>")


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


def build_tiny_idefics3(path: Path) -> Path:
    """A random-weight Idefics3ForConditionalGeneration and its processor (images never split
    into tiles: each is one 64x64 picture) at `path` (which must not exist yet, or be empty)."""
    import torch
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessorPil,
        Idefics3Processor,
        Idefics3VisionConfig,
        LlamaConfig,
    )

    tokenizer = llm_builders._chat_tokenizer([])
    tokenizer.add_special_tokens({"additional_special_tokens": list(_IDEFICS3_TOKENS)})
    tokenizer.chat_template = CHAT_TEMPLATE
    # Idefics3's own default pad id is Llama 3's, outside this vocabulary.
    pad = tokenizer.convert_tokens_to_ids(llm_builders.END_OF_TEXT)
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                       num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                       max_position_embeddings=512, tie_word_embeddings=False, pad_token_id=pad,
                       eos_token_id=tokenizer.convert_tokens_to_ids(llm_builders.IM_END))
    vision = Idefics3VisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                                  num_attention_heads=2, image_size=IDEFICS3_IMAGE_SIZE,
                                  patch_size=PATCH_SIZE)
    config = Idefics3Config(vision_config=vision, text_config=text,
                            image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
                            scale_factor=IDEFICS3_SCALE, tie_word_embeddings=False,
                            pad_token_id=pad)
    with llm_builders._seeded(torch):
        model = Idefics3ForConditionalGeneration(config)
    edge = {"longest_edge": IDEFICS3_IMAGE_SIZE}
    images = Idefics3ImageProcessorPil(size=edge, max_image_size=edge, do_image_splitting=False)
    processor = Idefics3Processor(image_processor=images, tokenizer=tokenizer,
                                  image_seq_len=IDEFICS3_IMAGE_TOKENS, chat_template=CHAT_TEMPLATE)
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
