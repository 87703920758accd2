"""Usage by key, user and model through a real `fleet local` with its SQLite database: a mixed
load of chat (SmolLM2 on llama.cpp; whole, streamed, and through Anthropic's Messages API),
completions and embeddings (MiniLM) from two keys made through /v1/keys, and one request
made before the cluster had keys; then GET /v1/usage per key and model equals the sum of the
`usage` the answers reported, the model's family is the catalogue's, CSV holds the same rows,
a non-admin key sees only its own usage, the per-key Prometheus series count the same tokens,
`fleet usage` prints them, and after a restart on the same database the totals are still
there."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.builders import _smollm2_gguf
from tests.conftest import FleetProcess, free_port
from tests.metrics_text import value

CHAT = [{"role": "user", "content": "Name a colour."}]
TOTAL_FIELDS = ("requests", "prompt_tokens", "completion_tokens")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FLEET_API_KEY", "FLEET_AUTH_CONFIG")}
    return {**env, "FLEET_METRICS_PER_KEY": "1"}


def _start(home, port: int) -> FleetProcess:
    return FleetProcess(["local", "-p", str(port), "--usage-retention-days", "30"], home, port,
                        env=_env()).wait_ready()


def _call(server: FleetProcess, method: str, path: str, key: str | None = None,
          **kwargs: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.request(method, f"{server.endpoint}{path}", headers=headers, timeout=300,
                         **kwargs)


class Expected:
    """What the answers reported, summed per (key_id, model)."""

    def __init__(self) -> None:
        self.sums: dict[tuple[str | None, str], Counter] = defaultdict(Counter)

    def add(self, key_id: str | None, model: str, prompt: int, completion: int) -> None:
        self.sums[(key_id, model)].update(requests=1, prompt_tokens=prompt,
                                          completion_tokens=completion)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, minilm_path: str) -> Iterator[dict]:
    home = tmp_path_factory.mktemp("fleet-home")
    port = free_port()
    server = _start(home, port)
    try:
        for body in ({"model_name": "all-MiniLM-L6-v2", "model_type": "embedding",
                      "model_uid": "minilm", "model_path": minilm_path},
                     {"model_name": "smollm2-instruct", "model_type": "LLM",
                      "model_engine": "llama.cpp", "model_format": "gguf",
                      "quantization": "Q4_1", "model_uid": "smol",
                      "model_path": str(_smollm2_gguf()), "n_parallel": 2}):
            launched = _call(server, "POST", "/v1/models", json=body)
            assert launched.status_code == 200, launched.text
        expected = Expected()
        # Before any key: recorded without one.
        embedded = _call(server, "POST", "/v1/embeddings", json={"model": "minilm",
                                                                  "input": "before keys"})
        expected.add(None, "minilm", embedded.json()["usage"]["prompt_tokens"], 0)
        admin = _call(server, "POST", "/v1/keys", json={"name": "ops", "owner": "platform",
                                                        "permissions": ["admin"]}).json()
        app = _call(server, "POST", "/v1/keys", admin["key"], json={
            "name": "app", "owner": "team-b", "permissions": ["models:read"]}).json()
        yield {"server": server, "home": home, "port": port, "admin": admin, "app": app,
               "expected": expected}
    finally:
        server.stop()


def _openai(server: FleetProcess, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.endpoint}/v1", api_key=key, max_retries=0)


def _mixed_load(server: FleetProcess, key: dict, expected: Expected, rounds: int) -> None:
    """Chat whole and streamed, completions, embeddings, Messages whole and streamed."""
    client, key_id = _openai(server, key["key"]), key["id"]
    for i in range(rounds):
        chat = client.chat.completions.create(model="smol", messages=CHAT, max_tokens=8 + i)
        expected.add(key_id, "smol", chat.usage.prompt_tokens, chat.usage.completion_tokens)
        chunks = list(client.chat.completions.create(
            model="smol", messages=CHAT, max_tokens=6, stream=True,
            stream_options={"include_usage": True}))
        usage = chunks[-1].usage
        expected.add(key_id, "smol", usage.prompt_tokens, usage.completion_tokens)
        done = client.completions.create(model="smol", prompt="One, two,", max_tokens=5)
        expected.add(key_id, "smol", done.usage.prompt_tokens, done.usage.completion_tokens)
        vectors = client.embeddings.create(model="minilm", input=["a", f"text {i} here"])
        expected.add(key_id, "minilm", vectors.usage.prompt_tokens, 0)
    claude = anthropic.Anthropic(base_url=server.endpoint, api_key=key["key"], max_retries=0)
    message = claude.messages.create(model="smol", max_tokens=8, messages=CHAT)
    expected.add(key_id, "smol", message.usage.input_tokens, message.usage.output_tokens)
    with claude.messages.stream(model="smol", max_tokens=8, messages=CHAT) as stream:
        final = stream.get_final_message()
    expected.add(key_id, "smol", final.usage.input_tokens, final.usage.output_tokens)


def _by_key_and_model(rows: list[dict]) -> dict[tuple[str | None, str], dict[str, int]]:
    return {(r["key_id"], r["model"]): {f: r[f] for f in TOTAL_FIELDS} for r in rows}


def _usage(server: FleetProcess, key: str, **params: Any) -> httpx.Response:
    return _call(server, "GET", "/v1/usage", key, params=params)


def _wait_for_totals(server: FleetProcess, key: str, expected: Expected) -> list[dict]:
    want = {pair: dict(sums) for pair, sums in expected.sums.items()}
    deadline = time.monotonic() + 15
    while True:
        rows = _usage(server, key, group_by="key,model").json()["data"]
        if _by_key_and_model(rows) == want or time.monotonic() > deadline:
            assert _by_key_and_model(rows) == want
            return rows
        time.sleep(0.2)


def test_usage_per_key_and_model_is_what_the_answers_reported(cluster):
    server, admin, app, expected = (cluster[k] for k in ("server", "admin", "app", "expected"))
    _mixed_load(server, admin, expected, rounds=2)
    _mixed_load(server, app, expected, rounds=1)
    rows = _wait_for_totals(server, admin["key"], expected)
    assert all(r["errors"] == 0 and r["mean_latency_ms"] > 0 for r in rows)
    by_family = _usage(server, admin["key"], group_by=["user", "family"]).json()["data"]
    families = {(r["user"], r["family"]) for r in by_family}
    assert families == {(None, "all-MiniLM-L6-v2"), ("platform", "all-MiniLM-L6-v2"),
                        ("platform", "smollm2-instruct"), ("team-b", "all-MiniLM-L6-v2"),
                        ("team-b", "smollm2-instruct")}
    hourly = _usage(server, admin["key"], bucket="hour").json()["data"]
    assert sum(r["requests"] for r in hourly) == sum(
        s["requests"] for s in expected.sums.values())


def test_csv_holds_the_json_rows(cluster):
    server, admin = cluster["server"], cluster["admin"]
    params = {"group_by": "key,model", "start": "2020-01-01T00:00:00Z"}
    rows = _usage(server, admin["key"], **params).json()["data"]
    answer = _usage(server, admin["key"], **params, format="csv")
    assert answer.headers["content-type"].startswith("text/csv")
    assert "attachment; filename=" in answer.headers["content-disposition"]
    read = list(csv.DictReader(io.StringIO(answer.text)))
    assert [r["key_id"] or None for r in read] == [r["key_id"] for r in rows]
    assert [int(r["total_tokens"]) for r in read] == [r["total_tokens"] for r in rows]


def test_a_key_that_is_not_admin_sees_only_its_own(cluster):
    server, admin, app, expected = (cluster[k] for k in ("server", "admin", "app", "expected"))
    mine = _usage(server, app["key"], group_by="key,model").json()["data"]
    assert {r["key_id"] for r in mine} == {app["id"]}
    assert _by_key_and_model(mine) == {pair: dict(sums) for pair, sums in expected.sums.items()
                                       if pair[0] == app["id"]}
    other = _usage(server, app["key"], key_id=admin["id"])
    assert other.status_code == 403 and other.json()["error"]["code"] == "permission_denied"


def test_per_key_series_count_the_same_tokens(cluster):
    server, admin, app, expected = (cluster[k] for k in ("server", "admin", "app", "expected"))
    text = _call(server, "GET", "/metrics", admin["key"]).text
    samples = [s for family in text_string_to_metric_families(text) for s in family.samples]
    for (key_id, model), sums in expected.sums.items():
        labels = {"key_id": key_id or "", "model": model}
        assert value(samples, "fleet_key_requests_total", **labels) == sums["requests"]
        assert value(samples, "fleet_key_tokens_total", kind="prompt",
                     **labels) == sums["prompt_tokens"]
        assert value(samples, "fleet_key_tokens_total", kind="completion",
                     **labels) == sums["completion_tokens"]


def test_the_cli_prints_the_usage_as_csv_and_json(cluster):
    server, app = cluster["server"], cluster["app"]
    run = [sys.executable, "-m", "fleet", "usage", "-e", server.endpoint, "-ak", app["key"],
           "--since", "1d", "-g", "model"]
    as_csv = subprocess.run([*run, "--csv"], capture_output=True, text=True, timeout=60,
                            check=True).stdout
    assert as_csv.splitlines()[0].startswith("model,requests,errors,prompt_tokens")
    as_json = json.loads(subprocess.run([*run, "--json"], capture_output=True, text=True,
                                        timeout=60, check=True).stdout)
    assert {r["model"] for r in as_json["data"]} == {"smol", "minilm"}
    table = subprocess.run(run, capture_output=True, text=True, timeout=60, check=True).stdout
    assert "smol" in table and "Total tokens" in table


def test_the_totals_survive_a_restart_on_the_same_database(cluster):
    """Last: it stops the module's server, and what it had not yet written is written at stop."""
    server, admin, expected = cluster["server"], cluster["admin"], cluster["expected"]
    vectors = _openai(server, admin["key"]).embeddings.create(model="minilm", input="last")
    expected.add(admin["id"], "minilm", vectors.usage.prompt_tokens, 0)
    assert server.stop() == 0
    again = _start(cluster["home"], cluster["port"])
    try:
        rows = _usage(again, admin["key"], group_by="key,model").json()["data"]
        assert _by_key_and_model(rows) == {p: dict(s) for p, s in expected.sums.items()}
    finally:
        again.stop()
