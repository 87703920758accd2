"""Models that come and go with demand, on a real `fleet local`: a model with a keep_alive is
unloaded when idle (its process gone, its memory freed, the model still listed) and loaded again
by its next request, however many arrive together; a model launched idle streams its first
answer; a load that fails says why and leaves the model idle, to load once its weights are back;
a restart keeps idle models idle."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import pytest

from fleet.client import Client, FleetClientError
from tests.builders import _smollm2_gguf
from tests.concurrency import wait_for
from tests.conftest import FleetProcess, start_local
from tests.state_db import saved_models


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fleet-home")


@pytest.fixture(scope="module")
def cluster(home: Path) -> FleetProcess:
    server = start_local(home)
    yield server
    server.stop()


def _embed(endpoint: str, uid: str, text: str = "hello", **fields: object) -> httpx.Response:
    return httpx.post(f"{endpoint}/v1/embeddings", json={"model": uid, "input": text, **fields},
                      timeout=120)


def _idle_within(client: Client, uid: str, seconds: float) -> float:
    """How long the model took to be listed idle; TimeoutError past `seconds`."""
    started = time.monotonic()
    wait_for(lambda: _status(client, uid)["status"] == "idle", seconds, step=0.05)
    return time.monotonic() - started


def _keep_alive_events(client: Client, uid: str) -> list[str]:
    return [e["reason"] for e in client.model_events(uid) if e["kind"] == "keep_alive"]


def _status(client: Client, uid: str) -> dict:
    return client.list_models()[uid]


def _saved(home: Path, uid: str) -> dict:
    return saved_models(home)[uid]


def test_an_idle_model_is_unloaded_stays_listed_and_loads_for_its_next_requests(
        cluster, home, minilm_path):
    client = Client(cluster.endpoint)
    uid = client.launch_model("all-MiniLM-L6-v2", model_type="embedding", model_uid="napper",
                              model_path=minilm_path, keep_alive="3s")
    try:
        first = _embed(cluster.endpoint, uid)
        assert first.status_code == 200, first.text
        pid = client.replicas(uid)[0]["pid"]
        rss = psutil.Process(pid).memory_info().rss
        answered_at = time.monotonic()
        wait_for(lambda: not psutil.pid_exists(pid), 15)
        gone_after = time.monotonic() - answered_at
        assert 3.0 <= gone_after <= 6.0, gone_after  # its keep_alive, then its process ends
        # Its replica leaves the listing once its process has been seen to end.
        wait_for(lambda: _status(client, uid)["replica"] == 0, 5)
        assert _status(client, uid)["status"] == "idle"
        assert uid in {m["id"] for m in httpx.get(f"{cluster.endpoint}/v1/models").json()["data"]}
        assert _saved(home, uid)["idle"] is True and _saved(home, uid)["keep_alive"] == "3s"
        assert rss > 50 * 2**20  # what its unload gave back: the weights and the engine

        # Eight requests at once to the idle model: one load, and every one answered.
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda i: _embed(cluster.endpoint, uid, f"text {i}"),
                                    range(8)))
        assert [a.status_code for a in answers] == [200] * 8, answers[0].text
        assert all(len(a.json()["data"][0]["embedding"]) == 384 for a in answers)
        replicas = client.replicas(uid)
        assert len(replicas) == 1 and replicas[0]["pid"] != pid
        assert _status(client, uid)["status"] == "ready" and "idle" not in _saved(home, uid)
    finally:
        client.terminate_model(uid)


def test_a_model_launched_idle_streams_its_first_answer_and_takes_its_keep_alive(cluster):
    client = Client(cluster.endpoint)
    uid = client.launch_model("smollm2-instruct", model_type="LLM", model_engine="llama.cpp",
                              model_format="gguf", quantization="Q4_1", model_uid="sleepy-smol",
                              model_path=str(_smollm2_gguf()), idle=True)
    try:
        assert _status(client, uid)["status"] == "idle" and client.replicas(uid) == []
        # Its keep_alive set by the stream's request: 0, unloaded once it has streamed.
        body = {"model": uid, "stream": True, "max_tokens": 8, "temperature": 0,
                "messages": [{"role": "user", "content": "Say hello."}], "keep_alive": 0}
        with httpx.stream("POST", f"{cluster.endpoint}/v1/chat/completions", json=body,
                          timeout=120) as response:
            assert response.status_code == 200
            events = [line.removeprefix("data: ") for line in response.iter_lines() if line]
        assert events[-1] == "[DONE]"
        pieces = [json.loads(e)["choices"][0]["delta"].get("content") or "" for e in events[:-1]]
        assert "".join(pieces).strip()  # it said something, streamed
        assert _idle_within(client, uid, 5.0) <= 5.0
        completion = httpx.post(f"{cluster.endpoint}/v1/completions", json={
            "model": uid, "prompt": "Hello", "max_tokens": 4, "keep_alive": "1h"}, timeout=120)
        assert completion.status_code == 200, completion.text
        assert _status(client, uid)["status"] == "ready"
        assert client.describe_model(uid)["launch_options"]["keep_alive"] == "1h"
    finally:
        client.terminate_model(uid)


def test_a_requests_keep_alive_becomes_its_models_from_then_on(cluster, home, minilm_path):
    client = Client(cluster.endpoint)
    uid = client.launch_model("all-MiniLM-L6-v2", model_type="embedding", model_uid="told",
                              model_path=minilm_path)  # no keep_alive: it would stay loaded
    try:
        pid = client.replicas(uid)[0]["pid"]
        assert _embed(cluster.endpoint, uid, keep_alive="2s").status_code == 200
        assert 1.5 <= _idle_within(client, uid, 5.0) <= 5.0  # 2 s after that request
        wait_for(lambda: not psutil.pid_exists(pid), 15)
        assert _saved(home, uid)["keep_alive"] == "2s"  # what a restart launches it with
        assert _keep_alive_events(client, uid) == ["a request set keep_alive 2s"]

        # It loads on its next request; the same keep_alive again changes nothing.
        for _ in range(3):
            assert _embed(cluster.endpoint, uid, keep_alive="2s").status_code == 200
        assert _status(client, uid)["status"] == "ready"
        assert len(_keep_alive_events(client, uid)) == 1

        # 0: unloaded as soon as it has answered, as Ollama does.
        assert _embed(cluster.endpoint, uid, keep_alive=0).status_code == 200
        assert _idle_within(client, uid, 2.5) <= 2.5
        # -1: never, from now on.
        assert _embed(cluster.endpoint, uid, keep_alive="-1").status_code == 200
        time.sleep(3.0)
        assert _status(client, uid)["status"] == "ready"
        assert _saved(home, uid)["keep_alive"] == "-1"
        assert client.describe_model(uid)["launch_options"]["keep_alive"] == "-1"
    finally:
        client.terminate_model(uid)


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/embeddings", {"input": "hi", "keep_alive": "soon"}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}],
                              "keep_alive": "1d"}),
    ("/v1/completions", {"prompt": "hi", "keep_alive": True}),
    ("/v1/rerank", {"query": "q", "documents": ["d"], "keep_alive": [5]}),
])
def test_a_requests_keep_alive_that_is_no_duration_is_a_400_naming_it(cluster, path, body):
    response = httpx.post(f"{cluster.endpoint}{path}", json={"model": "anything", **body},
                          timeout=60)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and "keep_alive" in error["message"]


def test_keep_alive_that_is_not_a_duration_is_refused(cluster, minilm_path):
    response = httpx.post(f"{cluster.endpoint}/v1/models", json={
        "model_name": "all-MiniLM-L6-v2", "model_type": "embedding", "model_path": minilm_path,
        "keep_alive": "soon"}, timeout=60)
    assert response.status_code == 400
    assert "keep_alive 'soon' is not a duration" in response.json()["error"]["message"]


def test_a_worker_at_its_cap_unloads_the_least_recently_used_model_with_a_keep_alive(
        tmp_path, minilm_path):
    server = start_local(tmp_path / "home", env={"FLEET_MAX_LOADED_MODELS": "2"})
    try:
        client = Client(server.endpoint)

        def launch(uid: str, **options: str) -> str:
            return client.launch_model("all-MiniLM-L6-v2", model_type="embedding", model_uid=uid,
                                       model_path=minilm_path, **options)

        def statuses() -> dict[str, str]:
            return {uid: m["status"] for uid, m in client.list_models().items()}

        launch("pinned")  # no keep_alive: never unloaded
        pinned_pid = client.replicas("pinned")[0]["pid"]
        launch("a", keep_alive="1h")
        assert _embed(server.endpoint, "a").status_code == 200
        # The estimate says what the launch would unload, and the CLI's dry run too.
        worker = client.list_models()["a"]["address"]
        plan = client.estimate_launch("all-MiniLM-L6-v2", model_type="embedding", model_uid="b",
                                      model_path=minilm_path, keep_alive="1h")
        assert plan["fits"] and plan["would_unload"] == {worker: ["a"]}, plan
        dry_run = subprocess.run(
            [sys.executable, "-m", "fleet", "launch", "-n", "all-MiniLM-L6-v2", "-t",
             "embedding", "-u", "b", "--model-path", minilm_path, "--keep-alive", "1h",
             "--dry-run", "-e", server.endpoint], capture_output=True, text=True, timeout=60,
            env={**os.environ, "COLUMNS": "200"})
        assert dry_run.returncode == 0, dry_run.stderr
        assert f"Would unload a on {worker} to make room" in dry_run.stdout
        assert statuses() == {"pinned": "ready", "a": "ready"}  # nothing was unloaded
        launch("b", keep_alive="1h")  # past the cap: a goes, the only one that may
        assert statuses() == {"pinned": "ready", "a": "idle", "b": "ready"}
        assert _embed(server.endpoint, "a").status_code == 200  # loads a, in b's place
        assert statuses() == {"pinned": "ready", "a": "ready", "b": "idle"}
        launch("pinned-too")  # a launch without keep_alive takes a's place too
        assert statuses() == {"pinned": "ready", "a": "idle", "b": "idle", "pinned-too": "ready"}
        # Now nothing loaded may go: a launch is refused with the numbers, and a load too.
        plan = client.estimate_launch("all-MiniLM-L6-v2", model_type="embedding", model_uid="c",
                                      model_path=minilm_path, keep_alive="1h")
        assert not plan["fits"] and plan["would_unload"] == {}
        assert "--max-loaded-models 2" in plan["reason"]
        with pytest.raises(FleetClientError, match="--max-loaded-models 2"):
            launch("c", keep_alive="1h")
        refused = _embed(server.endpoint, "b")
        assert refused.status_code == 503 and "--max-loaded-models 2" in refused.text
        assert client.replicas("pinned")[0]["pid"] == pinned_pid  # never unloaded
    finally:
        server.stop()


def test_a_load_that_fails_says_why_leaves_it_idle_and_a_restart_keeps_it_so(
        cluster, home, minilm_path, tmp_path):
    client = Client(cluster.endpoint)
    weights = tmp_path / "minilm"
    shutil.copytree(minilm_path, weights)
    uid = client.launch_model("all-MiniLM-L6-v2", model_type="embedding", model_uid="lost-weights",
                              model_path=str(weights), idle=True)
    hidden = tmp_path / "minilm-hidden"
    weights.rename(hidden)
    refused = _embed(cluster.endpoint, uid)
    assert refused.status_code == 503, refused.text
    error = refused.json()["error"]
    assert error["code"] == "model_load_failed" and str(weights) in error["message"]
    listed = _status(client, uid)
    assert listed["status"] == "idle" and str(weights) in (listed["error"] or "")
    hidden.rename(weights)

    # A restart keeps it idle (no process), and a request loads it. (This module's cluster
    # stops here: this test comes last.)
    cluster.stop()
    restarted = start_local(home)
    try:
        client = Client(restarted.endpoint)
        wait_for(lambda: client.list_models().get(uid, {}).get("status") == "idle", 30)
        assert client.replicas(uid) == []
        answer = _embed(restarted.endpoint, uid)
        assert answer.status_code == 200, answer.text
        assert _status(client, uid)["status"] == "ready"
        client.terminate_model(uid)
    finally:
        restarted.stop()
