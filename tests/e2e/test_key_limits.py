"""Per-key limits (fleet.api.rate_limits) on a real `fleet local` with a database, keys made
through /v1/keys, models on their real engines (MiniLM on sentence-transformers, SmolLM2-135M
on llama.cpp with n_parallel=2):

- requests per minute: the sixth request of a key limited to 5 gets a 429 in OpenAI's shape,
  with Retry-After and the x-ratelimit headers that every answer of the key carries; a listing
  does not count; a PATCH raising the limit lets the key through within a second;
- tokens per minute, counted from the usage the answers reported;
- at most 2 of 6 concurrent streams of a key limited to 2, the slots given back when the streams
  end or their client leaves;
- a daily budget spent: 429 insufficient_quota until 00:00 UTC;
- the Messages route's 429 in Anthropic's shape, with Retry-After;
- on PostgreSQL: the limits stored there, enforced, and changed within a second.

One server per database, SQLite for most."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from tests.builders import _smollm2_gguf
from tests.concurrency import wait_for_status
from tests.conftest import FleetProcess, free_port

LONG_TEXT = ("The quick brown fox jumps over the lazy dog while the cat watches from the "
             "window and the birds sing in the old oak tree")
STORY = "Write a long story about a dragon, in ten chapters."
RATE_HEADERS = ("x-ratelimit-limit-requests", "x-ratelimit-remaining-requests",
                "x-ratelimit-reset-requests")


def _env_without_keys() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("FLEET_API_KEY", "FLEET_AUTH_CONFIG")}


class Cluster:
    def __init__(self, server: FleetProcess):
        self.server = server
        self.admin = ""
        self.args: tuple[str, ...] = ()  # `fleet local`'s own, to start it again

    def call(self, method: str, path: str, key: str | None = None, **kwargs) -> httpx.Response:
        key = key or self.admin
        headers = {"Authorization": f"Bearer {key}"} if key else {}  # the first key: none
        return httpx.request(method, f"{self.server.endpoint}{path}", headers=headers,
                             timeout=120, **kwargs)

    def key(self, **limits: int) -> tuple[str, str]:
        """A new key with these limits: (its id, the key)."""
        made = self.call("POST", "/v1/keys", json={"name": "app", "limits": limits})
        assert made.status_code == 200, made.text
        return made.json()["id"], made.json()["key"]

    def embed(self, key: str, text: str = "hi") -> httpx.Response:
        return self.call("POST", "/v1/embeddings", key, json={"model": "minilm", "input": text})


def _start(tmp_path_factory: pytest.TempPathFactory, *args: str) -> Cluster:
    port = free_port()
    server = FleetProcess(["local", "-p", str(port), *args], tmp_path_factory.mktemp("home"),
                          port, env=_env_without_keys()).wait_ready()
    cluster = Cluster(server)
    cluster.args = args
    made = cluster.call("POST", "/v1/keys", json={"name": "ops", "permissions": ["admin"]})
    assert made.status_code == 200, made.text
    cluster.admin = made.json()["key"]
    return cluster


def _launch_minilm(cluster: Cluster, minilm_path: str) -> None:
    launched = cluster.call("POST", "/v1/models", json={
        "model_name": "all-MiniLM-L6-v2", "model_type": "embedding", "model_uid": "minilm",
        "model_path": minilm_path})
    assert launched.status_code == 200, launched.text


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, minilm_path) -> Iterator[Cluster]:
    """SQLite (the default, under FLEET_HOME)."""
    cluster = _start(tmp_path_factory)
    _launch_minilm(cluster, minilm_path)
    yield cluster
    cluster.server.stop()


@pytest.fixture(scope="module")
def smol(cluster: Cluster) -> str:
    launched = cluster.call("POST", "/v1/models", json={
        "model_name": "smollm2-instruct", "model_type": "LLM", "model_engine": "llama.cpp",
        "model_format": "gguf", "quantization": "Q4_1", "model_uid": "smol",
        "model_path": str(_smollm2_gguf()), "n_parallel": 2})
    assert launched.status_code == 200, launched.text
    return "smol"


def _check_rate_limited(answer: httpx.Response, limit: int) -> None:
    assert answer.status_code == 429, answer.text
    error = answer.json()["error"]
    assert error["code"] == "rate_limit_exceeded" and error["type"] == "rate_limit_error"
    assert f"{limit} requests per minute" in error["message"]
    assert 1 <= int(answer.headers["retry-after"]) <= 60
    assert answer.headers["x-ratelimit-limit-requests"] == str(limit)
    assert answer.headers["x-ratelimit-remaining-requests"] == "0"


def test_the_sixth_request_of_five_a_minute_is_refused_with_the_headers(cluster):
    key_id, key = cluster.key(requests_per_minute=5)
    for left in (4, 3, 2, 1, 0):
        answer = cluster.embed(key)
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-ratelimit-limit-requests"] == "5"
        assert answer.headers["x-ratelimit-remaining-requests"] == str(left)
        assert answer.headers["x-ratelimit-reset-requests"].endswith("s")
    # A listing does not spend the key's requests, and says where it stands.
    listing = cluster.call("GET", "/v1/models", key)
    assert listing.status_code == 200
    assert listing.headers["x-ratelimit-remaining-requests"] == "0"
    _check_rate_limited(cluster.embed(key), 5)
    # A key without limits is neither limited nor given the headers.
    assert all(name not in cluster.embed(cluster.admin).headers for name in RATE_HEADERS)
    # Raised through the API, the limit lets the key through within a second.
    patched = cluster.call("PATCH", f"/v1/keys/{key_id}",
                           json={"limits": {"requests_per_minute": 50}})
    assert patched.status_code == 200, patched.text
    assert wait_for_status(lambda: cluster.embed(key), 200, within_s=1.0) < 1.0
    assert cluster.embed(key).headers["x-ratelimit-limit-requests"] == "50"


def test_tokens_per_minute_count_the_tokens_that_the_answers_reported(cluster):
    _, key = cluster.key(tokens_per_minute=40)
    first = cluster.embed(key, LONG_TEXT)
    assert first.status_code == 200, first.text
    assert first.headers["x-ratelimit-remaining-tokens"] == "40"  # nothing used before it
    used = first.json()["usage"]["prompt_tokens"]
    assert 20 < used < 40
    second = cluster.embed(key, LONG_TEXT)
    assert second.status_code == 200, second.text
    assert second.headers["x-ratelimit-remaining-tokens"] == str(40 - used)
    refused = cluster.embed(key, "hi")  # 2 x used > 40
    assert refused.status_code == 429, refused.text
    assert "40 tokens per minute" in refused.json()["error"]["message"]
    assert refused.headers["x-ratelimit-remaining-tokens"] == "0"
    assert 1 <= int(refused.headers["retry-after"]) <= 60


def _stream(cluster: Cluster, key: str, model: str, max_tokens: int) -> httpx.Response:
    return cluster.call("POST", "/v1/chat/completions", key, json={
        "model": model, "stream": True, "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": STORY}]})


def test_a_key_limited_to_two_concurrent_requests_runs_two_of_six_streams(cluster, smol):
    _, key = cluster.key(max_concurrent_requests=2, requests_per_minute=1000)
    barrier = threading.Barrier(6)
    answers: list[tuple[int, str, httpx.Headers]] = []

    def one() -> None:
        with httpx.Client(timeout=120) as client:
            barrier.wait()
            with client.stream("POST", f"{cluster.server.endpoint}/v1/chat/completions",
                               headers={"Authorization": f"Bearer {key}"},
                               json={"model": smol, "stream": True, "max_tokens": 200,
                                     "messages": [{"role": "user", "content": STORY}]}) as r:
                answers.append((r.status_code, r.read().decode(), r.headers))

    threads = [threading.Thread(target=one) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(180)
    statuses = sorted(status for status, _, _ in answers)
    assert statuses == [200, 200, 429, 429, 429, 429], [a[:2] for a in answers]
    for status, body, headers in answers:
        assert headers["x-ratelimit-limit-requests"] == "1000"  # on the streams' start too
        if status == 200:
            assert body.rstrip().endswith("data: [DONE]")
        else:
            assert "2 concurrent requests" in body and headers["retry-after"] == "1"
    # The streams ended: both slots are back.
    assert _stream(cluster, key, smol, 4).status_code == 200


def test_a_slot_is_given_back_when_the_client_leaves_a_stream(cluster, smol):
    _, key = cluster.key(max_concurrent_requests=1)
    with httpx.Client(timeout=120) as client:
        with client.stream("POST", f"{cluster.server.endpoint}/v1/chat/completions",
                           headers={"Authorization": f"Bearer {key}"},
                           json={"model": smol, "stream": True, "max_tokens": 1000,
                                 "messages": [{"role": "user", "content": STORY}]}) as left:
            assert left.status_code == 200
            assert _stream(cluster, key, smol, 4).status_code == 429  # its one slot is taken
    # The client closed its connection mid-stream.
    # Long before the 1000 tokens it asked for (minutes here): its slot came back when it left.
    wait_for_status(lambda: _stream(cluster, key, smol, 4), 200, within_s=10.0)


def test_a_spent_daily_budget_is_refused_until_midnight_utc(cluster):
    _, key = cluster.key(daily_tokens=10)
    assert cluster.embed(key, LONG_TEXT).status_code == 200  # admitted below the budget
    refused = cluster.embed(key)
    assert refused.status_code == 429, refused.text
    error = refused.json()["error"]
    assert error["code"] == "insufficient_quota" and error["type"] == "insufficient_quota"
    assert "daily budget of 10 tokens" in error["message"]
    now = datetime.now(timezone.utc)
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    assert abs(int(refused.headers["retry-after"]) - (midnight - now).total_seconds()) < 5


def test_the_messages_route_answers_429_in_anthropic_s_shape(cluster, smol):
    _, key = cluster.key(requests_per_minute=1)

    def message() -> httpx.Response:
        return httpx.post(f"{cluster.server.endpoint}/v1/messages", timeout=120,
                          headers={"x-api-key": key, "anthropic-version": "2023-06-01"},
                          json={"model": smol, "max_tokens": 4,
                                "messages": [{"role": "user", "content": "Hi"}]})

    assert message().status_code == 200
    refused = message()
    assert refused.status_code == 429
    assert refused.json()["type"] == "error"
    assert refused.json()["error"]["type"] == "rate_limit_error"
    assert "1 requests per minute" in refused.json()["error"]["message"]
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"


def test_the_responses_route_counts_and_its_usage_is_recorded(cluster, smol):
    key_id, key = cluster.key(requests_per_minute=1)
    body = {"model": smol, "input": "Hi", "max_output_tokens": 4, "store": False}
    answered = cluster.call("POST", "/v1/responses", key, json=body)
    assert answered.status_code == 200, answered.text
    assert answered.headers["x-ratelimit-remaining-requests"] == "0"
    refused = cluster.call("POST", "/v1/responses", key, json=body)
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    usage = answered.json()["usage"]

    def recorded() -> dict:
        rows = cluster.call("GET", "/v1/usage", params={"key_id": key_id, "group_by": "key"})
        return (rows.json()["data"] or [{}])[0]

    deadline = time.monotonic() + 10  # the records are written in batches, each second
    while recorded().get("requests") != 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    row = recorded()
    assert (row["requests"], row["prompt_tokens"], row["completion_tokens"]) == (
        1, usage["input_tokens"], usage["output_tokens"])


def _fleet(cluster: Cluster, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fleet", *args, "-e", cluster.server.endpoint],
                          env={**_env_without_keys(), "FLEET_API_KEY": cluster.admin},
                          capture_output=True, text=True, timeout=120)


def test_a_user_s_limits_hold_the_sum_of_its_keys(cluster):
    _, plain = cluster.key()
    refused = cluster.call("PUT", "/v1/users/team-b/limits", plain,
                           json={"requests_per_minute": 3})
    assert refused.status_code == 403  # admin only
    bad = cluster.call("PUT", "/v1/users/team-b/limits", json={"requests_per_minute": 0})
    assert bad.status_code == 400 and "requests_per_minute" in bad.json()["error"]["message"]
    # Set before the user has any key (the user is made), through the CLI.
    set_by_cli = _fleet(cluster, "users", "limits", "team-b", "--requests-per-minute", "3")
    assert set_by_cli.returncode == 0, set_by_cli.stderr
    keys = []
    for name in ("b-one", "b-two"):
        made = cluster.call("POST", "/v1/keys", json={"name": name, "owner": "team-b"})
        assert made.status_code == 200, made.text
        keys.append(made.json()["key"])
    answers = [cluster.embed(keys[0]), cluster.embed(keys[1]), cluster.embed(keys[0])]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert [a.headers["x-ratelimit-remaining-requests"] for a in answers] == ["2", "1", "0"]
    over = cluster.embed(keys[1])
    assert over.status_code == 429, over.text
    assert "user team-b's (all its keys together) limit of 3 requests per minute" in \
        over.json()["error"]["message"]
    listed = json.loads(_fleet(cluster, "users", "list", "--json").stdout)
    assert next(u for u in listed if u["name"] == "team-b")["limits"]["requests_per_minute"] == 3
    # Cleared (no options: no limits), the user's keys pass within a second.
    assert _fleet(cluster, "users", "limits", "team-b").returncode == 0
    assert wait_for_status(lambda: cluster.embed(keys[1]), 200, within_s=1.0) < 1.0
    audit = cluster.call("GET", "/v1/audit", params={"action": "user.limits"}).json()["data"]
    assert [entry["target"] for entry in audit] == ["team-b", "team-b"]


@pytest.fixture(scope="module")
def pg_cluster(tmp_path_factory, postgres, minilm_path) -> Iterator[Cluster]:
    cluster = _start(tmp_path_factory, "--database-url", postgres.new_database())
    _launch_minilm(cluster, minilm_path)
    yield cluster
    cluster.server.stop()


def test_on_postgresql_the_stored_limits_hold_and_change_within_a_second(pg_cluster):
    key_id, key = pg_cluster.key(requests_per_minute=2, daily_tokens=10**6)
    assert pg_cluster.embed(key).status_code == 200
    assert pg_cluster.embed(key).status_code == 200
    _check_rate_limited(pg_cluster.embed(key), 2)
    patched = pg_cluster.call("PATCH", f"/v1/keys/{key_id}",
                              json={"limits": {"requests_per_minute": None}})
    assert patched.status_code == 200, patched.text
    assert wait_for_status(lambda: pg_cluster.embed(key), 200, within_s=1.0) < 1.0
    assert "x-ratelimit-limit-requests" not in pg_cluster.embed(key).headers


def test_on_postgresql_a_spent_budget_stays_spent_across_a_restart(pg_cluster):
    """The module's last test: it restarts the server. The budget spent before the stop is
    read back from the usage records at the start, so the restart hands out no fresh one."""
    _, spent = pg_cluster.key(daily_tokens=10)
    _, fresh = pg_cluster.key(daily_tokens=10**6)
    assert pg_cluster.embed(spent, LONG_TEXT).status_code == 200
    assert pg_cluster.embed(spent).status_code == 429
    old = pg_cluster.server
    assert old.stop() == 0, old.output()
    port = free_port()
    pg_cluster.server = FleetProcess(["local", "-p", str(port), *pg_cluster.args], old.home, port,
                                     env=_env_without_keys()).wait_ready()
    refused = pg_cluster.embed(spent)
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["code"] == "insufficient_quota"
    assert wait_for_status(lambda: pg_cluster.embed(fresh), 200, within_s=60) < 60
