"""Hostile input hurts only its sender: through a real `fleet local` serving the real MiniLM, the
real SmolLM2 GGUF on llama.cpp and a tiny Qwen2 on Transformers, each request past a limit or
out of an engine's range gets its 4xx with a message that names the limit and how to change it,
and the model answers the next request. Big bodies are parsed without stalling the API, oversized
requests run in chunks, a full embeddings queue answers 429 with Retry-After, and a bad request
sent together with a good one fails alone.

The server runs with some limits lowered through their environment variables (LIMITS), which
also shows that the variables work; the others keep their defaults."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import psutil
import pytest

from tests.builders import _smollm2_gguf
from tests.conftest import FleetProcess, start_local
from tests.llm_builders import build_tiny_qwen2

MIB = 1024 * 1024
LIMITS = {"FLEET_MAX_ITEMS": "300", "FLEET_MAX_MESSAGES": "64",
          "FLEET_MAX_REQUEST_TOKENS": "20000", "FLEET_MAX_BODY_BYTES": str(16 * MIB)}
HELLO = [{"role": "user", "content": "Say hello."}]


@pytest.fixture(scope="module")
def local_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FleetProcess]:
    server = start_local(tmp_path_factory.mktemp("fleet-home"), env=LIMITS)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def http(local_cluster) -> httpx.Client:
    return httpx.Client(base_url=local_cluster.endpoint, timeout=120)


def _launch(http: httpx.Client, **body: object) -> str:
    response = http.post("/v1/models", json=body)
    assert response.status_code == 200, response.text
    return response.json()["model_uid"]


@pytest.fixture(scope="module")
def mini(http, minilm_path) -> str:
    return _launch(http, model_name="all-MiniLM-L6-v2", model_type="embedding",
                   model_uid="mini", model_path=minilm_path)


@pytest.fixture(scope="module")
def smol(http) -> str:
    return _launch(http, model_name="smollm2-instruct", model_type="LLM", model_engine="llama.cpp",
                   model_format="gguf", quantization="Q4_1", model_uid="smol",
                   model_path=str(_smollm2_gguf()), n_parallel=2)


@pytest.fixture(scope="module")
def tiny(http, tmp_path_factory) -> str:
    path = build_tiny_qwen2(tmp_path_factory.mktemp("tiny") / "qwen2")
    family = {"version": 2, "model_name": "hostile-tiny-qwen2", "model_ability": ["chat"],
              "context_length": 512, "stop": ["<|im_end|>", "<|endoftext|>"],
              "model_specs": [{"model_format": "pytorch", "model_size_in_billions": 0,
                               "quantizations": ["none"], "model_uri": str(path)}]}
    registered = http.post("/v1/model_registrations/LLM",
                           json={"model": json.dumps(family), "persist": False})
    assert registered.status_code == 200, registered.text
    return _launch(http, model_name=family["model_name"], model_type="LLM",
                   model_engine="transformers", model_uid="tiny", model_path=str(path))


def _refused(response: httpx.Response, status: int, *fragments: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    for fragment in fragments:
        assert fragment in error["message"], error["message"]
    return error


def _embeds(http: httpx.Client, model: str) -> None:
    response = http.post("/v1/embeddings", json={"model": model, "input": ["still serving"]})
    assert response.status_code == 200, response.text
    assert len(response.json()["data"][0]["embedding"]) == 384


def _chats(http: httpx.Client, model: str) -> None:
    response = http.post("/v1/chat/completions", json={"model": model, "messages": HELLO,
                                                       "max_tokens": 2, "temperature": 0})
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["completion_tokens"] >= 1


# ---- items per request --------------------------------------------------------------------
@pytest.mark.parametrize(("path", "body", "fragments"), [
    ("/v1/embeddings", {"input": ["x"] * 301}, ["input has 301 items", "limit of 300",
                                                 "FLEET_MAX_ITEMS"]),
    ("/v1/rerank", {"query": "q", "documents": ["d"] * 301},
     ["documents has 301 items", "FLEET_MAX_ITEMS"]),
    ("/v1/embeddings", {"input": list(range(1, 20_002))},
     ["input has 20001 token ids", "FLEET_MAX_REQUEST_TOKENS"]),
    # 40 x (2000 characters / 4 + 2)
    ("/v1/embeddings", {"input": ["word " * 400] * 40},
     ["input holds about 20080 tokens", "limit of 20000", "FLEET_MAX_REQUEST_TOKENS"]),
    # 100 x (the query's 4000 / 4 + 2) + 100 x 2
    ("/v1/rerank", {"query": "q " * 2000, "documents": ["d"] * 100},
     ["about 100400 tokens", "query counted once per document"]),
    ("/v1/embeddings", {"input": [True, False]}, ["input"]),  # not token ids 1 and 0
    ("/v1/embeddings", {"input": [2**70]}, ["input"]),  # past any integer an engine reads
])
def test_embeddings_and_rerank_past_a_limit_are_400(http, mini, path, body, fragments):
    _refused(http.post(path, json={"model": mini, **body}), 400, *fragments)
    _embeds(http, mini)


@pytest.mark.parametrize(("body", "fragments"), [
    ({"n": 17}, ["n=17 choices", "limit of 16", "FLEET_MAX_N"]),
    ({"stop": ["s"] * 17}, ["stop has 17 items", "FLEET_MAX_STOP"]),
    ({"stop_token_ids": [1] * 17}, ["stop_token_ids has 17 items", "FLEET_MAX_STOP"]),
    ({"messages": HELLO * 65}, ["messages has 65 items", "limit of 64", "FLEET_MAX_MESSAGES"]),
    ({"tools": [{"type": "function", "function": {"name": "f"}}] * 129},
     ["tools has 129 items", "FLEET_MAX_TOOLS"]),
    ({"logit_bias": {str(i): 1 for i in range(1025)}},
     ["logit_bias has 1025 items", "FLEET_MAX_LOGIT_BIAS"]),
    # n x (prompt + max_tokens) tokens queued: 4 x (31 + 5000) > 20000
    ({"n": 4, "max_tokens": 5000}, ["n=4 x (a prompt of", "max_tokens 5000", "limit of 20000",
                                    "FLEET_MAX_REQUEST_TOKENS", "fewer choices"]),
])
def test_chat_past_a_limit_is_400(http, smol, body, fragments):
    _refused(http.post("/v1/chat/completions", json={"model": smol, "messages": HELLO, **body}),
             400, *fragments)
    _chats(http, smol)


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
def test_text_no_context_could_hold_is_refused_before_it_is_tokenized(http, smol, path):
    """SmolLM2's context of 8192 tokens x 128 characters (no tokenizer packs more into one
    token): 2 MiB of text would take the replica's tokenizer seconds; it is refused at once."""
    text = "The quick brown fox. " * 100_000
    body = ({"messages": [{"role": "user", "content": text}]} if "chat" in path
            else {"prompt": text})
    started = time.perf_counter()
    error = _refused(http.post(path, json={"model": smol, "max_tokens": 2, **body}), 400,
                     "more than 1048576 characters", "context of 8192 tokens")
    assert error["code"] == "context_length_exceeded"
    assert time.perf_counter() - started < 5
    _chats(http, smol)


