"""Dangerous launch options are the operator's choice, through real `fleet local` processes:
one bound to this machine's network address (remote code, envs and paths outside the model
roots refused with 403, even for an admin key), one started allowing them, one on loopback that
keeps today's freedom; unknown options are 400s; registrations whose fields would leave the
cache are 400s; the estimate of `/` answers at once while the API keeps serving; a model of the
last run that the new start no longer allows stays listed, failed, with the reason."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import FleetProcess, free_port
from tests.state_db import saved_family

ADMIN_KEY = "sk-launch-policy-admin-key"
MINILM = {"model_name": "all-MiniLM-L6-v2", "model_type": "embedding"}


def _start(address: str, home: Path, *flags: str) -> FleetProcess:
    port = free_port()
    return FleetProcess(["local", "-H", address, "-p", str(port), *flags], home, port,
                        host=address).wait_ready()


def _error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "code"}
    return error["message"]


def _embeds(http: httpx.Client, uid: str) -> None:
    response = http.post("/v1/embeddings", json={"model": uid, "input": "still serving"})
    assert response.status_code == 200, response.text
    assert len(response.json()["data"][0]["embedding"]) == 384


@pytest.fixture(scope="module")
def roots(tmp_path_factory, minilm_path) -> tuple[Path, Path]:
    """(the MiniLM package's folder, a root holding a link that leads outside it)."""
    linked = tmp_path_factory.mktemp("linked-root")
    (linked / "escape").symlink_to("/etc")
    return Path(minilm_path).parent, linked


@pytest.fixture(scope="module")
def exposed(tmp_path_factory, roots, network_address
            ) -> Iterator[tuple[FleetProcess, httpx.Client]]:
    """A cluster on a network address (tests.netns), with an admin key and two model roots."""
    server = _start(network_address, tmp_path_factory.mktemp("exposed-home"),
                    "--api-key", ADMIN_KEY,
                    "--model-root", str(roots[0]), "--model-root", str(roots[1]))
    http = httpx.Client(base_url=server.endpoint, timeout=120,
                        headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    yield server, http
    http.close()
    server.stop()


def test_the_host_check_holds_on_a_network_address_even_for_an_admin_key(exposed,
                                                                        network_address):
    server, http = exposed
    assert http.get("/v1/models").status_code == 200  # Host: the address it listens on
    for name in ("attacker.example", f"attacker.example:{server.port}", "localhost"):
        response = http.get("/v1/models", headers={"Host": name})
        assert response.status_code == 400, name
        assert response.json()["error"]["code"] == "host_not_allowed"


def test_remote_code_and_envs_are_refused_even_for_an_admin_key(exposed, minilm_path):
    _, http = exposed
    body = {**MINILM, "model_path": minilm_path}
    message = _error(http.post("/v1/models", json={**body, "trust_remote_code": True}), 403)
    assert "trust_remote_code is not allowed" in message and "--allow-remote-code" in message
    message = _error(http.post("/v1/models", json={**body, "envs": {"LD_PRELOAD": "x.so"}}), 403)
    assert "envs is not allowed" in message and "--allow-launch-envs" in message
    assert http.get("/v1/models").json()["data"] == []  # nothing half-started


def test_paths_outside_the_roots_are_refused_and_exist_or_not_alike(exposed, roots, tmp_path):
    _, http = exposed
    (tmp_path / "weights").mkdir()
    for path in (str(tmp_path / "weights"), str(tmp_path / "missing"), "/",
                 str(roots[1] / "escape"), f"{roots[0]}/../../../../etc"):
        message = _error(http.post("/v1/models", json={**MINILM, "model_path": path}), 403)
        assert repr(path) in message and "--model-root" in message
        # The dry run is no oracle either: the same refusal, and no walk of the disk.
        started = time.monotonic()
        estimate = http.get("/v1/models/estimate", params={**MINILM, "model_path": path})
        assert _error(estimate, 403) == message
        assert time.monotonic() - started < 1.0
    existing = _error(http.post("/v1/models", json={**MINILM, "model_path": str(tmp_path)}), 403)
    missing = _error(http.post("/v1/models",
                               json={**MINILM, "model_path": str(tmp_path / "nope")}), 403)
    assert existing.replace(repr(str(tmp_path)), "P") == missing.replace(
        repr(str(tmp_path / "nope")), "P")


def test_a_registered_model_uri_outside_the_roots_is_refused_at_launch(exposed):
    _, http = exposed
    family = {"model_name": "uri-outside", "dimensions": 384, "max_tokens": 256,
              "model_specs": [{"model_format": "pytorch", "model_uri": "/etc"}]}
    response = http.post("/v1/model_registrations/embedding",
                         json={"model": family, "persist": False})
    assert response.status_code == 200, response.text
    message = _error(http.post("/v1/models", json={"model_name": "uri-outside",
                                                   "model_type": "embedding"}), 403)
    assert "model_uri of uri-outside" in message and "'/etc'" in message


def test_a_model_under_a_root_launches_and_serves(exposed, minilm_path):
    _, http = exposed
    response = http.post("/v1/models", json={**MINILM, "model_uid": "rooted",
                                             "model_path": minilm_path})
    assert response.status_code == 200, response.text
    _embeds(http, "rooted")
    assert http.delete("/v1/models/rooted").status_code == 200


@pytest.mark.parametrize(("field", "value"), [
    ("model_size_in_billions", "../../../../tmp/x"),
    ("model_format", "../../../tmp"),
    ("quantizations", ["../../x"]),
    ("model_file_name_template", "../../../../tmp/{quantization}.gguf"),
    ("model_file_name_template", "{quantization.__class__.__init__.__globals__}"),
])
def test_registrations_whose_fields_would_leave_the_cache_are_400s(exposed, field, value):
    server, http = exposed
    spec = {"model_format": "gguf", "model_size_in_billions": 1, "quantizations": ["Q4_K_M"],
            "model_id": "example/x", "model_file_name_template": "x-{quantization}.gguf",
            field: value}
    family = {"model_name": "traversal", "model_ability": ["generate"], "model_specs": [spec]}
    message = _error(http.post("/v1/model_registrations/LLM", json={"model": family}), 400)
    assert field.removesuffix("s") in message
    assert saved_family(server.home, "LLM", "traversal") is None
    assert http.get("/v1/model_registrations/LLM/traversal").status_code == 404


def test_a_cluster_started_allowing_them_accepts_them_and_a_restart_without_says_why(
        tmp_path, minilm_path, network_address):
    home = tmp_path / "home"
    server = _start(network_address, home, "--insecure-no-auth", "--allow-remote-code",
                    "--allow-launch-envs",
                    "--allow-any-model-path")
    try:
        http = httpx.Client(base_url=server.endpoint, timeout=120)
        response = http.post("/v1/models", json={
            **MINILM, "model_uid": "allowed", "model_path": minilm_path,
            "trust_remote_code": True, "envs": {"FLEET_TEST_MARK": "1"}})
        assert response.status_code == 200, response.text
        _embeds(http, "allowed")
    finally:
        server.stop()
    # The same home, started without the flags: the model of the last run is not launched,
    # and says why instead of vanishing or stopping the start.
    server = _start(network_address, home, "--insecure-no-auth")
    try:
        http = httpx.Client(base_url=server.endpoint, timeout=30)
        deadline = time.monotonic() + 30
        while not (models := http.get("/v1/models").json()["data"]):
            assert time.monotonic() < deadline, "the refused model was not listed"
            time.sleep(0.2)
        assert [m["id"] for m in models] == ["allowed"]
        assert models[0]["status"] == "failed"
        # The launch body's own choices are checked first (envs), then what the engine does.
        assert "not restored: envs is not allowed" in models[0]["error"]
        message = _error(http.post("/v1/embeddings", json={"model": "allowed", "input": "x"}),
                         503)
        assert "--allow-launch-envs" in message
        assert http.get("/status").status_code == 200
        assert http.delete("/v1/models/allowed").status_code == 200
    finally:
        server.stop()


# ---- loopback: today's defaults, and typed options --------------------------------------------


@pytest.fixture(scope="module")
def http(local_cluster) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=local_cluster.endpoint, timeout=120) as client:
        yield client


def test_loopback_keeps_any_path_remote_code_and_envs(http, minilm_path):
    response = http.post("/v1/models", json={
        **MINILM, "model_uid": "free", "model_path": minilm_path, "trust_remote_code": True,
        "envs": {"FLEET_TEST_MARK": "1"}})
    assert response.status_code == 200, response.text
    _embeds(http, "free")
    assert http.delete("/v1/models/free").status_code == 200


@pytest.mark.parametrize(("body", "expected"), [
    ({"max_tokens": 64}, "unknown launch option 'max_tokens'; engine sentence_transformers "
                         "(embedding models) takes: trust_remote_code"),
    ({"trust_remote_cod": True}, "did you mean 'trust_remote_code'?"),
    ({"trust_remote_code": "perhaps"}, "launch option trust_remote_code:"),
])
def test_unknown_and_invalid_options_are_400s_naming_them(http, minilm_path, body, expected):
    request = {**MINILM, "model_path": minilm_path, **body}
    assert expected in _error(http.post("/v1/models", json=request), 400)
    assert expected in _error(http.get("/v1/models/estimate", params=request), 400)
    assert http.get("/v1/models").json()["data"] == []


def test_an_option_of_another_engine_is_refused_for_this_one(http):
    request = {"model_name": "smollm2-instruct", "model_engine": "llama.cpp", "pooling": "mean"}
    message = _error(http.get("/v1/models/estimate", params=request), 400)
    assert "unknown launch option 'pooling'" in message and "n_parallel" in message


def test_the_estimate_of_the_root_folder_answers_at_once_and_the_api_keeps_serving(http):
    latencies: list[float] = []
    stop = threading.Event()

    def poll_status() -> None:
        with httpx.Client(base_url=str(http.base_url), timeout=10) as other:
            while not stop.is_set():
                started = time.monotonic()
                assert other.get("/status").status_code == 200
                latencies.append(time.monotonic() - started)

    poller = threading.Thread(target=poll_status)
    poller.start()
    try:
        for _ in range(5):
            started = time.monotonic()
            response = http.get("/v1/models/estimate", params={**MINILM, "model_path": "/"})
            assert response.status_code == 200, response.text
            assert time.monotonic() - started < 1.0
    finally:
        stop.set()
        poller.join()
    assert latencies and max(latencies) < 0.5
