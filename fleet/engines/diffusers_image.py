"""Diffusion pipelines on diffusers: text-to-image, image-to-image and inpainting.

The folder's text-to-image pipeline is loaded once (diffusers' auto pipeline picks the class from
model_index.json: Stable Diffusion, SDXL, SD 3, FLUX...); the image-to-image and inpainting
pipelines are built from its components (`from_pipe`), so each ability costs no second copy of
the weights. A single-file checkpoint loads through the family's pipeline class.

Seeds are one CPU generator per image: the same seed gives the same image whether the request
ran alone or batched with others, and on any device."""

from __future__ import annotations

import inspect
import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from fleet.catalogue.schemas import BaseFamily, ImageFamily
from fleet.engines.base import ImageEngine, ImageJob, checked_options
from fleet.engines.launch_options import DiffusersImageOptions
from fleet.engines.transformers_llm import pick_device

logger = logging.getLogger(__name__)

# model_family -> the pipeline class of a single-file checkpoint (a folder names its own).
_SINGLE_FILE_PIPELINES = {
    "stable_diffusion": "StableDiffusionPipeline",
    "stable_diffusion_xl": "StableDiffusionXLPipeline",
    "sdxl": "StableDiffusionXLPipeline",
    "stable_diffusion_3": "StableDiffusion3Pipeline",
    "sd3": "StableDiffusion3Pipeline",
    "flux": "FluxPipeline",
}
_AUTO_PIPELINES = {
    "image2image": "AutoPipelineForImage2Image",
    "inpainting": "AutoPipelineForInpainting",
}
# Pipeline arguments the service sets itself, or that take tensors no JSON request can carry.
_RESERVED = frozenset({"prompt", "negative_prompt", "num_images_per_prompt", "generator",
                       "output_type", "return_dict", "image", "mask_image", "width", "height",
                       "callback", "callback_steps", "callback_on_step_end",
                       "callback_on_step_end_tensor_inputs", "self", "kwargs"})
_TENSOR_WORDS = ("embeds", "latents", "ip_adapter_image")


# Tensor names that only one architecture's original checkpoints hold (checked in this order).
_CHECKPOINT_MARKERS = (
    ("double_blocks.0.img_attn.norm.key_norm.scale", "FluxPipeline"),
    ("joint_blocks.0.context_block.adaLN_modulation.1.bias", "StableDiffusion3Pipeline"),
    ("conditioner.embedders.1.model.transformer.resblocks.0.mlp.c_proj.bias",
     "StableDiffusionXLPipeline"),
)


def single_file_pipeline(path: Path, model_family: str) -> str:
    """The pipeline class of a single-file checkpoint: the one its family names, else the one
    its tensor names show (Xinference calls every diffusion family "stable_diffusion").
    Only safetensors: a .ckpt file is a pickle, and unpickling runs code."""
    if path.suffix != ".safetensors":
        raise ValueError(f"{path.name}: single-file checkpoints load from .safetensors files "
                         "only (a .ckpt or .bin file is a pickle, which can run code)")
    named = _SINGLE_FILE_PIPELINES.get(model_family)
    if named and model_family != "stable_diffusion":
        return named
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as checkpoint:
        names = list(checkpoint.keys())
    for marker, class_name in _CHECKPOINT_MARKERS:
        if any(name.endswith(marker) for name in names):
            return class_name
    return "StableDiffusionPipeline"


def pick_image_dtype(device: str, requested: str | None, family: BaseFamily) -> torch.dtype:
    """fp32 on a CPU; on a GPU the launch's dtype, else the family's (FLUX and SD 3 are trained
    in bf16), else fp16."""
    if requested and requested != "auto":
        return getattr(torch, requested)
    if not device.startswith("cuda"):
        return torch.float32
    configured = str(getattr(family, "default_model_config", {}).get("torch_dtype", ""))
    name = configured.removeprefix("torch.")
    return getattr(torch, name) if name in ("float16", "bfloat16", "float32") else torch.float16


