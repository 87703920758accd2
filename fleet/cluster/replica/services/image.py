"""A replica's image requests: checks what the pipeline cannot do, batches, reports progress.

Each image of a request is one item of the replica's DynamicBatcher: a lone request runs at once,
and requests that arrive while the pipeline is busy run together when it comes free. Within a
batch, images that share their settings (operation, size, steps, guidance, further arguments)
go through the pipeline as one call; the rest run group after group. Each image has its own
seed, so a request gives the same pixels alone or batched.

The API validated the body's shape (fleet.api.protocol.images); what depends on the model is
checked here, before anything queues: sizes the pipeline cannot make, operations it lacks,
arguments it does not take, images that do not decode, masks of another size."""

from __future__ import annotations

import asyncio
import io
import random
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import orjson
from PIL import Image

from fleet.admission import DEFAULT_LIMITS, RequestLimits
from fleet.catalogue.schemas import BaseFamily
from fleet.cluster.replica.batcher import DynamicBatcher, run_grouped
from fleet.engines.base import ImageEngine, ImageJob
from fleet.engines.launch_options import DiffusersImageOptions, LaunchOptions
from fleet.errors import BadRequest

DEFAULT_MAX_BATCH_SIZE = 8
# A batch waits this long at most for the clients of the previous one (see DynamicBatcher):
# long enough for a client to fetch its image and send its next request, short next to a
# pipeline call of seconds.
GATHER_MAX_S = 0.25
# Sides of an uploaded image, checked before its pixels are decoded: a small compressed file
# can unpack into gigabytes.
MAX_UPLOAD_SIDE = 8192
# PNG compression: level 1 is several times faster than the default 6 and a few percent bigger.
PNG_COMPRESS_LEVEL = 1
# Finished request ids kept to answer a progress poll with 1.0 (the API keeps them longer).
_FINISHED_REMEMBERED = 256


@dataclass(frozen=True)
class _Settings:
    """What images must share to go through one pipeline call."""

    operation: str
    width: int
    height: int
    arguments: str  # the pipeline arguments as sorted JSON
    negative: bool  # whether the pipeline gets negative prompts


@dataclass
class _Item:
    settings: _Settings
    prompt: str
    negative_prompt: str
    seed: int
    image: Image.Image | None
    mask: Image.Image | None
    progress: _Progress | None


@dataclass(eq=False)  # one per request, told apart by identity
class _Progress:
    """A named request's images: done, and the running step of those in the pipeline now."""

    total: int
    done: int = 0
    running: int = 0
    fraction: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def value(self) -> float:
        with self.lock:
            return min(1.0, (self.done + self.running * self.fraction) / max(1, self.total))


