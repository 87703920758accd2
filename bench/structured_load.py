"""Structured output's cost: tokens/s of chat streams constrained by a JSON schema against the same
streams without one, on one Fleet engine, in the same run.

SmolLM2-135M-Instruct (Hugging Face folder for `--engine transformers` and `--engine vllm`, the
latter on a `fleet local` in the vLLM environment of tests/vllm_env.py; the Q4_1 GGUF file for
`--engine llama.cpp`), greedy, at most 64 new tokens per request (end tokens are masked for the
free answers; a constrained answer ends when its JSON does). The schema holds one string, which a
paragraph fills for most of its tokens: the grammar is live at every step, inside a JSON string,
where most of the vocabulary is allowed. Free and constrained windows alternate (`--rounds`
of each per concurrency), because this machine's speed drifts within a minute; the ratio reported
is the median of the rounds' ratios. Target: constrained / free >= 0.9.

    python bench/structured_load.py --engine transformers --duration 20
    python bench/structured_load.py --engine llama.cpp --duration 20
    python bench/structured_load.py --engine vllm --duration 20
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT.parent))
import sse_load  # noqa: E402
from common import fleet_local  # noqa: E402
from llamacpp_direct import launch_llamacpp  # noqa: E402
from llm_load import NEW_TOKENS, question  # noqa: E402

from tests.builders import _smollm2_gguf, smollm2_hf_folder  # noqa: E402
from tests.vllm_env import fleet_environment, vllm_python  # noqa: E402

CONCURRENCIES = (1, 8)
# A plain string: a counted one ("minLength": 400) would force every answer to max_tokens, but
# llguidance's mask inside a repetition counted in hundreds costs tens of ms per step.
SCHEMA = {"type": "object", "properties": {"paragraph": {"type": "string"}},
          "required": ["paragraph"], "additionalProperties": False}
# SmolLM2's end tokens, masked so that free answers run to max_tokens too.
NO_END = {"0": -100, "2": -100}


def _launch(endpoint: str, engine: str) -> str:
    import httpx

    if engine == "llama.cpp":
        launch_llamacpp(endpoint, str(_smollm2_gguf()), 16)  # uid "smollm2" too
        return "smollm2"
    if engine == "vllm":
        httpx.post(f"{endpoint}/v1/models", timeout=600, json={
            "model_name": "smollm2-instruct", "model_type": "LLM", "model_engine": "vllm",
            "model_uid": "smollm2", "model_path": str(smollm2_hf_folder()), "max_num_seqs": 16,
            "cpu_kv_cache_gib": 1}).raise_for_status()
        return "smollm2"
    httpx.post(f"{endpoint}/v1/models", timeout=600, json={
        "model_name": "smollm2-instruct", "model_type": "LLM", "model_engine": "transformers",
        "model_uid": "smollm2", "model_path": str(smollm2_hf_folder())}).raise_for_status()
    return "smollm2"


def _body(model: str, constrained: bool):
    def body_for(i: int) -> dict:
        body = {"model": model, "stream": True, "stream_options": {"include_usage": True},
                "max_tokens": NEW_TOKENS, "temperature": 0, "logit_bias": NO_END,
                "messages": [{"role": "user", "content": question(i)}]}
        if constrained:
            body["response_format"] = {"type": "json_schema",
                                       "json_schema": {"name": "paragraph", "schema": SCHEMA}}
        return body
    return body_for


def measure(engine: str, duration_s: float, rounds: int) -> dict[str, object]:
    window_s = duration_s / rounds
    results: dict[str, dict[str, object]] = {"free": {}, "schema": {}, "ratios": {}}
    on_vllm = engine == "vllm"
    with fleet_local(env=fleet_environment() if on_vllm else None,
                     python=str(vllm_python()) if on_vllm else sys.executable) as endpoint:
        model = _launch(endpoint, engine)
        url = f"{endpoint}/v1/chat/completions"
        for constrained in (False, True):  # warm-up: the path, the grammar's first compile
            sse_load.closed_loop(url, _body(model, constrained), 1, 0)
        for c in CONCURRENCIES:
            free, schema = [], []
            for _ in range(rounds):
                free.append(sse_load.closed_loop(url, _body(model, False), c, window_s))
                schema.append(sse_load.closed_loop(url, _body(model, True), c, window_s))
            ratios = [s["tokens_per_s"] / f["tokens_per_s"] for s, f in zip(schema, free, strict=True)]
            results["free"][f"concurrency_{c}"] = statistics.median(f["tokens_per_s"] for f in free)
            results["schema"][f"concurrency_{c}"] = statistics.median(s["tokens_per_s"] for s in schema)
            results["ratios"][f"c{c}_schema_over_free"] = round(statistics.median(ratios), 3)
            results["ratios"][f"c{c}_round_ratios"] = [round(r, 3) for r in ratios]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--engine", choices=("transformers", "llama.cpp", "vllm"),
                        default="transformers")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per side and concurrency")
    parser.add_argument("--rounds", type=int, default=4, help="alternating windows of each side")
    args = parser.parse_args()
    report: dict[str, object] = {"model": "SmolLM2-135M-Instruct", "engine": args.engine,
                                 "new_tokens": NEW_TOKENS, "unit": "tokens/s",
                                 "target": "schema / free >= 0.9"}
    report.update(measure(args.engine, args.duration, args.rounds))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