class DiffusersImage:
    def __init__(self, model_path: str, family: ImageFamily, device: str | None,
                 options: DiffusersImageOptions | None = None):
        options = checked_options(options, DiffusersImageOptions)
        self._path = Path(model_path)
        self._family = family
        self._device = pick_device(device)
        self._dtype = pick_image_dtype(self._device, options.torch_dtype or options.dtype, family)
        self._cpu_offload = options.cpu_offload or "none"
        self._attention_slicing = options.attention_slicing
        self._vae_tiling = bool(options.vae_tiling)
        self._single_file_config = options.single_file_config
        self._pipelines: dict[str, Any] = {}
        self._parameters: dict[str, frozenset[str]] = {}

    # ---- loading ---------------------------------------------------------------------------
    def load(self) -> None:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*torch_dtype.*")
            self._load()

    def _load(self) -> None:
        import diffusers
        import transformers

        # A replica's log is no terminal.
        diffusers.utils.logging.disable_progress_bar()
        transformers.utils.logging.disable_progress_bar()
        # `torch_dtype` works on every diffusers release this supports; newer ones prefer `dtype`
        # and warn about the old name (silenced in load()).
        options: dict[str, Any] = {"torch_dtype": self._dtype}
        if self._path.is_file():
            class_name = single_file_pipeline(self._path, self._family_key())
            if self._single_file_config:
                options["config"] = self._single_file_config
            base = getattr(diffusers, class_name).from_single_file(str(self._path), **options)
        else:
            base = diffusers.AutoPipelineForText2Image.from_pretrained(str(self._path), **options)
        # Xinference's families may ask for a safety checker; it is off here as in Xinference's
        # defaults (a model server filters at the application's edge, not per pixel).
        if getattr(base, "safety_checker", None) is not None:
            base.safety_checker = None
        abilities = set(self._family.abilities)
        self._pipelines["text2image"] = base
        for operation, auto_class in _AUTO_PIPELINES.items():
            if operation in abilities:
                try:
                    self._pipelines[operation] = getattr(diffusers, auto_class).from_pipe(base)
                except Exception as exc:  # the family lists an ability its pipeline lacks
                    logger.warning("%s: no %s pipeline for %s (%s)", self._path, operation,
                                   type(base).__name__, exc)
        for operation, pipeline in self._pipelines.items():
            self._place(pipeline)
            self._parameters[operation] = frozenset(
                inspect.signature(pipeline.__call__).parameters)

    def _family_key(self) -> str:
        return str(getattr(self._family, "model_family", "")).lower().replace("-", "_")

    def _place(self, pipeline: Any) -> None:
        """Device, offload and memory savers. Offload hooks live on the shared modules, so
        each derived pipeline sets them again for its own order of models."""
        if self._cpu_offload == "model":
            pipeline.enable_model_cpu_offload(device=self._device)
        elif self._cpu_offload == "sequential":
            pipeline.enable_sequential_cpu_offload(device=self._device)
        else:
            pipeline.to(self._device)
        if self._attention_slicing:
            slicing = self._attention_slicing
            pipeline.enable_attention_slicing("auto" if slicing is True else slicing)
        if self._vae_tiling and hasattr(pipeline, "enable_vae_tiling"):
            pipeline.enable_vae_tiling()
        pipeline.set_progress_bar_config(disable=True)

    # ---- what the pipelines take ---------------------------------------------------------------
    def operations(self) -> frozenset[str]:
        return frozenset(self._pipelines)

    @property
    def size_multiple(self) -> int:
        base = self._pipelines["text2image"]
        factor = int(getattr(base, "vae_scale_factor", 8))
        transformer = getattr(base, "transformer", None)
        if "Flux" in type(base).__name__:
            return factor * 2  # latents are packed in 2x2 patches
        patch = getattr(getattr(transformer, "config", None), "patch_size", None)
        return factor * int(patch or 1)

    @property
    def default_size(self) -> tuple[int, int]:
        config = getattr(self._family, "default_generate_config", {}) or {}
        base = self._pipelines["text2image"]
        # Pipelines with a transformer name their trained size; UNet ones keep it in the UNet.
        side = getattr(base, "default_sample_size", None) or getattr(
            getattr(getattr(base, "unet", None), "config", None), "sample_size", None) or 64
        pixels = int(side) * int(getattr(base, "vae_scale_factor", 8))
        return int(config.get("width") or pixels), int(config.get("height") or pixels)

    def accepted_arguments(self, operation: str) -> frozenset[str]:
        """The pipeline arguments a request may pass through `kwargs`."""
        return frozenset(name for name in self._parameters.get(operation, ())
                         if name not in _RESERVED and not any(w in name for w in _TENSOR_WORDS))

    def takes(self, operation: str, argument: str) -> bool:
        return argument in self._parameters.get(operation, ())

    # ---- running -------------------------------------------------------------------------------
    def generate(self, job: ImageJob, on_step: Callable[[int, int], None]) -> list[Any]:
        pipeline = self._pipelines[job.operation]
        takes = self._parameters[job.operation]
        arguments: dict[str, Any] = {
            **job.arguments, "prompt": job.prompts, "num_images_per_prompt": 1,
            "generator": [torch.Generator("cpu").manual_seed(seed) for seed in job.seeds],
            "output_type": "pil",
        }
        if job.negative_prompts is not None:
            arguments["negative_prompt"] = job.negative_prompts
        if "width" in takes:  # image-to-image pipelines make the input image's size
            arguments["width"], arguments["height"] = job.width, job.height
        if job.images is not None:
            arguments["image"] = job.images
        if job.masks is not None:
            arguments["mask_image"] = job.masks
        if "callback_on_step_end" in takes:
            def step_end(pipe: Any, step: int, timestep: Any, tensors: dict) -> dict:
                on_step(step + 1, int(getattr(pipe, "_num_timesteps", 0) or 0))
                return tensors

            arguments["callback_on_step_end"] = step_end
        with torch.inference_mode():
            return list(pipeline(**arguments).images)


# mypy checks here that the class is everything the protocol asks for.
_PROTOCOL: type[ImageEngine] = DiffusersImage