class ImageService:
    METHODS = frozenset({"images", "progress"})
    STREAMS: frozenset[str] = frozenset()

    def __init__(self, engine: ImageEngine, family: BaseFamily, model_uid: str,
                 options: LaunchOptions, executor: ThreadPoolExecutor,
                 limits: RequestLimits = DEFAULT_LIMITS):
        self._engine = engine
        self._model_uid = model_uid
        batch = options.max_batch_size if isinstance(options, DiffusersImageOptions) else None
        self._max_batch = batch or DEFAULT_MAX_BATCH_SIZE
        self._defaults = dict(getattr(family, "default_generate_config", {}) or {})
        # Costs count images: a batch holds max_batch_size of them, however many requests.
        self._batcher: DynamicBatcher[_Item, Image.Image] = DynamicBatcher(
            self._run_batch, executor, max_batch_items=self._max_batch,
            max_batch_tokens=self._max_batch, max_open_requests=limits.max_requests,
            gather_max_s=GATHER_MAX_S)
        self._progress: dict[str, _Progress] = {}
        # Requests whose images are made: the API hears of the end only once the PNGs are
        # encoded and sent, and a poll in between must read 1.0, not "unknown" (0.0, queued).
        self._finished: OrderedDict[str, None] = OrderedDict()

    # ---- ReplicaService -----------------------------------------------------------------------
    @property
    def in_progress(self) -> int:
        return self._batcher.in_progress

    def stats(self) -> dict[str, int]:
        return self._batcher.stats()

    def close(self) -> None:
        self._progress.clear()
        self._finished.clear()

    # ---- requests ------------------------------------------------------------------------------
    async def images(self, operation: str, request: dict[str, Any],
                     request_id: str | None = None) -> list[bytes]:
        """The request's `n` images as PNG files (see fleet.api.protocol.images.engine_request
        for the request's keys; `image` and `mask_image` are the uploaded files' bytes)."""
        loop = asyncio.get_running_loop()
        # Decoding can take a while for a big upload: off the event loop, off the engine thread.
        items = await loop.run_in_executor(None, self._items, operation, request)
        progress = _Progress(total=len(items)) if request_id else None
        if progress is not None and request_id is not None:
            self._progress[request_id] = progress
            for item in items:
                item.progress = progress
        try:
            images = await self._batcher.submit(items, len(items))
            if request_id is not None:
                self._remember_finished(request_id)
        finally:
            if request_id is not None and self._progress.get(request_id) is progress:
                del self._progress[request_id]
        return await loop.run_in_executor(None, _encode_all, images)

    async def progress(self, request_id: str) -> float | None:
        """0.0 to 1.0 for a request this replica is running or has just made; None when it
        knows none by that name (not arrived yet, long finished, or sent to another replica)."""
        progress = self._progress.get(request_id)
        if progress is not None:
            return round(progress.value(), 4)
        return 1.0 if request_id in self._finished else None

    def _remember_finished(self, request_id: str) -> None:
        self._finished[request_id] = None
        self._finished.move_to_end(request_id)
        while len(self._finished) > _FINISHED_REMEMBERED:
            self._finished.popitem(last=False)

    # ---- checks --------------------------------------------------------------------------------
    def _items(self, operation: str, request: dict[str, Any]) -> list[_Item]:
        engine = self._engine
        if operation not in engine.operations():
            can = ", ".join(sorted(engine.operations()))
            raise BadRequest(f"model {self._model_uid} does not do {operation} (it does: {can})",
                             code="unsupported_operation")
        image = mask = None
        if operation != "text2image":
            image = decode_upload(request.get("image"), "the image", "RGB")
        if operation == "inpainting":
            mask = decode_upload(request.get("mask_image"), "the mask", "L")
            if image is not None and mask.size != image.size:
                raise BadRequest(
                    f"the mask is {mask.width}x{mask.height} and the image "
                    f"{image.width}x{image.height}: they must be the same size",
                    code="mask_size_mismatch")
        width, height = self._size(request, image)
        if image is not None and image.size != (width, height):
            image = image.resize((width, height), Image.Resampling.LANCZOS)
            mask = mask.resize((width, height), Image.Resampling.NEAREST) if mask else None
        arguments = self._arguments(operation, request)
        negative = request.get("negative_prompt")
        takes_negative = self._takes(operation, "negative_prompt")
        if negative and not takes_negative:
            raise BadRequest(f"model {self._model_uid}'s pipeline takes no negative_prompt",
                             code="unsupported_argument")
        settings = _Settings(operation, width, height,
                             orjson.dumps(arguments, option=orjson.OPT_SORT_KEYS).decode(),
                             takes_negative)
        n = int(request.get("n") or 1)
        seed = request.get("seed")
        first = int(seed) if seed is not None else random.randrange(2**62)
        return [_Item(settings, str(request.get("prompt") or ""), negative or "",
                      (first + index) % 2**63, image, mask, None) for index in range(n)]

    def _takes(self, operation: str, argument: str) -> bool:
        return self._engine.takes(operation, argument)

    def _size(self, request: dict[str, Any], image: Image.Image | None) -> tuple[int, int]:
        width, height = request.get("width"), request.get("height")
        multiple = self._engine.size_multiple
        if width is None or height is None:
            if image is None:
                return self._engine.default_size
            # The uploaded image's size, down to what the pipeline can make.
            width = max(multiple, image.width - image.width % multiple)
            height = max(multiple, image.height - image.height % multiple)
            return width, height
        if width % multiple or height % multiple:
            raise BadRequest(
                f"size {width}x{height}: model {self._model_uid} makes images whose sides are "
                f"multiples of {multiple} (for example {max(multiple, width - width % multiple)}x"
                f"{max(multiple, height - height % multiple)})", code="invalid_size")
        return int(width), int(height)

    def _arguments(self, operation: str, request: dict[str, Any]) -> dict[str, Any]:
        """The pipeline's own arguments: the request's, over the family's defaults."""
        arguments: dict[str, Any] = {}
        for name in ("num_inference_steps", "guidance_scale", "strength"):
            value = request.get(name)
            if value is None:
                value = self._defaults.get(name)
            if value is None:
                continue
            if not self._takes(operation, name):
                if request.get(name) is None:
                    continue  # a family default that this operation does not use
                raise BadRequest(f"{name} does not apply to {operation} on model "
                                 f"{self._model_uid}", code="unsupported_argument")
            arguments[name] = value
        extra = request.get("extra") or {}
        accepted = self._engine.accepted_arguments(operation)
        unknown = sorted(set(extra) - accepted)
        if unknown:
            raise BadRequest(
                f"unknown pipeline argument {', '.join(map(repr, unknown))} for {operation} on "
                f"model {self._model_uid}; it takes: {', '.join(sorted(accepted)) or 'none'}",
                code="unsupported_argument")
        return {**arguments, **extra}

    # ---- the engine thread ---------------------------------------------------------------------
    def _run_batch(self, items: list[_Item]) -> list[Image.Image]:
        return run_grouped(items, lambda item: item.settings, self._run_group)

    def _run_group(self, settings: _Settings, group: list[_Item]) -> list[Image.Image]:
        trackers = _trackers(group)
        job = ImageJob(
            operation=settings.operation, prompts=[i.prompt for i in group],
            negative_prompts=[i.negative_prompt for i in group] if settings.negative else None,
            seeds=[i.seed for i in group], width=settings.width, height=settings.height,
            arguments=orjson.loads(settings.arguments),
            images=[i.image for i in group] if settings.operation != "text2image" else None,
            masks=[i.mask for i in group] if settings.operation == "inpainting" else None)
        for tracker, count in trackers.items():
            with tracker.lock:
                tracker.running, tracker.fraction = count, 0.0
        try:
            images = self._engine.generate(job, _step_reporter(trackers))
        except (ValueError, TypeError) as exc:
            # The pipeline's own checks of its arguments (a value out of its range, a wrong
            # type in `kwargs`): the request's fault, said in the pipeline's words.
            raise BadRequest(f"the pipeline refused the request: {exc}",
                             code="invalid_pipeline_argument") from None
        finally:
            for tracker in trackers:
                with tracker.lock:
                    tracker.running, tracker.fraction = 0, 0.0
        for tracker, count in trackers.items():
            with tracker.lock:
                tracker.done += count
        if len(images) != len(group):
            raise RuntimeError(f"the pipeline made {len(images)} images for {len(group)} prompts")
        return images


