"""Fleet's vLLM engine against vLLM's own OpenAI server (`vllm serve`) on the same model, for
bench/llm_load.py --engine vllm. Both run on the vLLM environment of tests/vllm_env.py (vLLM's
CPU build here), with the same settings (dtype, max_num_seqs, context, KV cache, eager), both stay
loaded, and the same client measures them in alternating windows: this machine's speed drifts
within a minute, so windows side by side compare better than two runs a minute apart."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from common import alternate, fleet_local, free_port, wait_until_up

from tests.vllm_env import fleet_environment, vllm_python

VLLM_CONCURRENCIES = (1, 16)
MAX_NUM_SEQS = 16
CONTEXT = 2048
KV_CACHE_GIB = 1


@contextmanager
def vllm_serve(model_path: str, served_name: str) -> Iterator[str]:
    """vLLM's OpenAI server on a free port; yields its base URL."""
    port = free_port()
    env = {**fleet_environment(), "VLLM_CPU_KVCACHE_SPACE": str(KV_CACHE_GIB)}
    process = subprocess.Popen(
        [str(vllm_python()), "-m", "vllm.entrypoints.openai.api_server", "--model", model_path,
         "--served-model-name", served_name, "--port", str(port), "--host", "127.0.0.1",
         "--dtype", "float32", "--enforce-eager", "--max-num-seqs", str(MAX_NUM_SEQS),
         "--max-model-len", str(CONTEXT), "--disable-log-stats",
         "--structured-outputs-config", json.dumps({"backend": "guidance"})],
        env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{endpoint}/health", process, 300)
        yield endpoint
    finally:
        process.terminate()
        process.wait(60)


def vllm_interleaved(model_path: str, body: Callable[[str, dict[str, int]], Callable[[int], dict]],
                     closed_loop: Callable[..., dict[str, float]], duration_s: float,
                     rounds: int) -> dict[str, Any]:
    """Fleet (vLLM engine) and `vllm serve` windows alternating, `rounds` of each per
    concurrency. `body(model, no_end)` gives a request maker for a model name."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    no_end = {str(t): -100 for t in {tokenizer.eos_token_id,
                                     tokenizer.convert_tokens_to_ids("<|im_end|>")}}
    window_s = duration_s / rounds
    results: dict[str, dict[str, Any]] = {"vllm_serve": {}, "fleet": {}, "ratios": {}}
    with vllm_serve(model_path, "smollm2") as theirs_url, \
            fleet_local(env=fleet_environment(), python=str(vllm_python())) as endpoint:
        httpx.post(f"{endpoint}/v1/models", timeout=600, json={
            "model_name": "smollm2-instruct", "model_type": "LLM", "model_engine": "vllm",
            "model_uid": "smollm2", "model_path": model_path, "max_num_seqs": MAX_NUM_SEQS,
            "context_length": CONTEXT, "cpu_kv_cache_gib": KV_CACHE_GIB, "dtype": "float32",
        }).raise_for_status()
        ours_url = f"{endpoint}/v1/chat/completions"
        theirs_chat = f"{theirs_url}/v1/chat/completions"
        make = body("smollm2", no_end)
        for url in (ours_url, theirs_chat):
            closed_loop(url, make, 1, 1)  # warm-up
        for c in VLLM_CONCURRENCIES:
            theirs, ours, compared = alternate(
                lambda c=c: closed_loop(theirs_chat, make, c, window_s),
                lambda c=c: closed_loop(ours_url, make, c, window_s), rounds, "vllm_serve")
            results["vllm_serve"][f"concurrency_{c}"] = theirs
            results["fleet"][f"concurrency_{c}"] = ours
            results["ratios"].update({f"c{c}_{name}": v for name, v in compared.items()})
    return results