def test_a_completion_prompt_of_too_many_token_ids_is_400(http, smol):
    response = http.post("/v1/completions", json={"model": smol, "prompt": [1] * 20_001})
    _refused(response, 400, "prompt has 20001 token ids", "FLEET_MAX_REQUEST_TOKENS")
    _chats(http, smol)


# ---- engine ranges -------------------------------------------------------------------------
SAMPLING = [
    ({"seed": 2**64}, "seed"),
    ({"seed": -(2**63) - 1}, "seed"),
    ({"repetition_penalty": 5e-324}, "repetition_penalty"),
    ({"repetition_penalty": 0}, "repetition_penalty"),
    ({"repetition_penalty": 11}, "repetition_penalty"),
    ({"presence_penalty": 2.5}, "presence_penalty"),
    ({"frequency_penalty": -3}, "frequency_penalty"),
    ({"temperature": 2.5}, "temperature"),
    ({"top_p": 0}, "top_p"),
    ({"top_k": -2}, "top_k"),
    ({"top_k": 2**31}, "top_k"),
    ({"max_tokens": 2**40}, "max_tokens"),
    ({"logit_bias": {"1": 101}}, "logit_bias"),
]


@pytest.mark.parametrize(("body", "field"), SAMPLING)
def test_sampling_settings_an_engine_cannot_take_are_400(http, smol, body, field):
    error = _refused(http.post("/v1/chat/completions",
                               json={"model": smol, "messages": HELLO, **body}), 400, field)
    assert error["type"] == "invalid_request_error"
    _chats(http, smol)


@pytest.mark.parametrize("raw", [b"NaN", b"Infinity", b"-Infinity"])
def test_nan_and_infinities_are_400(http, smol, raw):
    body = b'{"model": "smol", "messages": [{"role": "user", "content": "hi"}], "temperature": '
    response = http.post("/v1/chat/completions", content=body + raw + b"}",
                         headers={"content-type": "application/json"})
    _refused(response, 400, "temperature", "finite")
    bias = b'{"model": "smol", "messages": [], "logit_bias": {"1": ' + raw + b"}}"
    _refused(http.post("/v1/chat/completions", content=bias,
                       headers={"content-type": "application/json"}), 400, "logit_bias")
    _chats(http, smol)


