"""Embeddings under concurrency (dynamic batching), embeddings options, and rerank on a tiny
random cross-encoder and on SmolLM2 as an LLM-based reranker, through a real `fleet local`."""

from __future__ import annotations

import base64
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from fleet.client import Client
from tests.builders import build_tiny_cross_encoder, smollm2_hf_folder
from tests.usage_checks import now_iso, usage_totals

SENTENCES = [f"Sentence number {i} talks about topic {i % 7} in {'many ' * (i % 5)}words."
             for i in range(64)]


@pytest.fixture(scope="module")
def http(local_cluster) -> httpx.Client:
    return httpx.Client(base_url=local_cluster.endpoint, timeout=120)


@pytest.fixture(scope="module")
def minilm(client: Client, minilm_path: str) -> str:
    return client.launch_model("all-MiniLM-L6-v2", model_type="embedding", model_path=minilm_path)


@pytest.fixture(scope="module")
def reference(minilm_path: str):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(minilm_path, device="cpu")


def test_64_concurrent_requests_get_exactly_the_in_process_vectors(http, client, minilm, reference):
    def one(text: str) -> list[float]:
        response = http.post("/v1/embeddings", json={"model": minilm, "input": text})
        response.raise_for_status()
        return response.json()["data"][0]["embedding"]

    with ThreadPoolExecutor(max_workers=64) as pool:
        got = np.array(list(pool.map(one, SENTENCES)), dtype=np.float32)
    expected = reference.encode(SENTENCES, convert_to_numpy=True)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    batch = client.replicas(minilm)[0]["batch"]
    assert batch["max_size"] > 1  # they really shared engine calls
    assert batch["api_channels"] == 1  # and travelled on the replica's channel


def test_bad_requests_among_concurrent_good_ones_fail_alone(http, minilm, reference):
    """Requests that arrive together share an actor message and an engine batch; one that
    fails in either must not take its neighbours down with it."""
    bodies = [{"model": minilm, "input": text} for text in SENTENCES[:12]]
    bodies[3] = {"model": minilm, "input": [5, 99999999]}  # fails inside the engine's batch
    bodies[7] = {"model": minilm, "input": "x", "dimensions": 7}  # fails before batching
    with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
        responses = list(pool.map(lambda b: http.post("/v1/embeddings", json=b), bodies))
    assert [r.status_code for r in responses] == [400 if i in (3, 7) else 200 for i in range(12)]
    assert "token ids must be in" in responses[3].json()["error"]["message"]
    assert "dimensions=7" in responses[7].json()["error"]["message"]
    good = [i for i in range(12) if i not in (3, 7)]
    got = np.array([responses[i].json()["data"][0]["embedding"] for i in good], dtype=np.float32)
    expected = reference.encode([SENTENCES[i] for i in good], convert_to_numpy=True)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_langchain_and_llamaindex_embeddings(local_cluster, minilm, reference):
    from langchain_openai import OpenAIEmbeddings
    from llama_index.embeddings.openai_like import OpenAILikeEmbedding

    base_url = f"{local_cluster.endpoint}/v1"
    # check_embedding_ctx_length=False: LangChain would otherwise fetch tiktoken's tables.
    langchain = OpenAIEmbeddings(model=minilm, base_url=base_url, api_key="unused",
                                 check_embedding_ctx_length=False)
    np.testing.assert_allclose(langchain.embed_documents(SENTENCES[:3]),
                               reference.encode(SENTENCES[:3]), atol=1e-5)
    np.testing.assert_allclose(langchain.embed_query("a question"),
                               reference.encode("a question"), atol=1e-5)
    llamaindex = OpenAILikeEmbedding(model_name=minilm, api_base=base_url, api_key="unused")
    np.testing.assert_allclose(llamaindex.get_text_embedding("a passage"),
                               reference.encode("a passage"), atol=1e-5)