def _trackers(group: list[_Item]) -> dict[_Progress, int]:
    counts: dict[_Progress, int] = {}
    for item in group:
        if item.progress is not None:
            counts[item.progress] = counts.get(item.progress, 0) + 1
    return counts


def _step_reporter(trackers: dict[_Progress, int]) -> Callable[[int, int], None]:
    def on_step(done: int, total: int) -> None:
        if total <= 0:
            return
        for tracker in trackers:
            with tracker.lock:
                tracker.fraction = min(1.0, done / total)

    return on_step


def decode_upload(data: Any, what: str, mode: str) -> Image.Image:
    """An uploaded image file as a PIL image in `mode`; BadRequest when it is missing, too
    big or not decodable."""
    if not isinstance(data, bytes | bytearray) or not data:
        raise BadRequest(f"{what} is missing", code="missing_image")
    try:
        image = Image.open(io.BytesIO(data))
        if max(image.size) > MAX_UPLOAD_SIDE:
            raise BadRequest(f"{what} is {image.width}x{image.height}; each side may be at most "
                             f"{MAX_UPLOAD_SIDE} pixels", code="image_too_large")
        image.load()
        return image.convert(mode)
    except BadRequest:
        raise
    except Exception as exc:  # PIL raises many types for broken files
        raise BadRequest(f"{what} could not be decoded as an image: {exc}",
                         code="invalid_image") from None


def _encode_all(images: list[Image.Image]) -> list[bytes]:
    files = []
    for image in images:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
        files.append(buffer.getvalue())
    return files