@pytest.mark.parametrize(("tool_calls", "fragment"), [
    (["not an object"], "tool_calls[0] must be an object"),
    ([{"id": "1", "type": "function", "function": "f"}], "tool_calls[0] must be an object"),
    ("get_weather()", "tool_calls must be a list"),
])
def test_tool_calls_that_are_not_objects_are_400(http, smol, tool_calls, fragment):
    messages = [*HELLO, {"role": "assistant", "content": "", "tool_calls": tool_calls},
                {"role": "user", "content": "And now?"}]
    response = http.post("/v1/chat/completions",
                         json={"model": smol, "messages": messages, "max_tokens": 2})
    assert _refused(response, 400, fragment)["code"] == "invalid_tool_calls"
    _chats(http, smol)


def test_a_bad_request_sent_with_good_ones_fails_alone_on_transformers(http, tiny):
    """The seed that overflowed in prefill and failed every sequence of the batch."""

    def send(body: dict) -> httpx.Response:
        return http.post("/v1/chat/completions", json={"model": tiny, "messages": HELLO,
                                                       "max_tokens": 4, **body})

    bodies = [{"temperature": 1.0, "seed": 2**64}, {"temperature": 0}, {"temperature": 1.0,
                                                                        "seed": 7, "n": 2}]
    with ThreadPoolExecutor(3) as pool:
        bad, good, seeded = pool.map(send, bodies)
    _refused(bad, 400, "seed")
    assert good.status_code == 200 and good.json()["choices"][0]["finish_reason"] in (
        "stop", "length")
    assert seeded.status_code == 200 and len(seeded.json()["choices"]) == 2
    # The largest seed the API takes reaches the engine and works (n=2: it and it + 1).
    largest = send({"temperature": 1.0, "seed": 2**63 - 1, "n": 2})
    assert largest.status_code == 200, largest.text
    _chats(http, tiny)


def test_the_largest_seed_works_on_llama_cpp(http, smol):
    response = http.post("/v1/chat/completions", json={
        "model": smol, "messages": HELLO, "max_tokens": 3, "temperature": 1.0,
        "seed": 2**63 - 1, "n": 2})
    assert response.status_code == 200, response.text
    assert len(response.json()["choices"]) == 2


# ---- bodies --------------------------------------------------------------------------------
def test_management_bodies_are_capped_at_one_mib(http, mini):
    big = json.dumps({"model": "x" * (MIB + 10)})
    _refused(http.post("/v1/model_registrations/LLM", content=big,
                       headers={"content-type": "application/json"}),
             413, "limit of 1048576", "FLEET_MAX_MANAGEMENT_BODY_BYTES")
    # A declared length over the cap is refused before any of the body is sent.
    host, port = http.base_url.host, http.base_url.port
    with socket.create_connection((host, port), timeout=30) as raw:
        raw.sendall(b"POST /v1/model_registrations/LLM HTTP/1.1\r\nHost: localhost\r\n"
                    b"Content-Type: application/json\r\nContent-Length: 99999999\r\n\r\n")
        answer = b""
        while b"99999999 bytes" not in answer and (chunk := raw.recv(65536)):
            answer += chunk  # the head and the body may come in separate reads
    assert answer.startswith(b"HTTP/1.1 413") and b"99999999 bytes" in answer, answer
    assert http.get("/v1/models").status_code == 200
    _embeds(http, mini)


def test_inference_bodies_are_capped(http, mini):
    body = b'{"model": "mini", "input": "' + b"x" * (16 * MIB) + b'"}'
    _refused(http.post("/v1/embeddings", content=body,
                       headers={"content-type": "application/json"}),
             413, f"limit of {16 * MIB}", "FLEET_MAX_BODY_BYTES")
    _embeds(http, mini)