def test_token_ids_give_the_same_vector_as_the_text(http, minilm, reference):
    ids = reference.tokenizer("token ids in")["input_ids"]
    by_ids = http.post("/v1/embeddings", json={"model": minilm, "input": ids}).json()
    by_text = http.post("/v1/embeddings", json={"model": minilm, "input": "token ids in"}).json()
    np.testing.assert_allclose(by_ids["data"][0]["embedding"], by_text["data"][0]["embedding"],
                               atol=1e-5)
    assert by_ids["usage"]["prompt_tokens"] == len(ids)
    batch = http.post("/v1/embeddings", json={"model": minilm, "input": [ids, ids[:3]]}).json()
    assert len(batch["data"]) == 2 and batch["usage"]["prompt_tokens"] == len(ids) + 3


def test_long_input_is_truncated_or_refused_as_asked(http, minilm, reference):
    long_text = "word " * 1000
    cut = http.post("/v1/embeddings", json={"model": minilm, "input": long_text}).json()
    assert cut["usage"]["prompt_tokens"] == reference.max_seq_length
    np.testing.assert_allclose(cut["data"][0]["embedding"], reference.encode(long_text), atol=1e-5)
    refused = http.post("/v1/embeddings",
                        json={"model": minilm, "input": long_text, "truncate": False})
    assert refused.status_code == 400
    assert "limit of 256" in refused.json()["error"]["message"]


def test_matryoshka_dimensions_truncate_and_renormalize(http, client, minilm_path, reference):
    client.register_model("embedding", {
        "model_name": "minilm-matryoshka", "dimensions": 384, "max_tokens": 256,
        "matryoshka_dimensions": [128, 256], "model_uri": minilm_path}, persist=False)
    uid = client.launch_model("minilm-matryoshka", model_type="embedding")
    try:
        body = {"model": uid, "input": "short vectors", "dimensions": 128,
                "encoding_format": "base64"}
        data = http.post("/v1/embeddings", json=body).json()["data"][0]["embedding"]
        vector = np.frombuffer(base64.b64decode(data), dtype="<f4")
        full = reference.encode("short vectors")[:128]
        np.testing.assert_allclose(vector, full / np.linalg.norm(full), atol=1e-5)
        refused = http.post("/v1/embeddings", json={**body, "dimensions": 100})
        assert refused.status_code == 400 and "128, 256, 384" in refused.json()["error"]["message"]
    finally:
        client.terminate_model(uid)


def test_memory_stays_flat_under_sustained_load(http, client, minilm):
    def burst(count: int) -> None:
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda i: http.post("/v1/embeddings", json={
                "model": minilm, "input": [SENTENCES[i % 64], f"extra text {i}"]}
            ).raise_for_status(), range(count)))

    burst(200)  # warm-up: allocator pools and caches reach their working size
    before = client.replicas(minilm)[0]["memory_bytes"]
    burst(600)
    after = client.replicas(minilm)[0]["memory_bytes"]
    assert after - before < 20 * 2**20, f"grew by {(after - before) / 2**20:.1f} MiB"


@pytest.fixture(scope="module")
def cross_encoder_path(tmp_path_factory) -> str:
    return str(build_tiny_cross_encoder(tmp_path_factory.mktemp("tiny-cross-encoder")))


@pytest.fixture(scope="module")
def cross_encoder(client: Client, cross_encoder_path: str) -> str:
    client.register_model("rerank", {"model_name": "tiny-reranker", "type": "normal",
                                     "max_tokens": 128, "model_uri": cross_encoder_path},
                          persist=False)
    return client.launch_model("tiny-reranker", model_type="rerank")


DOCUMENTS = ["The Great Wall of China is visible from many places.",
             "Paris is the capital and largest city of France.",
             "Bananas are rich in potassium and easy to carry."]
QUERY = "What is the capital of France?"


