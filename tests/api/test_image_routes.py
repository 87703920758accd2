"""The image routes' edge, in-process (no cluster: every request here is refused before one
would be asked): sizes, n, steps, Xinference's kwargs, uploads that are not images, the forms
of each client; the store of `url` images and its expiry; the table of named requests."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from fleet.api.app import create_app
from fleet.api.image_files import ImageFileStore
from fleet.api.protocol.image_uploads import image_kind
from fleet.api.protocol.images import ImageOptions, parse_size, split_options
from fleet.api.request_progress import RequestTable
from fleet.errors import BadRequest, NotFound

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


@pytest.fixture(scope="module")
def http() -> TestClient:
    return TestClient(create_app(None, "127.0.0.1:1"), base_url="http://localhost")


def _refused(response, status: int, *words: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    for word in words:
        assert word in error["message"], error["message"]
    return error


@pytest.mark.parametrize(("body", "words"), [
    ({"size": "64"}, ["WIDTHxHEIGHT"]),
    ({"size": "0x64"}, ["between 1 and"]),
    ({"size": "99999x64"}, ["between 1 and 8192"]),
    ({"n": 17}, ["n is 17", "FLEET_MAX_N"]),
    ({"n": 0}, ["n"]),
    ({"num_inference_steps": 0}, ["num_inference_steps"]),
    ({"response_format": "jpeg"}, ["response_format"]),
    ({"kwargs": "{not json"}, ["kwargs is not valid JSON"]),
    ({"kwargs": "[1, 2]"}, ["kwargs must be a JSON object"]),
    ({"kwargs": '{"num_inference_steps": 0}'}, ["kwargs.num_inference_steps"]),
    ({"kwargs": '{"seed": "abc"}'}, ["kwargs.seed"]),
    ({"request_id": "../x"}, ["request_id"]),
    ({"prompt": ""}, ["prompt"]),
    ({"no_such_field": 1}, ["no_such_field"]),
])
def test_generations_refuse_bad_input_with_400(http, body, words):
    request = {"model": "m", "prompt": "a cat", **body}
    _refused(http.post("/v1/images/generations", json=request), 400, *words)


def test_sizes_in_both_spellings():
    assert parse_size("64x32") == (64, 32)
    assert parse_size("64*32") == (64, 32)  # Xinference's client
    assert parse_size(None) == (None, None) == parse_size("auto")
    with pytest.raises(BadRequest):
        parse_size("64x")


def test_kwargs_fill_the_known_options_and_the_rest_is_extra():
    options, extra = split_options(ImageOptions(seed=1, guidance_scale=2.0),
                                   {"seed": 5, "eta": 0.3, "request_id": "r-1"})
    assert (options.seed, options.guidance_scale, options.request_id) == (5, 2.0, "r-1")
    assert extra == {"eta": 0.3}


def _form(fields: dict, files: list) -> dict:
    return {"data": fields, "files": files}


@pytest.mark.parametrize(("path", "fields", "files", "words"), [
    ("/v1/images/edits", {"model": "m", "prompt": "x"}, [("image", ("a.png", b"GIF89a..."))],
     ["not a PNG, JPEG or WebP"]),
    ("/v1/images/edits", {"model": "m", "prompt": "x"}, [("image", ("a.png", b""))],
     ["empty file"]),
    ("/v1/images/edits", {"model": "m"}, [("image", ("a.png", PNG))], ["prompt is required"]),
    ("/v1/images/edits", {"model": "m", "prompt": "x"},
     [("image", ("a.png", PNG)), ("mask", ("m.png", b"text, not an image"))], ["mask"]),
    ("/v1/images/edits", {"model": "m", "prompt": "x", "n": "99"},
     [("image", ("a.png", PNG))], ["n is 99"]),
    ("/v1/images/variations", {"model": "m"},
     [("image", ("a.png", PNG)), ("mask", ("m.png", PNG))], ["variations take no mask"]),
    ("/v1/images/variations", {"model": "m"}, [("image[]", ("a.png", PNG)),
                                               ("image[]", ("b.png", PNG))], ["2 images"]),
    ("/v1/images/variations", {"model": "m", "size": "big"}, [("image", ("a.png", PNG))],
     ["WIDTHxHEIGHT"]),
    ("/v1/images/variations", {"model": "m", "kwargs": "{"}, [("image", ("a.png", PNG))],
     ["kwargs"]),
    ("/v1/images/variations", {"model": "m"}, [("photo", ("a.png", PNG))], ["'photo'"]),
    ("/v1/images/variations", {"model": "m"}, [], ["no image file"]),
    ("/v1/images/inpainting", {"model": "m", "prompt": "x"}, [("image", ("a.png", PNG))],
     ["mask_image"]),
    ("/v1/images/ocr", {"model": "m"}, [("image", ("a.txt", b"hello"))], ["not a PNG"]),
    ("/v1/images/ocr", {}, [("image", ("a.png", PNG))], ["model"]),
])
def test_uploads_refuse_bad_input_with_400(http, path, fields, files, words):
    if not files:  # a form without files: httpx sends it urlencoded, so force multipart
        files = [("unused", ("x.txt", b"x"))]
        words = ["'unused'"]
    _refused(http.post(path, data=fields, files=files), 400, *words)


def test_uploads_must_be_multipart(http):
    _refused(http.post("/v1/images/edits", json={"model": "m", "prompt": "x"}), 400,
             "multipart/form-data")


def test_image_kinds_by_their_first_bytes():
    assert image_kind(PNG) == "png"
    assert image_kind(b"\xff\xd8\xff\xe0rest") == "jpeg"
    assert image_kind(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "webp"
    assert image_kind(b"<svg") is None


def test_unknown_files_and_requests_are_404(http):
    _refused(http.get("/v1/images/files/" + "a" * 43 + ".png"), 404, "no image")
    _refused(http.get("/v1/images/files/..%2F..%2Fetc%2Fpasswd"), 404)
    _refused(http.get("/v1/requests/nope/progress"), 404, "no request 'nope'")


def test_the_store_serves_its_images_until_their_time(tmp_path: Path):
    store = ImageFileStore(tmp_path / "images", ttl_s=0.3)

    async def scenario() -> None:
        names = await store.save([PNG, PNG + b"2"])
        assert len(set(names)) == 2 and all(len(n) == 47 for n in names)
        assert await store.read(names[1]) == PNG + b"2"
        await asyncio.sleep(0.6)  # the scheduled removal ran
        assert not (tmp_path / "images" / names[0]).exists()
        with pytest.raises(NotFound):
            await store.read(names[0])

    asyncio.run(scenario())


def test_a_leftover_past_its_time_is_refused_and_swept(tmp_path: Path):
    store = ImageFileStore(tmp_path, ttl_s=60)
    old = tmp_path / ("b" * 43 + ".png")
    old.write_bytes(PNG)
    os.utime(old, (time.time() - 120, time.time() - 120))
    with pytest.raises(NotFound):
        asyncio.run(store.read(old.name))
    old.write_bytes(PNG)
    os.utime(old, (time.time() - 120, time.time() - 120))
    assert store.sweep() == 1 and not old.exists()


def test_named_requests_are_remembered_while_running_and_after():
    table = RequestTable(keep_finished_s=0.2, limit=3)
    with table.running("r1", "model-a"):
        tracked = table.get("r1")
        assert tracked is not None and tracked.finished_at is None
        with pytest.raises(BadRequest, match="still running"):
            with table.running("r1", "model-a"):
                pass
    assert table.get("r1").finished_at is not None
    time.sleep(0.3)
    assert table.get("r1") is None
    for i in range(5):
        with table.running(f"x{i}", "m"):
            pass
    assert table.get("x0") is None and table.get("x4") is not None
