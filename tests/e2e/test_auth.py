"""API keys on a real `fleet local` (admin key from FLEET_API_KEY, users from --auth-config):
every route of its own /openapi.json answers 401 without a key, 403 with a key that lacks the
route's permission and neither with the right one; the per-key model list holds with two
MiniLM models running; the openai SDK, xinference-client, Fleet's client and CLI work with a
key; keys never reach the logs. And a supervisor on a network address refuses to start
without keys unless told --insecure-no-auth."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from fleet.api.anthropic.errors import PATHS as ANTHROPIC_PATHS
from fleet.api.auth.permissions import ANY_KEY, OPEN, ROUTE_PERMISSIONS
from fleet.client import Client, FleetClientError
from fleet.cluster_secret import timed_proof
from tests.conftest import FleetProcess, free_port

ADMIN_KEY = "sk-e2e-admin-key-0123"
LIMITED_KEY = "sk-e2e-limited-to-minilm-a"
PERMISSION_KEYS = {p: f"sk-e2e-only-{p.replace(':', '-')}"
                   for p in set(ROUTE_PERMISSIONS.values()) - {OPEN, ANY_KEY}}
NO_PERMISSION_KEY = "sk-e2e-no-permission"


def _env_without_keys() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("FLEET_API_KEY", "FLEET_AUTH_CONFIG")}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FleetProcess]:
    home = tmp_path_factory.mktemp("fleet-home")
    users = [{"username": f"only-{p}", "permissions": [p], "api_keys": [key]}
             for p, key in PERMISSION_KEYS.items()]
    users += [{"username": "nobody", "permissions": [], "api_keys": [NO_PERMISSION_KEY]},
              {"username": "app", "permissions": ["models:list", "models:read"],
               "api_keys": [{"key": LIMITED_KEY, "models": ["minilm-a"]}]}]
    auth_file = home.parent / "auth.json"
    auth_file.write_text(json.dumps({"user_config": users}))
    port = free_port()
    server = FleetProcess(["local", "-p", str(port), "--auth-config", str(auth_file)], home,
                          port, env={"FLEET_API_KEY": ADMIN_KEY}).wait_ready()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def admin(cluster: FleetProcess) -> Client:
    return Client(cluster.endpoint, api_key=ADMIN_KEY)


@pytest.fixture(scope="module")
def models(admin: Client, minilm_path: str) -> tuple[str, str]:
    return tuple(admin.launch_model("all-MiniLM-L6-v2", model_type="embedding",  # type: ignore
                                    model_path=minilm_path, model_uid=uid)
                 for uid in ("minilm-a", "minilm-b"))


def _request(cluster: FleetProcess, method: str, path: str, key: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    body = {} if method in ("POST", "PUT", "PATCH") else None
    return httpx.request(method, f"{cluster.endpoint}{path}", headers=headers, json=body,
                         timeout=60)


def _filled(path: str) -> str:
    """Dummy values for path parameters: only the status class matters."""
    return re.sub(r"\{(\w+)\}", lambda m: {"model_type": "embedding"}.get(m[1], "no-such-model"),
                  path)


def test_every_route_of_the_openapi_document_is_closed_to_strangers(cluster):
    document = _request(cluster, "GET", "/openapi.json", NO_PERMISSION_KEY).json()
    operations = [(method.upper(), path) for path, item in document["paths"].items()
                  for method in item if method in ("get", "post", "put", "patch", "delete")]
    assert {("POST", "/v1/embeddings"), ("POST", "/v1/chat/completions")} <= set(operations)
    for method, path in operations:
        needed = ROUTE_PERMISSIONS[(method, path)]
        url = _filled(path)
        anonymous = _request(cluster, method, url, None)
        if needed == OPEN:
            assert anonymous.status_code < 400, (method, path)
            continue
        assert anonymous.status_code == 401, (method, path, anonymous.text)
        assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")
        error = anonymous.json()["error"]
        if path in ANTHROPIC_PATHS:  # Anthropic's shape has no code (fleet.api.anthropic.errors)
            assert error["type"] == "authentication_error"
        else:
            assert error["code"] == "invalid_api_key"
        assert _request(cluster, method, url, "sk-e2e-not-a-key").status_code == 401
        right = ADMIN_KEY if needed == "admin" else PERMISSION_KEYS.get(needed, NO_PERMISSION_KEY)
        assert _request(cluster, method, url, right).status_code not in (401, 403), (method, path)
        if needed == ANY_KEY:
            continue
        for permission, key in [*PERMISSION_KEYS.items(), ("", NO_PERMISSION_KEY)]:
            if permission not in (needed, "admin"):
                refused = _request(cluster, method, url, key)
                assert refused.status_code == 403, (method, path, permission)
                assert refused.json()["error"]["type"] == "permission_error"


def test_the_pages_outside_the_document(cluster):
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert _request(cluster, "GET", path, None).status_code == 401
        assert _request(cluster, "GET", path, NO_PERMISSION_KEY).status_code == 200
    assert _request(cluster, "GET", "/status", None).status_code == 200
    assert _request(cluster, "GET", "/v1/cluster/auth", None).json() == {"auth": True}
    assert _request(cluster, "GET", "/metrics", None).status_code == 401
    assert _request(cluster, "GET", "/metrics", PERMISSION_KEYS["models:list"]).status_code == 403
    scraped = _request(cluster, "GET", "/metrics", PERMISSION_KEYS["metrics:read"])
    assert scraped.status_code == 200 and "fleet_" in scraped.text


def test_the_actor_address_takes_an_admin_key_or_a_workers_proof(cluster):
    by_admin = _request(cluster, "GET", "/v1/address", ADMIN_KEY)
    assert by_admin.status_code == 200 and re.match(r"^127\.0\.0\.1:\d+$", by_admin.json())
    assert _request(cluster, "GET", "/v1/address", None).status_code == 401
    assert _request(cluster, "GET", "/v1/address", PERMISSION_KEYS["models:list"]).status_code == 403
    secret = (cluster.home / "cluster-secret").read_text().strip()
    url = f"{cluster.endpoint}/v1/address"
    proven = httpx.get(url, headers={"X-Fleet-Worker-Proof": timed_proof(secret, "address")})
    assert proven.status_code == 200 and proven.json() == by_admin.json()
    forged = timed_proof("not-the-cluster-secret-at-all", "address")
    assert httpx.get(url, headers={"X-Fleet-Worker-Proof": forged}).status_code == 401


def test_a_key_limited_to_one_model_uses_it_and_no_other(cluster, models):
    from openai import OpenAI, PermissionDeniedError

    limited = OpenAI(base_url=f"{cluster.endpoint}/v1", api_key=LIMITED_KEY, max_retries=0)
    answer = limited.embeddings.create(model="minilm-a", input=["hello there"])
    assert len(answer.data[0].embedding) == 384
    with pytest.raises(PermissionDeniedError) as refused:
        limited.embeddings.create(model="minilm-b", input=["hello there"])
    assert "minilm-b" in str(refused.value)
    assert [m.id for m in limited.models.list().data] == ["minilm-a"]
    client = Client(cluster.endpoint, api_key=LIMITED_KEY)
    assert client.describe_model("minilm-a")["model_uid"] == "minilm-a"
    with pytest.raises(FleetClientError) as described:
        client.describe_model("minilm-b")
    assert described.value.status_code == 403 and described.value.code == "model_not_allowed"
    admin = OpenAI(base_url=f"{cluster.endpoint}/v1", api_key=ADMIN_KEY, max_retries=0)
    assert len(admin.embeddings.create(model="minilm-b", input=["x"]).data[0].embedding) == 384


def test_a_requests_keep_alive_needs_the_permission_to_stop_models(cluster, models, admin):
    def embed(key: str, keep_alive: str) -> httpx.Response:
        return httpx.post(f"{cluster.endpoint}/v1/embeddings", timeout=60,
                          headers={"Authorization": f"Bearer {key}"},
                          json={"model": "minilm-a", "input": "hi", "keep_alive": keep_alive})

    refused = embed(LIMITED_KEY, "0")  # it would unload the model for every user of it
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"]["code"] == "permission_denied"
    assert "models:stop" in refused.json()["error"]["message"]
    assert "keep_alive" not in admin.describe_model("minilm-a")["launch_options"]
    answered = embed(ADMIN_KEY, "-1")
    assert answered.status_code == 200, answered.text
    assert admin.describe_model("minilm-a")["launch_options"]["keep_alive"] == "-1"


def test_the_openai_sdk_with_a_wrong_key_gets_an_authentication_error(cluster, models):
    from openai import AuthenticationError, OpenAI

    stranger = OpenAI(base_url=f"{cluster.endpoint}/v1", api_key="sk-e2e-wrong", max_retries=0)
    with pytest.raises(AuthenticationError) as refused:
        stranger.embeddings.create(model="minilm-a", input=["x"])
    assert refused.value.status_code == 401


def test_xinference_client_sends_its_key_after_asking_cluster_auth(cluster, models):
    from xinference_client import RESTfulClient

    xinference = RESTfulClient(cluster.endpoint, api_key=LIMITED_KEY)
    assert set(xinference.list_models()) == {"minilm-a"}
    vector = xinference.get_model("minilm-a").create_embedding("hello")["data"][0]["embedding"]
    assert len(vector) == 384
    assert set(RESTfulClient(cluster.endpoint, api_key=ADMIN_KEY).list_models()) == {
        "minilm-a", "minilm-b"}
    with pytest.raises(RuntimeError, match="API key"):
        RESTfulClient(cluster.endpoint).list_models()


def test_fleets_client_takes_the_key_as_an_argument_or_from_the_environment(cluster, models,
                                                                          monkeypatch):
    with pytest.raises(FleetClientError) as refused:
        Client(cluster.endpoint).list_models()
    assert refused.value.status_code == 401
    monkeypatch.setenv("FLEET_API_KEY", LIMITED_KEY)
    assert set(Client(cluster.endpoint).list_models()) == {"minilm-a"}
    with pytest.raises(FleetClientError) as launch:
        Client(cluster.endpoint).launch_model("all-MiniLM-L6-v2", model_type="embedding")
    assert launch.value.status_code == 403 and "models:start" in launch.value.message


def _cli(cluster: FleetProcess, *args: str, env: dict[str, str] | None = None):
    return subprocess.run([sys.executable, "-m", "fleet", *args, "-e", cluster.endpoint],
                          capture_output=True, text=True, timeout=60,
                          env={**_env_without_keys(), **(env or {})})


def test_the_cli_takes_the_key_with_ak_or_from_the_environment(cluster, models):
    listed = _cli(cluster, "list", "-ak", ADMIN_KEY, "--json")
    assert listed.returncode == 0, listed.stderr
    assert {m["id"] for m in json.loads(listed.stdout)} >= {"minilm-a", "minilm-b"}
    from_env = _cli(cluster, "list", env={"FLEET_API_KEY": LIMITED_KEY})
    assert from_env.returncode == 0 and "minilm-a" in from_env.stdout
    assert "minilm-b" not in from_env.stdout
    refused = _cli(cluster, "list")
    assert refused.returncode == 1 and "API key" in refused.stderr
    wrong = _cli(cluster, "terminate", "-u", "minilm-a", "--api-key", LIMITED_KEY)
    assert wrong.returncode == 1 and "models:stop" in wrong.stderr


def test_no_key_reaches_the_logs(cluster, models):
    logs = [cluster.log_path, *(cluster.home / "logs").glob("*")]
    text = "".join(path.read_text(errors="replace") for path in logs if path.is_file())
    assert "Fleet API listening" in text  # the logs were there to read
    for key in (ADMIN_KEY, LIMITED_KEY, *PERMISSION_KEYS.values()):
        assert key not in text


def test_a_supervisor_on_a_network_address_without_keys_refuses_to_start(tmp_path):
    port = free_port()
    started = subprocess.run(
        [sys.executable, "-m", "fleet", "supervisor", "-H", "0.0.0.0", "-p", str(port)],
        capture_output=True, text=True, timeout=60,
        env={**_env_without_keys(), "FLEET_HOME": str(tmp_path / "home")})
    assert started.returncode != 0
    assert "without API keys" in started.stderr
    assert "--api-key" in started.stderr and "--insecure-no-auth" in started.stderr


def test_insecure_no_auth_starts_it_with_a_warning(tmp_path, network_address):
    address = network_address
    port = free_port()
    supervisor = FleetProcess(["supervisor", "-H", address, "-p", str(port), "--insecure-no-auth"],
                              tmp_path / "home", port, host=address,
                              env={"FLEET_API_KEY": ""})
    try:
        supervisor.wait_ready()
        assert httpx.get(f"{supervisor.endpoint}/v1/cluster/auth").json() == {"auth": False}
        assert "WITHOUT API KEYS" in supervisor.output()
    finally:
        assert supervisor.stop() == 0