def test_cross_encoder_rerank_matches_the_engine_in_process(client, cross_encoder,
                                                            cross_encoder_path):
    from sentence_transformers import CrossEncoder

    expected = CrossEncoder(cross_encoder_path, device="cpu").predict(
        [[QUERY, d] for d in DOCUMENTS])
    result = client.get_model(cross_encoder).rerank(DOCUMENTS, QUERY, return_len=True)
    order = [r["index"] for r in result["results"]]
    assert order == list(np.argsort(-expected))
    scores = {r["index"]: r["relevance_score"] for r in result["results"]}
    np.testing.assert_allclose([scores[i] for i in range(3)], expected, atol=1e-5)
    assert all(r["document"] is None for r in result["results"])
    assert result["meta"]["tokens"]["input_tokens"] > 0
    top = client.get_model(cross_encoder).rerank(DOCUMENTS, QUERY, top_n=1, return_documents=True)
    assert len(top["results"]) == 1
    assert top["results"][0]["document"] == {"text": DOCUMENTS[order[0]]}


def test_xinference_client_rerank(local_cluster, cross_encoder):
    from xinference_client import RESTfulClient

    handle = RESTfulClient(local_cluster.endpoint).get_model(cross_encoder)
    result = handle.rerank(DOCUMENTS, QUERY, top_n=2, return_documents=True)
    assert len(result["results"]) == 2
    assert result["results"][0]["relevance_score"] >= result["results"][1]["relevance_score"]


def test_the_usage_holds_the_tokens_rerank_reported(http, cross_encoder):
    start = now_iso()
    answers = [http.post("/v1/rerank", json={"model": cross_encoder, "query": QUERY,
                                             "documents": DOCUMENTS[:n], "return_len": True}).json()
               for n in (2, 3)]
    totals = usage_totals(http, start, cross_encoder, requests=2)
    assert totals["requests"] == 2 and totals["completion_tokens"] == 0
    assert totals["prompt_tokens"] == sum(a["meta"]["tokens"]["input_tokens"] for a in answers)


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"query": QUERY, "documents": []}, 400, "documents"),
        ({"query": QUERY, "documents": DOCUMENTS, "top_n": 0}, 400, "top_n"),
        ({"query": QUERY, "documents": ["fine", 42]}, 400, "documents"),
        ({"query": "", "documents": DOCUMENTS}, 400, "query"),
        ({"query": QUERY, "documents": ["fine", ""]}, 400, "empty"),
    ],
)
def test_bad_rerank_requests(http, cross_encoder, body, status, fragment):
    response = http.post("/v1/rerank", json={"model": cross_encoder, **body})
    assert response.status_code == status
    assert fragment in response.json()["error"]["message"]


def test_rerank_on_unknown_or_wrong_model(http, minilm):
    unknown = http.post("/v1/rerank", json={"model": "ghost", "query": "q", "documents": ["d"]})
    assert unknown.status_code == 404
    wrong = http.post("/v1/rerank", json={"model": minilm, "query": "q", "documents": ["d"]})
    assert wrong.status_code == 400 and "does not serve rerank" in wrong.json()["error"]["message"]


RANKING_SET = [
    ("What is the capital of France?", DOCUMENTS, 1),
    ("What is the capital of Germany?",
     ["Bananas are yellow.", "Berlin is the capital of Germany.", "Cats sleep a lot."], 1),
    ("Which fruit is rich in potassium?",
     ["Paris is the capital of France.", "Bananas are rich in potassium.", "The sky is blue."], 1),
    ("How many legs does a spider have?",
     ["Spiders have eight legs.", "The ocean is deep.", "Rome is in Italy."], 0),
    ("Who wrote Hamlet?",
     ["Water boils at 100 degrees.", "Dogs are loyal pets.",
      "Hamlet was written by William Shakespeare."], 2),
]


def test_llm_based_reranker_on_smollm2_ranks_answers_first(client):
    uid = client.launch_model("smollm2-instruct", model_type="rerank", model_uid="smol-rerank",
                              model_path=str(smollm2_hf_folder()))
    try:
        assert client.describe_model(uid)["model_engine"] == "transformers"
        handle = client.get_model(uid)
        hits = [handle.rerank(docs, query)["results"][0]["index"] == answer
                for query, docs, answer in RANKING_SET]
        # A 135M model is a weak judge; chance would get >= 4 of 5 right 4.5% of the time.
        assert hits[0] and sum(hits) >= 4, hits
    finally:
        client.terminate_model(uid)
