"""The diffusers engine and the replica's ImageService on a real (tiny, random-weight) Stable
Diffusion pipeline: one copy of the weights for every ability, seeds that give the same pixels
alone or batched, batching of concurrent requests, progress, and what is refused before it
queues."""

from __future__ import annotations

import asyncio
import io
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from fleet.catalogue.schemas import ImageFamily
from fleet.cluster.replica.services import image as image_service
from fleet.cluster.replica.services.image import ImageService
from fleet.engines.base import ImageJob
from fleet.engines.diffusers_image import DiffusersImage, single_file_pipeline
from fleet.engines.launch_options import DiffusersImageOptions, validate_options
from fleet.errors import BadRequest
from tests.image_builders import tiny_sd_pipeline_folder

ABILITIES = ["text2image", "image2image", "inpainting"]


def _family(folder: Path, **extra: Any) -> ImageFamily:
    return ImageFamily.model_validate({"model_name": "tiny-sd", "model_ability": ABILITIES,
                                       "model_specs": [{"model_uri": str(folder)}], **extra})


@pytest.fixture(scope="module")
def engine() -> DiffusersImage:
    folder = tiny_sd_pipeline_folder()
    loaded = DiffusersImage(str(folder), _family(folder), "cpu")
    loaded.load()
    return loaded


class CountingEngine:
    """The real engine, with a record of each pipeline call's size (to see the batches)."""

    def __init__(self, real: DiffusersImage):
        self._real = real
        self.calls: list[tuple[int, int]] = []  # (width, images) of each pipeline call
        self.size_multiple = real.size_multiple
        self.default_size = real.default_size

    def operations(self) -> frozenset[str]:
        return self._real.operations()

    def accepted_arguments(self, operation: str) -> frozenset[str]:
        return self._real.accepted_arguments(operation)

    def takes(self, operation: str, argument: str) -> bool:
        return self._real.takes(operation, argument)

    def generate(self, job: ImageJob, on_step: Any) -> list[Any]:
        self.calls.append((job.width, len(job.prompts)))
        return self._real.generate(job, on_step)


def _png(size: tuple[int, int], mode: str = "RGB", colour: Any = (90, 40, 200)) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def _request(**overrides: Any) -> dict[str, Any]:
    return {"prompt": "a boat", "negative_prompt": None, "n": 1, "width": 64, "height": 64,
            "num_inference_steps": 2, "guidance_scale": None, "seed": 1, "strength": None,
            "extra": {}, **overrides}


def _job(prompts: list[str], seeds: list[int], **overrides: Any) -> ImageJob:
    values: dict[str, Any] = {"operation": "text2image", "prompts": prompts,
                              "negative_prompts": None, "seeds": seeds, "width": 64,
                              "height": 48, "arguments": {"num_inference_steps": 2}}
    return ImageJob(**{**values, **overrides})


def test_every_ability_shares_one_copy_of_the_weights(engine):
    pipelines = engine._pipelines
    assert set(pipelines) == set(ABILITIES)
    unets = {id(p.unet) for p in pipelines.values()}
    assert len(unets) == 1, "image-to-image or inpainting loaded a second UNet"
    assert engine.size_multiple == 8
    assert engine.default_size == (256, 256)  # the UNet's sample size times the VAE's factor
    assert {"num_inference_steps", "guidance_scale"} <= engine.accepted_arguments("text2image")
    assert "strength" in engine.accepted_arguments("image2image")
    assert not {"latents", "prompt_embeds", "generator"} & engine.accepted_arguments("text2image")


def _levels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def test_a_seed_gives_the_same_image_alone_or_in_a_batch(engine):
    """Each image's noise comes from its own seed, so its place in a batch does not change it.
    The pixels agree within what float math allows, not bit for bit: a batch of two runs other
    kernels (other summation orders) than a batch of one, and on some CPUs that moves a pixel by
    a level. Another seed gives another image altogether."""
    steps: list[tuple[int, int]] = []
    alone = engine.generate(_job(["a cat"], [11]), lambda done, total: steps.append((done, total)))
    batched = engine.generate(_job(["a dog", "a cat"], [5, 11]), lambda *_: None)
    assert [image.size for image in batched] == [(64, 48), (64, 48)]
    same = np.abs(_levels(alone[0]) - _levels(batched[1]))
    other = np.abs(_levels(alone[0]) - _levels(batched[0]))
    assert same.max() <= 4 and same.mean() < 0.1, (same.max(), same.mean())
    assert other.mean() > 20 * max(same.mean(), 0.05), (other.mean(), same.mean())
    assert steps == [(1, 2), (2, 2)]


