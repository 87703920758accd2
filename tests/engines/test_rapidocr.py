"""OCR on the real PP-OCRv4 models that rapidocr-onnxruntime carries: text drawn by PIL is read
back with its boxes, the request's settings are checked, and a folder without the models says
what it lacks."""

from __future__ import annotations

import asyncio
import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont

from fleet.catalogue.registry import builtin_families
from fleet.cluster.replica.services.ocr import OCRService, check_ocr_options
from fleet.cluster.weights.download import resolve_weights
from fleet.engines.launch_options import RapidOCROptions
from fleet.engines.rapidocr_ocr import RapidOCREngine
from fleet.engines.registry import pick_engine
from fleet.errors import BadRequest

LINES = ("Fleet reads text", "Invoice 2026-12-05")


def text_image(lines: tuple[str, ...] = LINES, size: tuple[int, int] = (640, 180)) -> Image.Image:
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=40)
    for row, line in enumerate(lines):
        draw.text((20, 20 + 70 * row), line, fill="black", font=font)
    return image


@pytest.fixture(scope="module")
def engine() -> RapidOCREngine:
    family = builtin_families("image")["PP-OCRv4"]
    choice = pick_engine(family, None, None, None, None)
    assert choice.engine.name == "rapidocr"
    folder = resolve_weights(family, choice.spec, "none", None, lambda _: None)
    loaded = RapidOCREngine(str(folder), family, "cpu")
    loaded.load()
    return loaded


def test_drawn_text_is_read_back_with_boxes(engine):
    lines = engine.read(text_image(), {})
    assert [line.text for line in lines] == list(LINES)
    assert all(line.score > 0.8 and len(line.box) == 4 for line in lines)
    first_top = min(y for _, y in lines[0].box)
    second_top = min(y for _, y in lines[1].box)
    assert first_top < second_top  # top to bottom, in the image's pixels
    assert all(0 <= x <= 640 and 0 <= y <= 180 for line in lines for x, y in line.box)


def test_a_high_score_threshold_drops_lines_for_that_request_only(engine):
    assert engine.read(text_image(), check_ocr_options({"text_score": 1.0})) == []
    assert len(engine.read(text_image(), {})) == len(LINES)


@pytest.mark.parametrize(("options", "words"), [
    ({"no_such_option": 1}, "unknown OCR option 'no_such_option'"),
    ({"text_score": 2}, "text_score must be a number from 0.0 to 1.0"),
    ({"box_thresh": "high"}, "box_thresh"),
    ({"unclip_ratio": True}, "unclip_ratio"),
])
def test_bad_settings_are_refused_by_name(options, words):
    with pytest.raises(BadRequest, match=words):
        check_ocr_options(options)


def test_the_service_reads_an_upload_and_refuses_a_broken_one(engine):
    executor = ThreadPoolExecutor(max_workers=1)
    family = builtin_families("image")["PP-OCRv4"]
    service = OCRService(engine, family, "ocr", RapidOCROptions(), executor)
    buffer = io.BytesIO()
    text_image().save(buffer, format="PNG")
    try:
        lines = asyncio.run(service.ocr(buffer.getvalue(), {}))
        with pytest.raises(BadRequest, match="could not be decoded"):
            asyncio.run(service.ocr(b"\x89PNG\r\n\x1a\n not really", {}))
    finally:
        executor.shutdown()
    assert [line["text"] for line in lines] == list(LINES)
    assert set(lines[0]) == {"text", "score", "box"}


def test_a_folder_without_the_models_says_what_it_lacks(tmp_path: Path):
    (tmp_path / "ch_PP-OCRv4_det_infer.onnx").write_bytes(b"")
    family = builtin_families("image")["PP-OCRv4"]
    with pytest.raises(FileNotFoundError, match="'cls'"):
        RapidOCREngine(str(tmp_path), family, "cpu").load()
