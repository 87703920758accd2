"""GGUF chat and completions on the llama.cpp engine through a real `fleet local`, with the real
SmolLM2-135M-Instruct Q4_1 file: checked against the same file driven directly by xllamacpp
(same text at temperature 0, same prompt token count from llama.cpp's own chat formatting and
tokenizer), streaming, stop strings and stop ids, lengths, logprobs, parallel slots, cancellation,
the same catalogue family on both engines, and a corrupt file that fails with llama.cpp's words."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from fleet.client import FleetClientError
from tests.builders import _smollm2_gguf, smollm2_hf_folder
from tests.llm_checks import (
    check_length_and_logprobs,
    leave_mid_stream,
    run_concurrent_streams,
    streamed_text,
)

GERMANY = [{"role": "user", "content": "What is the capital of Germany?"}]


@pytest.fixture(scope="module")
def gguf_path() -> str:
    return str(_smollm2_gguf())


@pytest.fixture(scope="module")
def smol(client, gguf_path: str) -> str:
    return client.launch_model("smollm2-instruct", model_type="LLM", model_engine="llama.cpp",
                               model_format="gguf", quantization="Q4_1", model_uid="smol-cpp",
                               model_path=gguf_path, n_parallel=4)


@pytest.fixture(scope="module")
def direct(gguf_path: str) -> Any:
    """The same GGUF file on xllamacpp alone, in this process: llama.cpp's own chat formatting."""
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = gguf_path
    params.n_parallel, params.n_ctx = 1, 1024
    params.cpuparams.n_threads = params.cpuparams_batch.n_threads = 2
    params.verbosity = 1
    return xllamacpp.Server(params)


def test_chat_matches_llama_cpp_itself_whole_and_streamed(openai_client, smol, direct):
    answer = openai_client.chat.completions.create(model=smol, messages=GERMANY, temperature=0,
                                                   max_tokens=24)
    text = answer.choices[0].message.content
    assert "Berlin" in text and answer.choices[0].finish_reason == "stop"
    own = direct.handle_chat_completions({"messages": GERMANY, "temperature": 0, "max_tokens": 24})
    # Fleet rendered the template and counted the prompt itself: llama.cpp agrees on both.
    assert text == own["choices"][0]["message"]["content"]
    assert answer.usage.prompt_tokens == own["usage"]["prompt_tokens"]
    assert answer.usage.completion_tokens == own["usage"]["completion_tokens"]
    streamed, reason, usage = streamed_text(openai_client.chat.completions.create(
        model=smol, messages=GERMANY, temperature=0, max_tokens=24, stream=True,
        stream_options={"include_usage": True}))
    assert (streamed, reason) == (text, "stop")
    assert usage.prompt_tokens == answer.usage.prompt_tokens
    assert usage.completion_tokens == answer.usage.completion_tokens


def test_completions_whole_and_streamed(openai_client, smol, direct):
    prompt = "The capital of Germany is"
    whole = openai_client.completions.create(model=smol, prompt=prompt, max_tokens=6, temperature=0)
    assert whole.object == "text_completion" and "Berlin" in whole.choices[0].text
    own = direct.handle_completions({"prompt": prompt, "max_tokens": 6, "temperature": 0})
    assert whole.usage.prompt_tokens == own["usage"]["prompt_tokens"]
    streamed, reason, _ = streamed_text(openai_client.completions.create(
        model=smol, prompt=prompt, max_tokens=6, temperature=0, stream=True))
    assert streamed == whole.choices[0].text and reason == whole.choices[0].finish_reason


def test_stop_strings_and_stop_token_ids(openai_client, smol, direct):
    settings = {"model": smol, "messages": GERMANY, "temperature": 0, "max_tokens": 24}
    cut = openai_client.chat.completions.create(**settings, stop=["Berlin", "never-seen"])
    text = cut.choices[0].message.content
    assert cut.choices[0].finish_reason == "stop" and "Germany" in text and "Berlin" not in text
    streamed, _, _ = streamed_text(openai_client.chat.completions.create(
        **settings, stop=["Berlin"], stream=True))
    assert streamed == text
    # A request's own stop token ids: llama.cpp has no such setting, Fleet watches the ids.
    berlin = httpx.post(f"{direct.listening_address}/tokenize", json={"content": " Berlin"}).json()
    assert len(berlin["tokens"]) == 1
    by_id = openai_client.chat.completions.create(**settings, extra_body={"stop_token_ids": berlin["tokens"]})
    assert by_id.choices[0].finish_reason == "stop"
    # The stop token is counted, its text (" Berlin") is not sent; the stop string cut after the space.
    assert by_id.choices[0].message.content == text.rstrip(" ")
    assert by_id.usage.completion_tokens == cut.usage.completion_tokens


def test_max_tokens_ends_with_length_and_logprobs(openai_client, smol):
    check_length_and_logprobs(openai_client, smol, GERMANY)


def test_concurrent_streams_run_in_parallel_slots(client, openai_client, smol):
    batch = run_concurrent_streams(client, openai_client, smol, 6, max_tokens=12)
    assert batch["max_size"] == 4  # four slots


def test_a_client_that_leaves_frees_its_slot(local_cluster, client, smol):
    leave_mid_stream(local_cluster.endpoint, client, smol)


def test_the_same_family_on_transformers_and_llama_cpp(client, openai_client, smol):
    hf = client.launch_model("smollm2-instruct", model_type="LLM", model_engine="transformers",
                             model_uid="smol-hf", model_path=str(smollm2_hf_folder()))
    try:
        answers = [openai_client.chat.completions.create(model=uid, messages=GERMANY, temperature=0,
                                                         max_tokens=24) for uid in (hf, smol)]
    finally:
        client.terminate_model(hf)
    for answer in answers:
        assert "Berlin" in answer.choices[0].message.content
    # One template, rendered by the same code for both engines: the same prompt, token for token.
    assert answers[0].usage.prompt_tokens == answers[1].usage.prompt_tokens


def test_a_corrupt_gguf_file_fails_with_llama_cpp_words(client, openai_client, smol, tmp_path: Path):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"this is not a gguf file" * 1000)
    with pytest.raises(FleetClientError) as caught:
        client.launch_model("smollm2-instruct", model_type="LLM", model_engine="llama.cpp",
                            model_format="gguf", quantization="Q4_1", model_uid="broken-cpp",
                            model_path=str(broken))
    message = caught.value.message
    assert caught.value.status_code == 503
    assert "llama.cpp" in message and "invalid magic" in message and "\n" not in message
    assert client.describe_model("broken-cpp")["status"] == "failed"
    client.terminate_model("broken-cpp")
    still = openai_client.chat.completions.create(model=smol, messages=GERMANY, temperature=0,
                                                  max_tokens=24)
    assert "Berlin" in still.choices[0].message.content