def test_image_to_image_and_inpainting_keep_the_asked_size(engine):
    source = Image.new("RGB", (64, 64), (10, 200, 30))
    mask = Image.new("L", (64, 64), 255)
    moved = engine.generate(_job(["x"], [1], operation="image2image", width=64, height=64,
                                 arguments={"num_inference_steps": 4, "strength": 0.5},
                                 images=[source]), lambda *_: None)
    painted = engine.generate(_job(["x"], [1], operation="inpainting", width=64, height=64,
                                   images=[source], masks=[mask]), lambda *_: None)
    assert moved[0].size == painted[0].size == (64, 64)


def test_single_file_checkpoints_are_told_apart_by_their_tensors(tmp_path):
    from safetensors.torch import save_file

    def checkpoint(name: str, tensor_name: str) -> Path:
        path = tmp_path / name
        save_file({tensor_name: torch.zeros(1)}, str(path))
        return path

    sdxl = checkpoint("xl.safetensors", "conditioner.embedders.1.model.transformer.resblocks.0"
                                        ".mlp.c_proj.bias")
    flux = checkpoint("flux.safetensors", "model.diffusion_model.double_blocks.0.img_attn.norm"
                                          ".key_norm.scale")
    plain = checkpoint("sd.safetensors", "model.diffusion_model.input_blocks.0.0.weight")
    assert single_file_pipeline(sdxl, "stable_diffusion") == "StableDiffusionXLPipeline"
    assert single_file_pipeline(flux, "stable_diffusion") == "FluxPipeline"
    assert single_file_pipeline(plain, "stable_diffusion") == "StableDiffusionPipeline"
    assert single_file_pipeline(plain, "sd3") == "StableDiffusion3Pipeline"  # the family says
    pickle = tmp_path / "model.ckpt"
    pickle.write_bytes(b"not loaded")
    with pytest.raises(ValueError, match="pickle"):
        single_file_pipeline(pickle, "stable_diffusion")


def test_launch_options_are_typed_and_misspellings_refused():
    assert validate_options(DiffusersImageOptions, {"cpu_offload": True, "dtype": "fp16"},
                            "diffusers") == {"cpu_offload": "model", "dtype": "float16"}
    with pytest.raises(BadRequest, match="attention_slicing"):
        validate_options(DiffusersImageOptions, {"attention_slice": True}, "diffusers")
    with pytest.raises(BadRequest, match="max_batch_size"):
        validate_options(DiffusersImageOptions, {"max_batch_size": 0}, "diffusers")


# ---- the service -------------------------------------------------------------------------------

def _service(engine: Any, **engine_kwargs: Any) -> tuple[ImageService, ThreadPoolExecutor]:
    executor = ThreadPoolExecutor(max_workers=1)
    folder = tiny_sd_pipeline_folder()
    options = DiffusersImageOptions(**engine_kwargs)
    return ImageService(engine, _family(folder), "tiny-sd", options, executor), executor


def test_concurrent_requests_run_as_one_call_and_a_lone_one_at_once(engine):
    counting = CountingEngine(engine)
    service, executor = _service(counting, max_batch_size=4)

    async def scenario() -> None:
        await service.images("text2image", _request(n=2))  # alone: one call of its 2 images
        assert counting.calls == [(64, 2)]
        counting.calls.clear()
        # The first one runs alone; the five that come while it runs share calls of up to 4
        # images, and the 32x32 one (other settings) runs in a call of its own.
        first = asyncio.ensure_future(service.images("text2image", _request(seed=1)))
        while not counting.calls:
            await asyncio.sleep(0.001)
        rest = [service.images("text2image", _request(seed=s)) for s in range(2, 7)]
        odd = service.images("text2image", _request(width=32, height=32))
        answers = await asyncio.gather(first, *rest, odd)
        assert all(len(a) == 1 and a[0].startswith(b"\x89PNG") for a in answers)
        assert Image.open(io.BytesIO(answers[-1][0])).size == (32, 32)

    try:
        asyncio.run(scenario())
    finally:
        executor.shutdown()
    assert counting.calls[0] == (64, 1)
    later = [images for width, images in counting.calls[1:] if width == 64]
    assert sum(later) == 5 and max(later) <= 4 and len(later) == 2, counting.calls
    assert [c for c in counting.calls if c[0] == 32] == [(32, 1)]
    assert service.stats()["batches"] >= 3


