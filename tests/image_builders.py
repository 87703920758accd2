"""A tiny Stable Diffusion pipeline built on the spot: no text-to-image model can be had offline
(see /work/shared/test-models.md). Random weights from small configs, a CLIP tokenizer from a
hand-written byte vocabulary, saved as a diffusers folder that the real engine loads with
`from_pretrained`. Its images are noise: tests check shapes, formats and plumbing, not beauty."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

# The folder's layout changes only with these: a new diffusers may save other config keys.
_BUILD_VERSION = 2
TOKENIZER_MAX_LENGTH = 77  # CLIP's


def _byte_vocabulary() -> dict[str, int]:
    """CLIP's byte-level alphabet (each byte as a printable character, as GPT-2 maps them),
    every character also as a word end (`</w>`), and the start and end tokens."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    characters = [chr(b) for b in printable]
    shifted = 0
    for byte in range(256):
        if byte not in printable:
            characters.append(chr(256 + shifted))
            shifted += 1
    tokens = [*characters, *(c + "</w>" for c in characters), "<|startoftext|>", "<|endoftext|>"]
    return {token: index for index, token in enumerate(tokens)}


def _write_tokenizer(folder: Path) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    vocabulary = _byte_vocabulary()
    (folder / "vocab.json").write_text(json.dumps(vocabulary), encoding="utf-8")
    # No merges: every word is spelt byte by byte, enough for a model of random weights.
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"),
                              model_max_length=TOKENIZER_MAX_LENGTH)
    tokenizer.save_pretrained(folder)
    return len(vocabulary)


def build_tiny_sd_pipeline(folder: Path, seed: int = 0) -> Path:
    """A StableDiffusionPipeline folder (model_index.json, unet, vae, text_encoder, tokenizer,
    scheduler) of about 6 MB, with weights drawn from `seed`."""
    import torch
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(seed)
    vocab_size = _write_tokenizer(folder / "tokenizer")
    tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    unet = UNet2DConditionModel(
        sample_size=32, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
        attention_head_dim=8, norm_num_groups=32)
    # Four blocks: latents are 1/8 of the image's side, as in the real Stable Diffusion.
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 32, 64, 64),
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1, norm_num_groups=32, sample_size=64)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=TOKENIZER_MAX_LENGTH,
        bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    pipeline = StableDiffusionPipeline(
        unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipeline.save_pretrained(folder)
    return folder


def tiny_sd_pipeline_folder() -> Path:
    """The tiny pipeline, built once per machine and cached (FLEET_TEST_CACHE)."""
    import diffusers

    cache = Path(os.environ.get("FLEET_TEST_CACHE", Path.home() / ".cache" / "fleet-tests"))
    target = cache / f"tiny-sd-{diffusers.__version__}-v{_BUILD_VERSION}"
    if (target / "model_index.json").exists():
        return target
    partial = cache / f".partial-sd-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    build_tiny_sd_pipeline(partial)
    partial.rename(target)  # atomic: a half-written folder is never taken for a model
    return target
