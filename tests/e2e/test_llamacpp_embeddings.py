"""A GGUF embedding model on llama.cpp through a real `fleet local`: all-MiniLM-L6-v2 converted to
GGUF here (tests/gguf_builders.py), registered as a custom model, launched without naming an
engine (GGUF goes to llama.cpp) and compared with the same model in sentence-transformers."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from fleet.client import Client
from tests.gguf_builders import minilm_gguf

pytest.importorskip("xllamacpp")

TEXTS = ["Fleet serves models on your own machines.", "UPPERCASE, punctuation!? and unbelievably",
         "A llama reads GGUF files.", "Retrieval pipelines embed many small texts at once.",
         "sentence", "Numbers: 3.14, 42 and 2026.", "Another quite different sentence here.",
         "The last one."]
# Longer than MiniLM's 256 tokens: truncated by default, refused when asked not to truncate.
LONG = " ".join(f"word{i}" for i in range(300))


@pytest.fixture(scope="module")
def http(local_cluster) -> httpx.Client:
    return httpx.Client(base_url=local_cluster.endpoint, timeout=120)


@pytest.fixture(scope="module")
def reference(minilm_path: str):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(minilm_path, device="cpu")


@pytest.fixture(scope="module")
def gguf_minilm(client: Client) -> str:
    path = minilm_gguf()
    client.register_model("embedding", {
        "model_name": "minilm-gguf", "dimensions": 384, "max_tokens": 256, "language": ["en"],
        "model_specs": [{"model_format": "gguf", "quantizations": ["F32"], "model_uri": str(path)}],
    }, persist=False)
    uid = client.launch_model("minilm-gguf", model_type="embedding")
    yield uid
    client.terminate_model(uid)


def _embed(http: httpx.Client, model: str, value, **options) -> httpx.Response:
    return http.post("/v1/embeddings", json={"model": model, "input": value, **options})


def test_gguf_goes_to_llama_cpp_and_gives_the_models_vectors(client, http, gguf_minilm, reference):
    assert client.describe_model(gguf_minilm)["model_engine"] == "llama.cpp"
    with ThreadPoolExecutor(max_workers=8) as pool:  # concurrent: they share engine calls
        replies = list(pool.map(lambda text: _embed(http, gguf_minilm, text), TEXTS))
    assert all(r.status_code == 200 for r in replies), replies[0].text
    got = np.array([r.json()["data"][0]["embedding"] for r in replies], dtype=np.float32)
    expected = reference.encode(TEXTS, normalize_embeddings=True)
    cosines = np.sum(got * expected, axis=1) / np.linalg.norm(got, axis=1)
    assert cosines.min() > 0.999, cosines
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-4)
    # Exact usage: the tokens the model read, as its own tokenizer counts them.
    counts = [len(reference.tokenizer(text)["input_ids"]) for text in TEXTS]
    assert [r.json()["usage"]["prompt_tokens"] for r in replies] == counts
    many = _embed(http, gguf_minilm, TEXTS).json()
    assert many["usage"]["prompt_tokens"] == sum(counts)
    assert [row["index"] for row in many["data"]] == list(range(len(TEXTS)))


def test_token_ids_long_inputs_and_bad_input(http, gguf_minilm, reference):
    ids = reference.tokenizer(TEXTS[2])["input_ids"]
    by_text = _embed(http, gguf_minilm, TEXTS[2]).json()["data"][0]["embedding"]
    by_ids = _embed(http, gguf_minilm, ids).json()["data"][0]["embedding"]
    np.testing.assert_allclose(by_ids, by_text, atol=1e-5)
    # Truncated like sentence-transformers does it: the first 255 tokens and the closing [SEP].
    long = _embed(http, gguf_minilm, LONG).json()
    assert long["usage"]["prompt_tokens"] == 256
    expected = reference.encode([LONG], normalize_embeddings=True)[0]
    assert float(np.dot(long["data"][0]["embedding"], expected)) > 0.999
    refused = _embed(http, gguf_minilm, LONG, truncate=False)
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "input_too_long"
    out_of_vocabulary = _embed(http, gguf_minilm, [101, 10**7, 102])
    assert out_of_vocabulary.status_code == 400
    assert "token ids must be in" in out_of_vocabulary.json()["error"]["message"]
    # The model serves on after the bad requests.
    assert _embed(http, gguf_minilm, "still here").status_code == 200
