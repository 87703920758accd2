"""Rerank under load: Fleet against the same cross-encoder called in-process, in the same run.

No real cross-encoder can be downloaded here, so the model is the tiny random one the tests
build (a BERT with a tokenizer trained on the spot): its scores mean nothing, but its speed
makes the platform's own overhead as visible as it can be. Each request reranks 8 documents.
Prints JSON with requests/s, p50/p99 and the ratios the targets are stated in.

    python bench/rerank_load.py --duration 20 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT.parent))
from common import fleet_local, interleaved  # noqa: E402

from tests.builders import build_tiny_cross_encoder  # noqa: E402

DOCUMENTS = [f"Document {k} describes topic {k} with a handful of words." for k in range(8)]


def query(i: int) -> str:
    return f"Which document describes topic {i % 8}?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=20.0,
                        help="seconds per measurement, over all rounds")
    parser.add_argument("--rounds", type=int, default=5, help="alternating windows of each side")
    args = parser.parse_args()
    from sentence_transformers import CrossEncoder

    with tempfile.TemporaryDirectory() as folder:
        model_path = str(build_tiny_cross_encoder(Path(folder)))
        model = CrossEncoder(model_path, device="cpu", max_length=128)

        def pairs(i: int) -> list[list[str]]:
            return [[query(i), d] for d in DOCUMENTS]

        with fleet_local() as endpoint:
            family = {"model_name": "tiny-reranker", "type": "normal", "max_tokens": 128,
                      "model_uri": model_path}
            httpx.post(f"{endpoint}/v1/model_registrations/rerank",
                       json={"model": family, "persist": False}).raise_for_status()
            httpx.post(f"{endpoint}/v1/models", timeout=300, json={
                "model_name": "tiny-reranker", "model_type": "rerank"}).raise_for_status()
            report = interleaved(
                lambda i: model.predict(pairs(i), batch_size=8),
                lambda i: model.predict([p for k in range(16) for p in pairs(i * 16 + k)],
                                        batch_size=128),
                f"{endpoint}/v1/rerank",
                lambda i: {"model": "tiny-reranker", "query": query(i), "documents": DOCUMENTS},
                args.duration, args.rounds)
    print(json.dumps({"model": "tiny random cross-encoder, 8 documents/request", **report},
                     indent=2))


if __name__ == "__main__":
    main()
