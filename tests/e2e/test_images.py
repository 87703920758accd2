"""Images through a real `fleet local` with API keys on: a tiny random-weight Stable Diffusion
pipeline (tests/image_builders.py) registered as a custom image model and launched, then driven
by the openai SDK (generate, edit with a mask, variations, url answers that download with the
key and expire), xinference-client (text_to_image, image_to_image, inpainting), Fleet's own
client and CLI, and Xinference's progress route; bad input answered with a clear 4xx, after
which the model still serves. The images are noise: shapes, formats and plumbing are checked,
not beauty."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from fleet.client import Client
from fleet.client.images import ImageModelHandle
from tests.conftest import FleetProcess, free_port
from tests.image_builders import tiny_sd_pipeline_folder
from tests.usage_checks import now_iso, usage_totals

KEY = "sk-e2e-images-admin-0123"
MODEL = "tiny-sd"
URL_TTL_S = 4
FAST = {"num_inference_steps": 2}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FleetProcess]:
    home = tmp_path_factory.mktemp("fleet-home")
    port = free_port()
    server = FleetProcess(["local", "-p", str(port)], home, port,
                          env={"FLEET_API_KEY": KEY, "FLEET_IMAGE_URL_TTL_S": str(URL_TTL_S)})
    yield server.wait_ready()
    server.stop()


@pytest.fixture(scope="module")
def fleet(cluster: FleetProcess) -> Client:
    return Client(cluster.endpoint, api_key=KEY)


@pytest.fixture(scope="module")
def model(fleet: Client) -> str:
    folder = tiny_sd_pipeline_folder()
    fleet.register_model("image", {
        "version": 2, "model_name": MODEL, "model_family": "stable_diffusion",
        "model_ability": ["text2image", "image2image", "inpainting"],
        "model_uri": f"file://{folder}"}, persist=False)
    return fleet.launch_model(MODEL, model_type="image", model_uid=MODEL)


@pytest.fixture(scope="module")
def openai_sdk(cluster: FleetProcess):
    from openai import OpenAI

    return OpenAI(base_url=f"{cluster.endpoint}/v1", api_key=KEY, max_retries=0, timeout=300)


@pytest.fixture(scope="module")
def http(cluster: FleetProcess) -> httpx.Client:
    return httpx.Client(base_url=cluster.endpoint, timeout=300,
                        headers={"Authorization": f"Bearer {KEY}"})


def _png(size: tuple[int, int], colour: tuple[int, ...] = (200, 30, 30), mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def _mask(size: tuple[int, int]) -> bytes:
    """White (repaint) on the left half, black (keep) on the right."""
    image = Image.new("L", size, 0)
    image.paste(255, (0, 0, size[0] // 2, size[1]))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _decoded(b64: str) -> Image.Image:
    data = base64.b64decode(b64)
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    return Image.open(io.BytesIO(data))


def _sizes(answer) -> list[tuple[int, int]]:
    items = answer.data if hasattr(answer, "data") else answer["data"]
    return [_decoded(i.b64_json if hasattr(i, "b64_json") else i["b64_json"]).size for i in items]


def test_openai_generate_gives_n_pngs_of_the_asked_size(openai_sdk, model):
    answer = openai_sdk.images.generate(model=model, prompt="a red lighthouse", n=2,
                                        size="64x48", response_format="b64_json",
                                        extra_body=FAST)
    assert answer.created > 0
    assert _sizes(answer) == [(64, 48), (64, 48)]


def test_the_images_made_are_in_the_usage(openai_sdk, model, http):
    start = now_iso()
    openai_sdk.images.generate(model=model, prompt="a red square", n=2, size="64x64",
                               response_format="b64_json")
    openai_sdk.images.generate(model=model, prompt="a blue square", n=1, size="64x64",
                               response_format="url")
    totals = usage_totals(http, start, model, requests=2)
    assert totals["requests"] == 2 and totals["images"] == 3 and totals["errors"] == 0


def test_the_same_seed_gives_the_same_pixels(openai_sdk, model):
    def pixels(seed: int) -> bytes:
        answer = openai_sdk.images.generate(model=model, prompt="a blue boat", size="64x64",
                                            response_format="b64_json",
                                            extra_body={**FAST, "seed": seed})
        return _decoded(answer.data[0].b64_json).convert("RGB").tobytes()

    first = pixels(7)
    assert pixels(7) == first
    assert pixels(8) != first


def test_url_answers_download_with_the_key_and_expire(openai_sdk, model, cluster, http):
    answer = openai_sdk.images.generate(model=model, prompt="a green field", n=2, size="64x64",
                                        response_format="url", extra_body=FAST)
    urls = [item.url for item in answer.data]
    assert len(set(urls)) == 2 and all(u.startswith(cluster.endpoint + "/v1/images/files/")
                                       for u in urls)
    image = http.get(urls[0])
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(image.content)).size == (64, 64)
    assert httpx.get(urls[0], timeout=30).status_code == 401  # no key, no image
    deadline = time.monotonic() + URL_TTL_S + 30
    while http.get(urls[1]).status_code == 200:
        assert time.monotonic() < deadline, "the image outlived its time by far"
        time.sleep(0.5)
    gone = http.get(urls[1])
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "image_not_found"


# The SDK marks variations deprecated (DALL-E 2's route); Xinference's clients still use it.
@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")
def test_openai_edit_with_a_mask_and_variations(openai_sdk, model):
    edited = openai_sdk.images.edit(
        model=model, image=("photo.png", _png((64, 64)), "image/png"),
        mask=("mask.png", _mask((64, 64)), "image/png"), prompt="a yellow sun", n=1,
        size="64x64", response_format="b64_json", extra_body=FAST)
    assert _sizes(edited) == [(64, 64)]
    # A list of one image travels as image[] (the SDK's array format).
    listed = openai_sdk.images.edit(
        model=model, image=[("photo.png", _png((64, 64)), "image/png")], prompt="a yellow sun",
        size="64x64", response_format="b64_json", extra_body=FAST)
    assert _sizes(listed) == [(64, 64)]
    varied = openai_sdk.images.create_variation(
        model=model, image=("photo.png", _png((64, 64), (10, 120, 220)), "image/png"), n=2,
        size="64x64", response_format="b64_json", extra_body=FAST)
    assert _sizes(varied) == [(64, 64), (64, 64)]


def test_progress_moves_from_0_to_1_during_a_request(fleet, model, http):
    handle = fleet.get_model(model)
    assert isinstance(handle, ImageModelHandle)
    answers: list = []
    worker = threading.Thread(target=lambda: answers.append(handle.text_to_image(
        "a slow painting", size="64x64", response_format="b64_json", num_inference_steps=60,
        request_id="slow-painting-1")))
    worker.start()
    seen: list[float] = []
    while worker.is_alive():
        response = http.get("/v1/requests/slow-painting-1/progress")
        if response.status_code == 200:
            seen.append(response.json()["progress"])
        else:  # not registered yet: the request has not reached the API
            assert response.status_code == 404
        time.sleep(0.02)
    worker.join()
    assert len(answers) == 1 and len(answers[0]["data"]) == 1
    assert seen == sorted(seen), seen  # never backwards
    assert any(0 < p < 1 for p in seen), seen
    assert handle.progress("slow-painting-1") == 1.0
    assert http.get("/v1/requests/never-sent/progress").status_code == 404


def test_xinference_client_unchanged(cluster, model):
    from xinference_client import RESTfulClient

    handle = RESTfulClient(cluster.endpoint, api_key=KEY).get_model(model)
    made = handle.text_to_image("a castle", n=2, size="64*64", response_format="b64_json",
                                num_inference_steps=2, seed=3)
    assert _sizes(made) == [(64, 64), (64, 64)]
    moved = handle.image_to_image(image=_png((64, 64)), prompt="a castle at night",
                                  size="64*64", response_format="b64_json",
                                  num_inference_steps=2, strength=0.5)
    assert _sizes(moved) == [(64, 64)]
    painted = handle.inpainting(image=_png((64, 64)), mask_image=_mask((64, 64)),
                                prompt="a door", size="64*64", response_format="b64_json",
                                num_inference_steps=2)
    assert _sizes(painted) == [(64, 64)]


def test_fleet_client_and_cli(fleet, model, cluster, tmp_path: Path):
    handle = fleet.get_model(model)
    answer = handle.text_to_image("a tree", n=1, size="64x64", response_format="url",
                                  num_inference_steps=2)
    assert Image.open(io.BytesIO(handle.image_bytes(answer["data"][0]))).size == (64, 64)
    inpainted = handle.inpainting(_png((64, 64)), _mask((64, 64)), "a window", size="64x64",
                                  response_format="b64_json", num_inference_steps=2)
    assert _sizes(inpainted) == [(64, 64)]
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "fleet", "text2image", "-e", cluster.endpoint, "-ak", KEY,
         "-u", model, "-p", "a small house", "-n", "2", "-s", "64x32", "--steps", "2",
         "-o", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    paths = [Path(line) for line in done.stdout.split()]
    assert len(paths) == 2 and all(p.parent == out for p in paths)
    assert [Image.open(p).size for p in paths] == [(64, 32), (64, 32)]


def _upload(http: httpx.Client, path: str, fields: dict, files: list) -> httpx.Response:
    return http.post(path, data={"model": MODEL, **fields}, files=files)


@pytest.mark.parametrize(("case", "call", "words"), [
    ("a size the pipeline cannot make",
     lambda h: h.post("/v1/images/generations", json={
         "model": MODEL, "prompt": "x", "size": "63x63", **FAST}), "63"),
    ("n over the limit", lambda h: h.post("/v1/images/generations", json={
        "model": MODEL, "prompt": "x", "n": 17}), "FLEET_MAX_N"),
    ("zero steps", lambda h: h.post("/v1/images/generations", json={
        "model": MODEL, "prompt": "x", "num_inference_steps": 0}), "num_inference_steps"),
    ("a non-image upload", lambda h: _upload(h, "/v1/images/variations", {"prompt": "x"},
                                             [("image", ("a.png", b"just text"))]), "not a PNG"),
    ("a corrupt PNG", lambda h: _upload(h, "/v1/images/variations", {"prompt": "x", **FAST},
                                        [("image", ("a.png", _png((64, 64))[:40]))]), "image"),
    ("a mask of another size", lambda h: _upload(
        h, "/v1/images/edits", {"prompt": "x", "size": "64x64", **FAST},
        [("image", ("a.png", _png((64, 64)))), ("mask", ("m.png", _mask((32, 32))))]), "mask"),
    ("an unknown pipeline argument", lambda h: h.post("/v1/images/generations", json={
        "model": MODEL, "prompt": "x", "kwargs": '{"no_such_argument": 1}', **FAST}),
     "no_such_argument"),
])
def test_bad_input_is_a_clear_400_and_the_model_serves_on(http, model, case, call, words):
    response = call(http)
    assert response.status_code == 400, (case, response.text)
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and words in error["message"], (case, error)
    good = http.post("/v1/images/generations", json={
        "model": MODEL, "prompt": "after a refusal", "size": "64x64",
        "response_format": "b64_json", **FAST})
    assert good.status_code == 200, good.text
    assert _sizes(good.json()) == [(64, 64)]



# ---- OCR: the built-in PP-OCRv4 family on RapidOCR --------------------------------------------

OCR_MODEL = "ocr"


@pytest.fixture(scope="module")
def ocr_model(fleet: Client) -> str:
    return fleet.launch_model("PP-OCRv4", model_type="image", model_uid=OCR_MODEL)


def _text_png() -> bytes:
    from tests.engines.test_rapidocr import text_image

    buffer = io.BytesIO()
    text_image().save(buffer, format="PNG")
    return buffer.getvalue()


def test_ocr_reads_drawn_text_through_every_client(ocr_model, fleet, cluster, tmp_path):
    from xinference_client import RESTfulClient

    from tests.engines.test_rapidocr import LINES

    png = _text_png()
    assert fleet.get_model(ocr_model).ocr(png) == "\n".join(LINES)
    answer = RESTfulClient(cluster.endpoint, api_key=KEY).get_model(ocr_model).ocr(
        png, return_dict=True)
    assert answer["task"] == "ocr" and [line["text"] for line in answer["lines"]] == list(LINES)
    assert all(len(line["box"]) == 4 and 0 < line["score"] <= 1 for line in answer["lines"])
    path = tmp_path / "page.png"
    path.write_bytes(png)
    command = [sys.executable, "-m", "fleet", "ocr", "-e", cluster.endpoint, "-ak", KEY,
               "-u", ocr_model, "-i", str(path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == list(LINES)
    boxed = subprocess.run([*command, "--boxes"], capture_output=True, text=True, timeout=300)
    assert boxed.returncode == 0, boxed.stderr
    assert [line["text"] for line in json.loads(boxed.stdout)] == list(LINES)


@pytest.mark.parametrize(("case", "call", "words"), [
    ("a non-image upload", lambda h: h.post("/v1/images/ocr", data={"model": OCR_MODEL},
                                            files=[("image", ("a.png", b"GIF89a..."))]),
     "not a PNG"),
    ("a corrupt PNG", lambda h: h.post("/v1/images/ocr", data={"model": OCR_MODEL}, files=[
        ("image", ("a.png", _png((64, 64))[:50]))]), "could not be decoded"),
    ("an unknown option", lambda h: h.post("/v1/images/ocr", data={
        "model": OCR_MODEL, "kwargs": '{"languages": "fr"}'},
        files=[("image", ("a.png", _png((64, 64))))]), "unknown OCR option 'languages'"),
    ("a generation from an OCR model", lambda h: h.post("/v1/images/generations", json={
        "model": OCR_MODEL, "prompt": "x"}), "does not serve"),
    ("OCR from a diffusion model", lambda h: h.post("/v1/images/ocr", data={"model": MODEL},
                                                    files=[("image", ("a.png", _png((8, 8))))]),
     "does not serve"),
])
def test_bad_ocr_input_is_a_clear_400_and_ocr_serves_on(http, ocr_model, model, case, call,
                                                       words):
    response = call(http)
    assert response.status_code == 400, (case, response.text)
    assert words in response.json()["error"]["message"], (case, response.text)
    good = http.post("/v1/images/ocr", data={"model": OCR_MODEL},
                     files=[("image", ("page.png", _text_png()))])
    assert good.status_code == 200 and good.json().startswith("Fleet reads text"), good.text
