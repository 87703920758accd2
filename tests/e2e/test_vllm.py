"""SmolLM2-135M-Instruct (Hugging Face folder) on the vLLM engine, through a real `fleet local` that
runs on vLLM's CPU build in a virtual environment of its own (tests/vllm_env.py, built once and
cached): "Paris" at temperature 0, streamed == whole, exact usage, stop strings, logprobs, 8
concurrent streams batched by vLLM, a client that leaves cancels its request in vLLM, a misspelt
launch option refused, vLLM's processes ended on terminate; and the structured-output tests of
tests/e2e/test_structured_output.py run again on this engine. Images in chat on a tiny random
Idefics3 (tests.vision_builders: vLLM's LLaVA needs torchvision, which this environment lacks):
the checks of tests.vision_checks, and the prompt counted for images is the one vLLM read."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from transformers import AutoTokenizer

from fleet.client import FleetClientError
from tests.builders import smollm2_hf_folder
from tests.conftest import FleetProcess, free_port
from tests.e2e.test_structured_output import (  # noqa: F401 - collected here, on vLLM
    test_a_forced_call_cut_by_max_tokens_is_a_call_with_partial_arguments,
    test_a_forced_tool_call_is_a_valid_call_whole_and_streamed,
    test_a_json_schema_is_followed_whole_and_streamed_over_seeds,
    test_json_object_gives_a_json_object,
    test_langchain_with_structured_output,
    test_schemas_that_cannot_be_used_are_400s_and_the_model_keeps_serving,
    test_tools_left_to_the_model_give_text_or_a_valid_call,
    test_xinference_guided_fields,
)
from tests.llm_checks import (
    check_length_and_logprobs,
    leave_mid_stream,
    run_concurrent_streams,
    streamed_text,
)
from tests.vision_builders import IDEFICS3_TOKENS_PER_IMAGE, build_tiny_idefics3
from tests.vision_checks import check_anthropic_image_block, check_one_image_and_two
from tests.vllm_env import ROOT, fleet_environment, vllm_python

# The first run builds vLLM's environment (minutes); later runs find it in the cache.
pytestmark = pytest.mark.timeout(1800)

FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def local_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FleetProcess]:
    """`fleet local` on the vLLM environment's python; the module's clients point at it."""
    port = free_port()
    server = FleetProcess(["local", "-p", str(port)], tmp_path_factory.mktemp("fleet-home"),
                          port, env=fleet_environment(), python=vllm_python())
    server.wait_ready(timeout=120)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def hf_folder() -> Path:
    return smollm2_hf_folder()


@pytest.fixture(scope="module")
def model(client, hf_folder: Path) -> str:
    return client.launch_model("smollm2-instruct", model_type="LLM", model_engine="vllm",
                               model_uid="smol-vllm", model_path=str(hf_folder),
                               cpu_kv_cache_gib=1, max_num_seqs=16)


@pytest.fixture(scope="module")
def tokenizer(hf_folder: Path) -> Any:
    return AutoTokenizer.from_pretrained(hf_folder)


def test_paris_at_temperature_0_whole_and_streamed_with_exact_usage(openai_client, model, tokenizer):
    answer = openai_client.chat.completions.create(model=model, messages=FRANCE, temperature=0,
                                                   max_tokens=30)
    text = answer.choices[0].message.content
    assert "Paris" in text and answer.choices[0].finish_reason == "stop"
    prompt = tokenizer.apply_chat_template(FRANCE, add_generation_prompt=True, tokenize=False)
    assert answer.usage.prompt_tokens == len(tokenizer.encode(prompt, add_special_tokens=False))
    # The answer's tokens and the end-of-turn token that ended it.
    assert answer.usage.completion_tokens == len(tokenizer.encode(text, add_special_tokens=False)) + 1
    streamed, reason, usage = streamed_text(openai_client.chat.completions.create(
        model=model, messages=FRANCE, temperature=0, max_tokens=30, stream=True,
        stream_options={"include_usage": True}))
    assert (streamed, reason) == (text, "stop")
    assert (usage.prompt_tokens, usage.completion_tokens) == (answer.usage.prompt_tokens,
                                                              answer.usage.completion_tokens)


def test_completions_and_length(openai_client, model):
    whole = openai_client.completions.create(model=model, prompt="The capital of France is",
                                             max_tokens=4, temperature=0)
    assert "Paris" in whole.choices[0].text and whole.choices[0].finish_reason == "length"
    assert whole.usage.completion_tokens == 4
    streamed, reason, _ = streamed_text(openai_client.completions.create(
        model=model, prompt="The capital of France is", max_tokens=4, temperature=0, stream=True))
    assert (streamed, reason) == (whole.choices[0].text, "length")


def test_stop_strings_and_logprobs(openai_client, model):
    settings = {"model": model, "messages": FRANCE, "temperature": 0, "max_tokens": 30}
    cut = openai_client.chat.completions.create(**settings, stop=["Paris"])
    text = cut.choices[0].message.content
    assert cut.choices[0].finish_reason == "stop" and "France" in text and "Paris" not in text
    streamed, _, _ = streamed_text(openai_client.chat.completions.create(
        **settings, stop=["Paris"], stream=True))
    assert streamed == text
    check_length_and_logprobs(openai_client, model, FRANCE)


def test_eight_concurrent_streams_are_batched(client, openai_client, model):
    batch = run_concurrent_streams(client, openai_client, model, 8, max_tokens=40)
    assert batch["max_size"] >= 4  # sequences decoded at the same moment in vLLM's batch


def test_a_client_that_leaves_cancels_its_request(local_cluster, client, openai_client, model):
    leave_mid_stream(local_cluster.endpoint, client, model)
    # vLLM dropped it: a new request is answered at once, not after 1500 tokens of a story.
    started = time.monotonic()
    answer = openai_client.chat.completions.create(model=model, messages=FRANCE, temperature=0,
                                                   max_tokens=30)
    assert "Paris" in answer.choices[0].message.content
    assert time.monotonic() - started < 20


def test_a_misspelt_option_is_refused_before_anything_starts(client, hf_folder: Path):
    with pytest.raises(FleetClientError) as caught:
        client.launch_model("smollm2-instruct", model_type="LLM", model_engine="vllm",
                            model_uid="smol-typo", model_path=str(hf_folder),
                            gpu_memory_utilisation=0.5)
    assert caught.value.status_code == 400
    assert "gpu_memory_utilisation" in caught.value.message
    assert "gpu_memory_utilization" in caught.value.message  # the option it resembles


# ---- images in chat ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def idefics3_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_idefics3(tmp_path_factory.mktemp("vision") / "idefics3")


def test_a_chat_with_one_image_and_with_two_whole_and_streamed(local_cluster, client,
                                                                 openai_client,
                                                                 idefics3_path: Path):
    """The model's images reach vLLM, the usage counts each image's tokens, and an Anthropic
    image block is the same chat. Terminated at the end, so that the module's last test sees
    the engine core of its own model only."""
    client.register_model("LLM", {
        "version": 2, "model_name": "tiny-idefics3", "model_ability": ["chat", "vision"],
        "context_length": 512, "stop": ["<|im_end|>"],
        "model_specs": [{"model_format": "pytorch", "model_size_in_billions": 0,
                         "quantizations": ["none"], "model_uri": str(idefics3_path)}]},
        persist=False)
    model = client.launch_model("tiny-idefics3", model_type="LLM", model_engine="vllm",
                                model_uid="idefics3-vllm", model_path=str(idefics3_path),
                                cpu_kv_cache_gib=1, max_num_seqs=4)
    try:
        check_one_image_and_two(openai_client, model, IDEFICS3_TOKENS_PER_IMAGE)
        check_anthropic_image_block(local_cluster.endpoint, openai_client, model)
    finally:
        client.terminate_model(model)


def test_the_prompt_counted_for_images_is_the_one_vllm_reads(idefics3_path: Path):
    """The engine's ids for a chat with images (its usage, its context check) are token for
    token those vLLM's own multimodal processor makes of the prompt and the images
    (tests/e2e/vllm_image_prompt.py, in the vLLM environment)."""
    import json
    import subprocess

    done = subprocess.run([str(vllm_python()), "-m", "tests.e2e.vllm_image_prompt",
                           str(idefics3_path)], capture_output=True, text=True, cwd=ROOT,
                          env={**fleet_environment(), "PATH": "/usr/bin:/bin"}, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    prompts = json.loads(done.stdout.splitlines()[-1])
    assert len(prompts) == 2
    (one, read_one), (two, read_two) = prompts
    assert one == read_one and two == read_two
    assert len(two) - len(one) == IDEFICS3_TOKENS_PER_IMAGE


def _engine_cores(server: FleetProcess) -> list[psutil.Process]:
    children = psutil.Process(server.process.pid).children(recursive=True)
    found = []
    for child in children:
        try:
            if "EngineCore" in child.name() or "EngineCore" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:
            pass
    return found


def test_on_cuda_the_launchs_gpus_are_the_tensor_parallel_group(hf_folder: Path):
    """vLLM's engine arguments for a CUDA launch of two GPUs, computed in the vLLM environment
    (no GPU here: the arguments are built, nothing is started)."""
    import json
    import subprocess

    script = (
        "import json; from fleet.engines.vllm_llm import VLLMLLM; "
        "from fleet.engines.launch_options import VLLMOptions; "
        "from fleet.catalogue.registry import builtin_families; "
        "f = builtin_families('LLM')['smollm2-instruct']; "
        f"e = VLLMLLM({str(hf_folder)!r}, f, 'cuda', VLLMOptions(gpu_memory_utilization=0.5)); "
        "e.context_length = 4096; "
        "a = e._engine_args(); "
        "print(json.dumps([a.tensor_parallel_size, a.gpu_memory_utilization, a.enforce_eager, "
        "a.dtype, a.max_model_len, a.max_num_seqs, a.structured_outputs_config]))")
    done = subprocess.run([str(vllm_python()), "-c", script], capture_output=True, text=True,
                          env={**fleet_environment(), "CUDA_VISIBLE_DEVICES": "2,3",
                               "PATH": "/usr/bin:/bin"}, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    tp, share, eager, dtype, context, seqs, structured = json.loads(done.stdout.splitlines()[-1])
    assert (tp, share, eager, dtype, context, seqs) == (2, 0.5, False, "auto", 4096, 64)
    assert structured == {"backend": "guidance"}


def _alive(pids: set[int]) -> set[int]:
    return {pid for pid in pids if psutil.pid_exists(pid)
            and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE}


def _wait_gone(pids: set[int], timeout: float = 30) -> set[int]:
    deadline = time.monotonic() + timeout
    while _alive(pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    return _alive(pids)


def test_vllms_processes_end_with_a_killed_replica_and_with_the_cluster(tmp_path, hf_folder: Path):
    """vLLM's engine core outlives a replica killed by SIGKILL, and a cluster stopped while it
    runs: Fleet's worker ends what each replica left behind."""
    import os
    import signal

    from fleet.client import Client

    port = free_port()
    server = FleetProcess(["local", "-p", str(port)], tmp_path / "home", port,
                          env=fleet_environment(), python=vllm_python()).wait_ready(timeout=120)
    try:
        client = Client(server.endpoint)
        uid = client.launch_model("smollm2-instruct", model_type="LLM", model_engine="vllm",
                                  model_uid="smol-kill", model_path=str(hf_folder),
                                  cpu_kv_cache_gib=1, max_num_seqs=4)
        replica = client.replicas(uid)[0]
        first = {p.pid for p in _engine_cores(server)}
        assert first
        time.sleep(3)  # a health probe of the worker's watch has seen vLLM's processes
        os.kill(replica["pid"], signal.SIGKILL)
        assert _wait_gone(first) == set()
        # The replica comes back (self-healing) with an engine core of its own.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            rows = client.replicas(uid)
            if rows and rows[0]["state"] == "ready" and rows[0]["pid"] != replica["pid"]:
                break
            time.sleep(0.5)
        second = {p.pid for p in _engine_cores(server)}
        assert second and not second & first
    finally:
        server.stop()
    assert _wait_gone(second) == set()


def test_terminate_ends_vllms_processes(local_cluster, client, model):
    """The module's last test: its model terminated, vLLM's processes end with it."""
    cores = {p.pid for p in _engine_cores(local_cluster)}
    assert cores
    client.terminate_model(model)
    assert _wait_gone(cores) == set()