def test_a_big_body_is_parsed_without_stalling_the_api(local_cluster, http, mini):
    """6 million JSON values (12 MiB): seconds of parsing and about a GiB of memory, which
    used to be spent on the API's own event loop."""
    api = psutil.Process(local_cluster.process.pid)
    before = api.memory_info().rss
    body = b'{"model": "mini", "input": [[' + b",".join([b"1"] * 6_000_000) + b"]]}"
    latencies: list[float] = []
    done = threading.Event()

    def poll() -> None:
        with httpx.Client(base_url=local_cluster.endpoint, timeout=30) as other:
            while not done.is_set():
                started = time.perf_counter()
                assert other.get("/status").status_code == 200
                latencies.append(time.perf_counter() - started)
                time.sleep(0.02)

    poller = threading.Thread(target=poll)
    poller.start()
    started = time.perf_counter()
    try:
        response = http.post("/v1/embeddings", content=body,
                             headers={"content-type": "application/json"})
    finally:
        took = time.perf_counter() - started
        done.set()
        poller.join()
    _refused(response, 413, "JSON values", "FLEET_MAX_JSON_VALUES")
    # /status kept answering all along, each answer a small part of the big request's time
    # (parsed on the event loop, the body held every other request for all of it).
    assert len(latencies) > 5 and max(latencies) < min(0.5, took / 3), (took, max(latencies))
    assert api.memory_info().rss - before < 200 * MIB
    _embeds(http, mini)


def test_a_body_that_runs_the_parser_out_of_memory_costs_only_itself(tmp_path, minilm_path):
    """57 MiB of `{}` (20 million values, under the default 64 MiB body limit) used to leave
    the large-body parser asleep at its memory cap: that request never got an answer, every
    later large body hung, and the server no longer stopped on SIGTERM."""
    import signal

    server = start_local(tmp_path / "home")  # the default limits
    try:
        with httpx.Client(base_url=server.endpoint, timeout=120) as client:
            _launch(client, model_name="all-MiniLM-L6-v2", model_type="embedding",
                    model_uid="mini", model_path=minilm_path)
            hostile = b'{"model": "mini", "input": [' + b"{}," * 20_000_000 + b"{}]}"
            assert len(hostile) > 57 * MIB
            started = time.perf_counter()
            error = _refused(client.post("/v1/embeddings", content=hostile,
                                         headers={"content-type": "application/json"}), 413)
            # Whichever of its limits the parse reached first (memory, or time on a busy
            # machine), the helper was killed for it and the request answered.
            assert ("FLEET_PARSER_MEMORY_BYTES" in error["message"]
                    or "FLEET_MAX_PARSE_SECONDS" in error["message"]), error
            assert time.perf_counter() - started < 40
            del hostile
            # 2 MiB, parsed by a new helper (its text within the tokens a request may queue).
            text = "the next large body " * (MIB // 20)
            body = json.dumps({"model": "mini", "input": [text]}).encode().ljust(2 * MIB)
            started = time.perf_counter()
            response = client.post("/v1/embeddings", content=body,
                                   headers={"content-type": "application/json"})
            assert response.status_code == 200, response.text
            assert time.perf_counter() - started < 20
            _embeds(client, "mini")
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(60) is not None
    finally:
        server.stop()


# ---- batching ------------------------------------------------------------------------------
def _batches(http: httpx.Client, model: str) -> int:
    return http.get(f"/v1/models/{model}/replicas").json()[0]["batch"]["batches"]


def test_a_request_bigger_than_a_batch_runs_in_several_engine_calls(http, mini):
    texts = [f"sentence number {i} about fleets" for i in range(256)]
    before = _batches(http, mini)
    response = http.post("/v1/embeddings", json={"model": mini, "input": texts})
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert [d["index"] for d in data] == list(range(256))
    assert _batches(http, mini) - before == 4  # 256 inputs, 64 to an engine call
    for i in (0, 100, 255):  # each vector is the one the input gets alone
        alone = http.post("/v1/embeddings", json={"model": mini, "input": texts[i]}).json()
        assert alone["data"][0]["embedding"] == pytest.approx(data[i]["embedding"], abs=1e-4)


def test_a_full_embeddings_queue_answers_429_with_retry_after(http, minilm_path):
    model = _launch(http, model_name="all-MiniLM-L6-v2", model_type="embedding",
                    model_uid="mini-queue-2", model_path=minilm_path, request_limits=2)
    texts = [f"a longer sentence to keep the engine busy, number {i}" for i in range(64)]

    def send(_: int) -> httpx.Response:
        return http.post("/v1/embeddings", json={"model": model, "input": texts})

    with ThreadPoolExecutor(12) as pool:
        responses = list(pool.map(send, range(12)))
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) == {200, 429} and statuses.count(200) >= 2, statuses
    busy = next(r for r in responses if r.status_code == 429)
    assert busy.headers["retry-after"] == "1"
    error = _refused(busy, 429, "limit is 2", "request_limits")
    assert error["code"] == "model_busy" and error["type"] == "rate_limit_error"
    _embeds(http, model)
    assert http.delete(f"/v1/models/{model}").status_code == 200
