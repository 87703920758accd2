"""Checks that every engine's images-in-chat tests run on their own model (tests/e2e/
test_vision_chat.py on Transformers, test_llamacpp_vision.py on llama.cpp, test_vllm.py on
vLLM): one image and two through the openai SDK, whole and streamed, each image's tokens in the
usage; and an Anthropic image block answered as the same chat."""

from __future__ import annotations

import base64
from typing import Any

import anthropic

from tests.vision_builders import data_url, png

RED, BLUE = png((230, 20, 20)), png((20, 20, 230), size=(64, 48))
GREEDY = {"temperature": 0, "max_tokens": 5}
QUESTION = "What is in the picture?"


def ask(*images: bytes) -> list[dict[str, Any]]:
    """A user's question with `images` after it, as OpenAI's image_url parts (data URLs)."""
    return [{"role": "user", "content": [
        {"type": "text", "text": QUESTION},
        *({"type": "image_url", "image_url": {"url": data_url(image)}} for image in images)]}]


def check_one_image_and_two(openai_client: Any, model: str, tokens_per_image: int) -> None:
    plain = openai_client.chat.completions.create(model=model, messages=ask(), **GREEDY)
    one = openai_client.chat.completions.create(model=model, messages=ask(RED), **GREEDY)
    two = openai_client.chat.completions.create(model=model, messages=ask(RED, BLUE), **GREEDY)
    assert one.usage.prompt_tokens == plain.usage.prompt_tokens + tokens_per_image
    assert two.usage.prompt_tokens == plain.usage.prompt_tokens + 2 * tokens_per_image
    for answer in (one, two):
        assert answer.choices[0].finish_reason in ("stop", "length")
        assert answer.usage.completion_tokens >= 1 and answer.choices[0].message.content
    chunks = list(openai_client.chat.completions.create(
        model=model, messages=ask(RED, BLUE), stream=True,
        stream_options={"include_usage": True}, **GREEDY))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == two.choices[0].message.content  # greedy: the same answer
    assert chunks[-1].usage.prompt_tokens == two.usage.prompt_tokens


def check_anthropic_image_block(endpoint: str, openai_client: Any, model: str) -> None:
    chat = openai_client.chat.completions.create(model=model, messages=ask(RED), **GREEDY)
    claude = anthropic.Anthropic(base_url=endpoint, api_key="unused", max_retries=0)
    # The current SDK sends no sampling fields itself.
    message = claude.messages.create(
        model=model, max_tokens=GREEDY["max_tokens"], extra_body={"temperature": 0},
        messages=[{"role": "user", "content": [
            {"type": "text", "text": QUESTION},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": base64.b64encode(RED).decode()}}]}])
    assert message.usage.input_tokens == chat.usage.prompt_tokens
    assert "".join(b.text for b in message.content if b.type == "text") == \
        chat.choices[0].message.content
