"""A replica's OCR requests: the upload decoded and checked, then read on the engine's thread.

Requests queue in the replica's DynamicBatcher, which bounds the queue (`request_limits`, a 429
past it) and runs whatever waits when the engine comes free; RapidOCR reads one image per call,
so a batch's images are read one after the other."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import Any

from PIL import Image

from fleet.admission import DEFAULT_LIMITS, RequestLimits
from fleet.catalogue.schemas import BaseFamily
from fleet.cluster.replica.batcher import DynamicBatcher
from fleet.cluster.replica.services.image import decode_upload
from fleet.engines.base import OCREngine
from fleet.engines.launch_options import LaunchOptions
from fleet.engines.rapidocr_ocr import OCR_OPTIONS
from fleet.errors import BadRequest


def check_ocr_options(options: dict[str, Any]) -> dict[str, float]:
    """The request's OCR settings as numbers in their bounds; BadRequest naming any other."""
    checked: dict[str, float] = {}
    for name, value in options.items():
        if name not in OCR_OPTIONS:
            known = ", ".join(sorted(OCR_OPTIONS))
            raise BadRequest(f"unknown OCR option {name!r}; this model takes: {known}",
                             code="unsupported_argument")
        low, high = OCR_OPTIONS[name]
        if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
            raise BadRequest(f"OCR option {name} must be a number from {low} to {high}, "
                             f"not {value!r}", code="invalid_argument")
        checked[name] = float(value)
    return checked


class OCRService:
    METHODS = frozenset({"ocr"})
    STREAMS: frozenset[str] = frozenset()

    def __init__(self, engine: OCREngine, family: BaseFamily, model_uid: str,
                 options: LaunchOptions, executor: ThreadPoolExecutor,
                 limits: RequestLimits = DEFAULT_LIMITS):
        self._engine = engine
        self._batcher: DynamicBatcher[tuple[Image.Image, dict[str, float]], list[dict]] = (
            DynamicBatcher(self._read_all, executor, max_batch_items=8,
                           max_open_requests=limits.max_requests, gather_share=0))

    @property
    def in_progress(self) -> int:
        return self._batcher.in_progress

    def stats(self) -> dict[str, int]:
        return self._batcher.stats()

    def close(self) -> None:
        pass

    async def ocr(self, image: bytes, options: dict[str, Any]) -> list[dict[str, Any]]:
        """The image's text lines: `{"text", "score", "box"}` each, top to bottom."""
        checked = check_ocr_options(options)
        decoded = await asyncio.get_running_loop().run_in_executor(
            None, decode_upload, image, "the image", "RGB")
        (lines,) = await self._batcher.submit([(decoded, checked)], 1)
        return lines

    def _read_all(self, items: list[tuple[Image.Image, dict[str, float]]]) -> list[list[dict]]:
        return [[asdict(line) for line in self._engine.read(image, options)]
                for image, options in items]
