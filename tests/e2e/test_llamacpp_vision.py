"""Images in chat on the llama.cpp engine through a real `fleet local`: SmolLM2-135M's GGUF
registered as a vision family whose spec lists a projector file beside the weights (a tiny
random one built here, tests.gguf_builders.tiny_projector_gguf: 4 tokens an image), loaded by
default. OpenAI's `image_url` parts through the openai SDK, whole and streamed, one image and
two, each image's tokens in the usage; Anthropic's image blocks through the anthropic SDK. The
same family launched without a projector refuses an image; a file that is no projector fails
the launch, saying so."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from fleet.client import Client, FleetClientError
from tests.builders import _smollm2_gguf
from tests.gguf_builders import tiny_projector_gguf
from tests.vision_checks import (
    GREEDY,
    RED,
    ask,
    check_anthropic_image_block,
    check_one_image_and_two,
)

TOKENS_PER_IMAGE = 4
PROJECTOR = "mmproj-tiny-f32.gguf"


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A GGUF repository's layout: the quantization's file and the projector beside it."""
    folder = tmp_path_factory.mktemp("smol-vision")
    (folder / "smol-vision-Q4_1.gguf").symlink_to(_smollm2_gguf())
    tiny_projector_gguf(folder / PROJECTOR)
    return folder


def _family(folder: Path) -> dict:
    return {"version": 2, "model_name": "smol-vision", "model_ability": ["chat", "vision"],
            "context_length": 1024, "model_lang": ["en"], "stop": ["<|im_end|>"],
            "model_specs": [{"model_format": "ggufv2", "model_size_in_billions": "0_135",
                             "quantizations": ["Q4_1"], "model_uri": str(folder),
                             "model_file_name_template": "smol-vision-{quantization}.gguf",
                             "multimodal_projectors": [PROJECTOR]}]}


@pytest.fixture(scope="module")
def registered(client: Client, model_folder: Path) -> str:
    client.register_model("LLM", _family(model_folder), persist=False)
    return "smol-vision"


@pytest.fixture(scope="module")
def seeing(client: Client, registered: str) -> str:
    # No projector named: the spec's first, found beside the weights.
    return client.launch_model(registered, model_type="LLM", model_engine="llama.cpp",
                               model_uid="smol-vision", n_parallel=2)


def test_one_image_and_two_whole_and_streamed_with_their_tokens_in_the_usage(openai_client, seeing):
    check_one_image_and_two(openai_client, seeing, TOKENS_PER_IMAGE)


def test_anthropic_image_blocks(local_cluster, openai_client, seeing):
    check_anthropic_image_block(local_cluster.endpoint, openai_client, seeing)


def test_a_launch_without_projector_refuses_an_image(client, openai_client, registered):
    blind = client.launch_model(registered, model_type="LLM", model_engine="llama.cpp",
                                model_uid="smol-blind", n_parallel=1, multimodal_projector="")
    try:
        with pytest.raises(openai.BadRequestError) as refused:
            openai_client.chat.completions.create(model=blind, messages=ask(RED), **GREEDY)
        assert refused.value.code == "no_vision"
        assert openai_client.chat.completions.create(model=blind, messages=ask(), **GREEDY)
    finally:
        client.terminate_model(blind)


def test_a_file_that_is_no_projector_fails_the_launch_saying_so(client, registered, tmp_path):
    fake = tmp_path / "mmproj-fake.gguf"
    fake.write_bytes(b"not a projector at all" * 100)
    with pytest.raises(FleetClientError) as failed:
        client.launch_model(registered, model_type="LLM", model_engine="llama.cpp",
                            model_uid="smol-fake-eyes", multimodal_projector=str(fake))
    assert "multimodal projector" in failed.value.message and str(fake) in failed.value.message
    assert "not a readable GGUF file" in failed.value.message
    client.terminate_model("smol-fake-eyes")
