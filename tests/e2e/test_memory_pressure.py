"""Memory pressure on a real `fleet local` whose worker may give its models about two MiniLMs'
memory (--max-model-memory): three models with a keep_alive, served in turn, each load unloading
the least recently used of the others; the will-it-fit estimate naming the one a launch would
unload; models without a keep_alive never unloaded, and a launch past them refused with the
numbers."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from fleet.byte_sizes import parse_byte_size
from fleet.client import Client, FleetClientError
from tests.conftest import FleetProcess, free_port

LIMIT = "2GiB"
KEPT = ("a", "b", "c")  # launched with a keep_alive
SEEN_S = 1.2  # the supervisor looks at each model's requests twice a second


def _statuses(client: Client) -> dict[str, str]:
    return {uid: m["status"] for uid, m in client.list_models().items()}


def _embed(endpoint: str, uid: str) -> httpx.Response:
    answer = httpx.post(f"{endpoint}/v1/embeddings", json={"model": uid, "input": "hello"},
                        timeout=120)
    time.sleep(SEEN_S)  # so that the supervisor has seen which model was used last
    return answer


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory) -> FleetProcess:
    port = free_port()
    server = FleetProcess(["local", "-p", str(port), "--max-model-memory", LIMIT],
                          tmp_path_factory.mktemp("fleet-home"), port).wait_ready()
    yield server
    server.stop()


def test_the_worker_reports_its_cap_and_it_holds_two_minilms_not_three(capped, minilm_path):
    client = Client(capped.endpoint)
    worker = httpx.get(f"{capped.endpoint}/v1/workers", timeout=30).json()[0]
    assert worker["resources"]["model_memory_limit"] == parse_byte_size(LIMIT)
    plan = client.estimate_launch("all-MiniLM-L6-v2", model_type="embedding",
                                  model_path=minilm_path)
    need = plan["estimate"]["total"]
    assert 2 * need <= parse_byte_size(LIMIT) < 3 * need, plan["estimate"]["summary"]
    assert plan["workers"][0]["free"] == parse_byte_size(LIMIT)  # far less than the free RAM
    assert "--max-model-memory" in plan["workers"][0]["where"]


def test_three_models_served_in_turn_unload_the_least_recently_used_each_time(
        capped, minilm_path):
    client = Client(capped.endpoint)
    endpoint = capped.endpoint

    def launch(uid: str, **options: str) -> str:
        return client.launch_model("all-MiniLM-L6-v2", model_type="embedding", model_uid=uid,
                                   model_path=minilm_path, **options)

    launch("a", keep_alive="1h")
    launch("b", keep_alive="1h")
    assert _embed(endpoint, "a").status_code == 200
    assert _embed(endpoint, "b").status_code == 200  # a is now the least recently used
    worker = client.list_models()["a"]["address"]
    plan = client.estimate_launch("all-MiniLM-L6-v2", model_type="embedding", model_uid="c",
                                  model_path=minilm_path, keep_alive="1h")
    assert plan["fits"] and plan["would_unload"] == {worker: ["a"]}, plan
    assert _statuses(client) == {"a": "ready", "b": "ready"}  # the estimate unloads nothing

    launch("c", keep_alive="1h")
    assert _statuses(client) == {"a": "idle", "b": "ready", "c": "ready"}
    time.sleep(SEEN_S)
    # Each request to the idle one loads it in the place of the least recently used.
    for uid, unloaded in (("a", "b"), ("b", "c"), ("c", "a"), ("a", "b")):
        answer = _embed(endpoint, uid)
        assert answer.status_code == 200, answer.text
        loaded = {u for u in KEPT if u != unloaded}
        assert _statuses(client) == {u: "ready" if u in loaded else "idle" for u in KEPT}, \
            f"{uid} loaded, {unloaded} should have gone"
        assert [e["reason"] for e in client.model_events(unloaded)][-1] == f"room for {uid}"
    for uid in KEPT:
        client.terminate_model(uid)


def test_a_model_without_keep_alive_is_never_unloaded(capped, minilm_path):
    client = Client(capped.endpoint)

    def launch(uid: str, **options: str) -> str:
        return client.launch_model("all-MiniLM-L6-v2", model_type="embedding", model_uid=uid,
                                   model_path=minilm_path, **options)

    launch("pinned")
    launch("napping", keep_alive="1h")
    pinned_pid = client.replicas("pinned")[0]["pid"]
    launch("pinned-too")  # napping makes room; pinned may not
    assert _statuses(client) == {"pinned": "ready", "napping": "idle", "pinned-too": "ready"}

    # Nothing loaded may go now: a launch is refused with the numbers, and so is a load.
    plan = client.estimate_launch("all-MiniLM-L6-v2", model_type="embedding",
                                  model_uid="one-more", model_path=minilm_path, keep_alive="1h")
    assert not plan["fits"] and plan["would_unload"] == {}
    with pytest.raises(FleetClientError) as refused:
        launch("one-more", keep_alive="1h")
    message = str(refused.value)
    assert refused.value.status_code == 400 and refused.value.code == "max_model_memory"
    assert plan["estimate"]["summary"] in message, message  # what it needs...
    assert "of the 2.0 GiB its models may take (--max-model-memory)" in message  # ...and has
    load = httpx.post(f"{capped.endpoint}/v1/embeddings",
                      json={"model": "napping", "input": "hello"}, timeout=120)
    assert load.status_code == 503 and "--max-model-memory" in load.text, load.text
    assert _statuses(client) == {"pinned": "ready", "napping": "idle", "pinned-too": "ready"}
    assert client.replicas("pinned")[0]["pid"] == pinned_pid
    for uid in ("pinned", "napping", "pinned-too"):
        client.terminate_model(uid)


def test_a_size_that_is_no_amount_of_memory_stops_the_start(tmp_path: Path):
    server = FleetProcess(["local", "-p", str(free_port()), "--max-model-memory", "2G"],
                          tmp_path / "home")
    assert server.process.wait(timeout=60) == 2  # a usage error, before anything starts
    assert "'2G' is not an amount of memory" in server.output()
    server.stop()
