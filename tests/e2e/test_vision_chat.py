"""Images in chat through a real `fleet local`, on a tiny random LLaVA built here
(tests.vision_builders) and loaded by the real Transformers engine: OpenAI's `image_url` parts
(the openai SDK, whole and streamed, one image and two), Anthropic's image blocks (the anthropic
SDK) and the Responses API's `input_image`, each image's tokens counted in the usage. Refused:
an image to a model without the vision ability, a URL while the operator has not allowed them,
more images than the limit, a file that is no image. On a second cluster whose operator allows
URLs: an image fetched from a server the operator named, and private addresses refused."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from fleet.client import Client
from tests.conftest import FleetProcess, start_local
from tests.llm_builders import build_tiny_qwen2
from tests.vision_builders import TOKENS_PER_IMAGE, build_tiny_llava, data_url
from tests.vision_checks import (
    GREEDY,
    QUESTION,
    RED,
    ask,
    check_anthropic_image_block,
    check_one_image_and_two,
)


def _family(name: str, abilities: list[str], path: Path) -> dict:
    # No chat template: the model's own (the LLaVA processor's, which writes <image>) is used.
    return {"version": 2, "model_name": name, "model_ability": abilities, "context_length": 512,
            "stop": ["<|im_end|>"],
            "model_specs": [{"model_format": "pytorch", "model_size_in_billions": 0,
                             "quantizations": ["none"], "model_uri": str(path)}]}


def _launch(client: Client, name: str, abilities: list[str], path: Path) -> str:
    client.register_model("LLM", _family(name, abilities, path), persist=False)
    return client.launch_model(name, model_type="LLM", model_engine="transformers",
                               model_path=str(path))


@pytest.fixture(scope="module")
def llava_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llava(tmp_path_factory.mktemp("vision") / "llava")


@pytest.fixture(scope="module")
def llava(client, llava_path) -> str:
    return _launch(client, "tiny-llava", ["chat", "vision"], llava_path)


def _image_part(image: bytes) -> dict:
    return {"type": "image_url", "image_url": {"url": data_url(image)}}


def _error(raised: pytest.ExceptionInfo) -> dict:
    return raised.value.body if isinstance(raised.value.body, dict) else {}


def test_one_image_and_two_whole_and_streamed_with_their_tokens_in_the_usage(openai_client, llava):
    check_one_image_and_two(openai_client, llava, TOKENS_PER_IMAGE)


def test_anthropic_image_blocks_and_responses_input_images(local_cluster, openai_client, llava):
    check_anthropic_image_block(local_cluster.endpoint, openai_client, llava)
    chat = openai_client.chat.completions.create(model=llava, messages=ask(RED), **GREEDY)
    response = openai_client.responses.create(
        model=llava, max_output_tokens=5, temperature=0, input=[{"role": "user", "content": [
            {"type": "input_text", "text": QUESTION},
            {"type": "input_image", "image_url": data_url(RED)}]}])
    assert response.usage.input_tokens == chat.usage.prompt_tokens
    assert response.output_text == chat.choices[0].message.content


def test_a_model_without_vision_refuses_an_image(client, openai_client, tmp_path_factory):
    path = build_tiny_qwen2(tmp_path_factory.mktemp("text") / "qwen2")
    text_model = _launch(client, "tiny-text", ["chat"], path)
    with pytest.raises(openai.BadRequestError) as refused:
        openai_client.chat.completions.create(model=text_model, messages=ask(RED), **GREEDY)
    error = _error(refused)
    assert error["code"] == "no_vision" and "messages[0].content[1]" in error["message"]
    # Its text chats go on.
    assert openai_client.chat.completions.create(model=text_model, messages=ask(), **GREEDY)


@pytest.mark.parametrize(("content", "code", "words"), [
    ([_image_part(RED)] * 17, "too_many_images", "FLEET_MAX_IMAGES"),
    ([{"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}],
     "image_url_not_allowed", "--allow-image-urls"),
    ([{"type": "image_url", "image_url": {"url": "data:image/png;base64,bm90IGFuIGltYWdl"}}],
     "invalid_image", "messages[0].content[0]"),
    ([{"type": "image_url", "image_url": {}}], "invalid_image", "image_url"),
    ([{"type": "image"}], "invalid_image", "image_url"),  # the replica's mark, with no image
])
def test_bad_images_are_400s_that_say_why(local_cluster, llava, content, code, words):
    answer = httpx.post(f"{local_cluster.endpoint}/v1/chat/completions", timeout=30, json={
        "model": llava, "messages": [{"role": "user", "content": content}], "max_tokens": 2})
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["code"] == code and words in error["message"]


# ---- a cluster whose operator allows image URLs ------------------------------------------------
@pytest.fixture(scope="module")
def image_server() -> Iterator[str]:
    """A web server on 127.0.0.1 serving /red.png."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            if self.path != "/red.png":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(RED)))
            self.end_headers()
            self.wfile.write(RED)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def url_cluster(tmp_path_factory) -> Iterator[FleetProcess]:
    # Loopback is refused like any private address unless named: the test server's is named.
    server = start_local(tmp_path_factory.mktemp("fleet-home-urls"), env={
        "FLEET_ALLOW_IMAGE_URLS": "1", "FLEET_IMAGE_URL_NETWORKS": "127.0.0.1/32"})
    yield server
    server.stop()


def test_an_allowed_url_is_fetched_and_private_addresses_are_refused(
        url_cluster, llava_path, image_server, openai_client, llava):
    model = _launch(Client(url_cluster.endpoint), "tiny-llava", ["chat", "vision"], llava_path)
    endpoint = f"{url_cluster.endpoint}/v1/chat/completions"

    def ask_by_url(url: str) -> httpx.Response:
        return httpx.post(endpoint, timeout=60, json={"model": model, "max_tokens": 5,
                                                      "temperature": 0, "messages": [
            {"role": "user", "content": [{"type": "text", "text": "What is in the picture?"},
                                         {"type": "image_url", "image_url": {"url": url}}]}]})

    fetched = ask_by_url(f"{image_server}/red.png")
    assert fetched.status_code == 200, fetched.text
    inline = openai_client.chat.completions.create(model=llava, messages=ask(RED), **GREEDY)
    assert fetched.json()["usage"]["prompt_tokens"] == inline.usage.prompt_tokens
    for private in ("http://10.1.2.3/cat.png", "http://169.254.169.254/latest/meta-data",
                    "http://[::1]/cat.png", "http://127.0.0.2/cat.png"):
        refused = ask_by_url(private)
        assert refused.status_code == 400, (private, refused.text)
        assert refused.json()["error"]["code"] == "image_url_not_allowed", private
    missing = ask_by_url(f"{image_server}/missing.png")
    assert missing.status_code == 400 and missing.json()["error"]["code"] == "image_fetch_failed"
