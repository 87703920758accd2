"""The llama.cpp side of bench/llm_load.py: the GGUF file on xllamacpp's server alone, in this
process, set up as Fleet sets it up (same slots, shared cache and threads), and fed the same
chat requests by as many concurrent streams as the Fleet run."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
from common import percentile

from fleet.engines.llamacpp_server import DEFAULT_POLL, usable_cores

LLAMACPP_CONCURRENCIES = (1, 8, 16)
CONTEXT = 8192  # the smollm2-instruct family's context length: Fleet's shared cache for it


def _server(model_path: str, parallel: int) -> Any:
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = model_path
    params.n_parallel = parallel
    params.kv_unified = True  # one cache for all slots, as Fleet sets it up
    params.n_ctx = CONTEXT
    for cpu in (params.cpuparams, params.cpuparams_batch):
        cpu.n_threads, cpu.poll = usable_cores(), DEFAULT_POLL
    params.n_gpu_layers = 0
    params.verbosity = 1
    return xllamacpp.Server(params)


def _end_of_turn_bias(server: Any) -> dict[str, int]:
    """logit_bias that masks SmolLM2's end tokens, so every answer is exactly as long."""
    reply = httpx.post(f"{server.listening_address}/tokenize",
                       json={"content": "<|im_end|><|endoftext|>", "parse_special": True})
    return {str(t): -100 for t in reply.json()["tokens"]}


def _one(server: Any, body: dict[str, Any]) -> tuple[float, int]:
    started = time.perf_counter()
    first: list[float] = []
    tokens = [0]

    def on_chunk(chunk: dict[str, Any]) -> bool:
        if chunk.get("usage"):
            tokens[0] = chunk["usage"]["completion_tokens"]
        if not first and any((c.get("delta") or {}).get("content") for c in chunk.get("choices", [])):
            first.append(time.perf_counter() - started)
        return False

    server.handle_chat_completions(body, on_chunk)
    return (first[0] if first else 0.0), tokens[0]


def closed_loop(one: Callable[[int], tuple[float, int]], concurrency: int, duration_s: float,
                warm_up: bool = True) -> dict[str, float]:
    """`concurrency` threads each calling `one(i) -> (time to first token, tokens)` again and
    again for `duration_s`: tokens/s and TTFT p50/p99."""
    ttfts: list[float] = []
    generated = [0]
    counter = iter(range(10**9))
    lock = threading.Lock()
    stop_at = 0.0

    def user() -> None:
        while time.perf_counter() < stop_at:  # read when the threads run, after the warm-up
            with lock:
                i = next(counter)
            first, tokens = one(i)
            with lock:
                ttfts.append(first)
                generated[0] += tokens

    for i in range(concurrency if warm_up else 0):  # the prompt cache, as Fleet's run gets
        one(i)
    users = [threading.Thread(target=user) for _ in range(concurrency)]
    started = time.perf_counter()
    stop_at = started + duration_s
    for thread in users:
        thread.start()
    for thread in users:
        thread.join()
    elapsed = time.perf_counter() - started
    return {"requests": len(ttfts), "tokens_per_s": round(generated[0] / elapsed, 1),
            "ttft_p50_ms": round(statistics.median(ttfts) * 1000, 1),
            "ttft_p99_ms": round(percentile(ttfts, 0.99) * 1000, 1)}


class DirectLlamaCpp:
    """The file on xllamacpp alone, kept loaded beside Fleet's replica so that the two can be
    measured in alternating windows (an idle llama.cpp server sleeps: it takes no CPU from the
    Fleet windows)."""

    def __init__(self, model_path: str, question: Callable[[int], str], new_tokens: int,
                 parallel: int):
        self._server = _server(model_path, parallel)
        self.no_end = _end_of_turn_bias(self._server)
        self._question = question
        self._new_tokens = new_tokens

    def body_for(self, i: int) -> dict[str, Any]:
        return {"messages": [{"role": "user", "content": self._question(i)}], "stream": True,
                "stream_options": {"include_usage": True}, "max_tokens": self._new_tokens,
                "temperature": 0, "logit_bias": self.no_end}

    def one(self, i: int) -> tuple[float, int]:
        """Stream the i-th request: (time to first token, tokens generated)."""
        return _one(self._server, self.body_for(i))

    def measure(self, concurrency: int, duration_s: float) -> dict[str, float]:
        return closed_loop(self.one, concurrency, duration_s)

    def close(self) -> None:
        del self._server


def launch_llamacpp(endpoint: str, model_path: str, parallel: int) -> None:
    httpx.post(f"{endpoint}/v1/models", timeout=600, json={
        "model_name": "smollm2-instruct", "model_type": "LLM", "model_engine": "llama.cpp",
        "model_format": "gguf", "quantization": "Q4_1", "model_uid": "smollm2",
        "model_path": model_path, "n_parallel": parallel}).raise_for_status()