def test_progress_of_a_named_request_rises_to_the_end(engine):
    service, executor = _service(engine)
    seen: list[float] = []

    async def scenario() -> None:
        task = asyncio.ensure_future(service.images(
            "text2image", _request(num_inference_steps=40), "named-1"))
        while not task.done():
            value = await service.progress("named-1")
            if value is not None:
                seen.append(value)
            await asyncio.sleep(0.005)
        await task
        # Still 1.0 after the images are made: the API hears of the end a little later, and a
        # poll in between must not fall back to 0.0 (queued).
        assert await service.progress("named-1") == 1.0
        assert await service.progress("never-sent") is None

    try:
        asyncio.run(scenario())
    finally:
        executor.shutdown()
    assert seen == sorted(seen) and any(0 < v < 1 for v in seen), seen


def test_finished_requests_are_remembered_within_a_bound(engine, monkeypatch):
    monkeypatch.setattr(image_service, "_FINISHED_REMEMBERED", 2)
    service, executor = _service(engine)

    async def scenario() -> list[float | None]:
        for name in ("a", "b", "c"):
            await service.images("text2image", _request(num_inference_steps=1), name)
        return [await service.progress(name) for name in ("a", "b", "c")]

    try:
        assert asyncio.run(scenario()) == [None, 1.0, 1.0]  # the oldest dropped first
    finally:
        executor.shutdown()


@pytest.mark.parametrize(("operation", "overrides", "words"), [
    ("text2image", {"width": 63, "height": 63}, "multiples of 8"),
    ("text2image", {"extra": {"no_such_argument": 1}}, "no_such_argument"),
    ("text2image", {"strength": 0.5}, "strength does not apply"),
    ("image2image", {"image": b"\x89PNG\r\n\x1a\n broken"}, "could not be decoded"),
    ("inpainting", {"image": _png((64, 64)), "mask_image": _png((32, 32), "L", 255)},
     "the mask is 32x32"),
    ("image2image", {"image": _png((9000, 8))}, "at most 8192"),
    ("text2image", {"extra": {"eta": "not a number"}}, "the pipeline refused"),
])
def test_what_the_model_cannot_do_is_a_clear_400(engine, operation, overrides, words):
    service, executor = _service(engine)
    try:
        with pytest.raises(BadRequest, match=words):
            asyncio.run(service.images(operation, _request(**overrides)))
        # ...and the next request is served.
        images = asyncio.run(service.images("text2image", _request()))
    finally:
        executor.shutdown()
    assert len(images) == 1


def test_an_uploaded_image_sets_the_size_when_none_is_asked(engine):
    service, executor = _service(engine)
    try:
        images = asyncio.run(service.images(
            "image2image", _request(width=None, height=None, image=_png((70, 41)), strength=0.6,
                                    num_inference_steps=3)))
    finally:
        executor.shutdown()
    assert Image.open(io.BytesIO(images[0])).size == (64, 40)  # down to multiples of 8


def test_a_request_running_does_not_block_the_event_loop(engine):
    """Progress and status answer while the pipeline runs: it runs on the engine's thread."""
    service, executor = _service(engine)
    ticks: list[float] = []

    async def scenario() -> None:
        task = asyncio.ensure_future(service.images("text2image",
                                                    _request(num_inference_steps=30)))
        while not task.done():
            ticks.append(time.monotonic())
            await asyncio.sleep(0.01)
        await task

    try:
        asyncio.run(scenario())
    finally:
        executor.shutdown()
    assert len(ticks) > 3  # the loop ran while the pipeline did
