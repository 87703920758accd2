"""API keys, in-process: the key store and its file, the permission of every route of the real
application, the middleware's 401 and 403 answers (driven as ASGI, the way uvicorn does), the
worker's proof for /v1/address, the per-key model limit (also in the lean front), keys kept
hashed from the command line on, and the refusal to serve a network without keys."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import pickle
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from click.testing import CliRunner

from fleet.api.app import create_app
from fleet.api.auth.keys import KeyStore, hash_key, read_auth_config
from fleet.api.auth.middleware import AuthMiddleware, check_exposure, with_auth
from fleet.api.auth.permissions import ANY_KEY, OPEN, ROUTE_PERMISSIONS, RouteRules, app_routes
from fleet.api.fast_routes import FastJsonRoutes, FastRoute
from fleet.api.protocol.bodies import EmbeddingRequest
from fleet.cluster_secret import timed_proof
from fleet.errors import BadRequest
from fleet.server_config import ServerConfig

ADMIN_KEY = "sk-admin-0123456789"
SECRET = "a-cluster-secret-of-enough-length"


def _fastapi_app(asgi: Any) -> Any:
    """The FastAPI application inside create_app's middleware."""
    while not hasattr(asgi, "routes"):
        asgi = asgi._app
    return asgi


@pytest.fixture(scope="module")
def routes() -> list[tuple[str, frozenset[str]]]:
    return app_routes(_fastapi_app(create_app(None, "127.0.0.1:1", ServerConfig())))


def _permission_keys() -> dict[str, str]:
    """One key per permission that a route needs, plus one with no permission at all."""
    needed = {p for p in ROUTE_PERMISSIONS.values() if p not in (OPEN, ANY_KEY)}
    return {p: f"sk-only-{p.replace(':', '-')}-key" for p in needed} | {"": "sk-no-permission"}


def _auth_file(tmp_path: Path, users: list[dict[str, Any]]) -> Path:
    path = tmp_path / "auth.json"
    path.write_text(json.dumps({"user_config": users}))
    return path


@pytest.fixture
def store(tmp_path: Path) -> KeyStore:
    users = [{"username": f"holder of {p or 'nothing'}", "permissions": [p] if p else [],
              "api_keys": [key]} for p, key in _permission_keys().items()]
    users.append({"username": "limited", "permissions": ["models:read", "models:list"],
                  "api_keys": [{"key": "sk-limited-to-a", "models": ["model-a"]}]})
    return KeyStore.build([hash_key(ADMIN_KEY)], _auth_file(tmp_path, users))


async def _behind(scope: dict, receive: Any, send: Any) -> None:
    """Stands for the application: answers 299 to whatever the middleware let through."""
    await send({"type": "http.response.start", "status": 299, "headers": []})
    await send({"type": "http.response.body", "body": b"through"})


def _call(app: Any, method: str, path: str, key: str | None = None,
          headers: dict[str, str] | None = None, body: bytes = b"") -> httpx.Response:
    all_headers = {**({"Authorization": f"Bearer {key}"} if key else {}), **(headers or {})}

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            return await client.request(method, path, headers=all_headers, content=body)

    return asyncio.run(go())


def _filled(path: str) -> str:
    return (path.replace("{model_uid}", "some-model").replace("{model_type}", "embedding")
            .replace("{model_name}", "some-name"))


def test_every_route_of_the_application_has_an_entry_in_the_table(routes):
    served = {(method, path) for path, methods in routes for method in methods if method != "HEAD"}
    assert served - ROUTE_PERMISSIONS.keys() == set()  # a new route must say what it needs
    assert ROUTE_PERMISSIONS.keys() - served == set()  # and the table names no route gone


def test_the_sweep_401_without_a_key_403_without_the_permission_through_with_it(routes, store):
    app = AuthMiddleware(_behind, store, RouteRules(routes))
    keys = _permission_keys()
    for path, methods in routes:
        for method in methods - {"HEAD"}:
            needed = ROUTE_PERMISSIONS[(method, path)]
            url = _filled(path)
            if needed == OPEN:
                assert _call(app, method, url).status_code == 299
                continue
            refused = _call(app, method, url)
            assert refused.status_code == 401, (method, path)
            assert refused.headers["www-authenticate"].startswith("Bearer")
            assert refused.json()["error"]["code"] == "invalid_api_key"
            assert _call(app, method, url, "sk-wrong-key-0000").status_code == 401
            if needed == ANY_KEY:
                assert _call(app, method, url, keys[""]).status_code == 299, (method, path)
                continue
            for permission, key in keys.items():
                status = _call(app, method, url, key).status_code
                expected = 299 if permission in (needed, "admin") else 403
                assert status == expected, (method, path, permission)
            assert _call(app, method, url, ADMIN_KEY).status_code == 299


def test_a_403_says_which_permission_is_missing_in_the_openai_shape(routes, store):
    app = AuthMiddleware(_behind, store, RouteRules(routes))
    response = _call(app, "DELETE", "/v1/models/x", "sk-only-models-list-key")
    assert response.status_code == 403
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "permission_error" and "models:stop" in error["message"]


def test_unknown_paths_and_methods_need_a_key_too(routes, store):
    app = AuthMiddleware(_behind, store, RouteRules(routes))
    for method, path in (("GET", "/no/such/route"), ("PUT", "/v1/models"), ("GET", "/v1/models/")):
        assert _call(app, method, path).status_code == 401
        assert _call(app, method, path, "sk-no-permission").status_code == 299


def test_a_bearer_authorization_or_an_x_api_key_carries_the_key(routes, store):
    """OpenAI's clients send `Authorization: Bearer`, Anthropic's `x-api-key`; where a request
    has an Authorization header, it alone counts."""
    app = AuthMiddleware(_behind, store, RouteRules(routes))
    assert _call(app, "GET", "/v1/workers", headers={"Authorization": f"bearer {ADMIN_KEY}"}
                 ).status_code == 299
    assert _call(app, "GET", "/v1/workers", headers={"Authorization": f"Basic {ADMIN_KEY}"}
                 ).status_code == 401
    assert _call(app, "GET", "/v1/workers", headers={"X-Api-Key": ADMIN_KEY}).status_code == 299
    assert _call(app, "GET", "/v1/workers", headers={"X-Api-Key": "sk-unknown"}).status_code == 401
    assert _call(app, "GET", "/v1/workers", headers={"X-Api-Key": " "}).status_code == 401
    assert _call(app, "GET", "/v1/workers", headers={"X-Api-Key": ADMIN_KEY,
                                                     "Authorization": "Basic abc"}).status_code == 401
    assert _call(app, "GET", "/v1/workers", headers={"X-Api-Key": "sk-no-permission",
                                                     "Authorization": f"Bearer {ADMIN_KEY}"}
                 ).status_code == 299


def test_metrics_need_a_key_unless_made_public(routes, store):
    closed = AuthMiddleware(_behind, store, RouteRules(routes))
    assert _call(closed, "GET", "/metrics").status_code == 401
    assert _call(closed, "GET", "/metrics", "sk-only-metrics-read-key").status_code == 299
    public = AuthMiddleware(_behind, store, RouteRules(routes, metrics_public=True))
    assert _call(public, "GET", "/metrics").status_code == 299
    assert _call(public, "GET", "/v1/models").status_code == 401  # only /metrics opens


def test_the_address_takes_an_admin_key_or_a_workers_proof_of_the_cluster_secret(routes, store):
    app = AuthMiddleware(_behind, store, RouteRules(routes), cluster_secret=SECRET)
    proof = {"X-Fleet-Worker-Proof": timed_proof(SECRET, "address")}
    assert _call(app, "GET", "/v1/address", headers=proof).status_code == 299
    assert _call(app, "GET", "/v1/address", ADMIN_KEY).status_code == 299
    assert _call(app, "GET", "/v1/address").status_code == 401
    assert _call(app, "GET", "/v1/address", "sk-only-models-list-key").status_code == 403
    for bad in (timed_proof("another-secret-of-enough-length", "address"),
                timed_proof(SECRET, "other-purpose"), timed_proof(SECRET, "address", now=1.0),
                "garbage"):
        assert _call(app, "GET", "/v1/address", headers={"X-Fleet-Worker-Proof": bad}
                     ).status_code == 401
    # The proof opens that route alone.
    assert _call(app, "GET", "/v1/workers", headers=proof).status_code == 401
    without_secret = AuthMiddleware(_behind, store, RouteRules(routes))
    assert _call(without_secret, "GET", "/v1/address", headers=proof).status_code == 401


def test_a_key_limited_to_a_model_cannot_name_another(routes, store):
    async def echo(body: EmbeddingRequest) -> bytes:
        return orjson.dumps({"model": body.model})

    front = FastJsonRoutes(_behind, [FastRoute("/v1/embeddings", EmbeddingRequest, echo)])
    app = AuthMiddleware(front, store, RouteRules(routes))
    key = "sk-limited-to-a"
    body = b'{"model": "model-b", "input": "x"}'
    refused = _call(app, "POST", "/v1/embeddings", key, body=body)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "model_not_allowed"
    allowed = _call(app, "POST", "/v1/embeddings", key, body=body.replace(b"model-b", b"model-a"))
    assert allowed.status_code == 200 and allowed.json() == {"model": "model-a"}
    assert _call(app, "POST", "/v1/embeddings", ADMIN_KEY, body=body).status_code == 200
    assert _call(app, "GET", "/v1/models/model-b", key).status_code == 403
    assert _call(app, "GET", "/v1/models/model-a", key).status_code == 299
    assert _call(app, "GET", "/v1/models", key).status_code == 299  # filtered by the route


def test_the_auth_file_reads_xinferences_shape_with_fleets_additions(tmp_path):
    path = tmp_path / "auth.json"
    path.write_text(json.dumps({
        "auth_config": {"algorithm": "HS256", "secret_key": "x", "token_expire_in_minutes": 30},
        "user_config": [
            {"username": "ops", "password": "unused", "permissions": ["models:write", "models:list"],
             "api_keys": ["sk-ops-key-1", {"sha256": hash_key("sk-ops-key-2"), "models": ["m"]}]},
            {"username": "boss", "password": "unused", "permissions": ["admin"],
             "api_keys": ["sk-boss-key-1"]}]}))
    grants = read_auth_config(path)
    ops = grants[hash_key("sk-ops-key-1")]
    assert ops.holder == "ops" and ops.models is None
    assert ops.allows("models:start") and ops.allows("models:stop") and not ops.allows("admin")
    assert grants[hash_key("sk-ops-key-2")].models == frozenset({"m"})
    boss = grants[hash_key("sk-boss-key-1")]
    assert boss.allows("cache:delete") and boss.may_use("anything")


@pytest.mark.parametrize("users, message", [
    ([{"username": "u", "permissions": ["models:launch"], "api_keys": ["sk-0123456789"]}],
     "unknown permission 'models:launch'"),
    ([{"username": "u", "api_keys": ["short"]}], "at least 8 characters"),
    ([{"username": "u", "api_keys": [{"sha256": "abc"}]}], "64 hexadecimal digits"),
    ([{"username": "u", "permissions": ["admin"],
       "api_keys": [{"key": "sk-0123456789", "models": ["m"]}]}], "cannot be limited"),
    ([{"username": "u", "api_keys": ["sk-0123456789"]},
      {"username": "v", "api_keys": ["sk-0123456789"]}], "also 'u'"),
    ([{"username": "u", "api_keys": []}], "holds no API keys"),
    ([{"username": "u", "api_keys": ["sk-0123456789"], "colour": "red"}], "colour"),
])
def test_an_unusable_auth_file_is_refused_with_the_reason(tmp_path, users, message):
    with pytest.raises(BadRequest) as refused:
        read_auth_config(_auth_file(tmp_path, users))
    assert message in refused.value.message


def test_an_auth_file_that_is_not_json_or_missing_is_refused(tmp_path):
    path = tmp_path / "auth.json"
    path.write_text("{user_config: [")
    with pytest.raises(BadRequest, match="auth config"):
        read_auth_config(path)
    with pytest.raises(BadRequest, match="cannot read"):
        read_auth_config(tmp_path / "missing.json")


def _config_from_cli(monkeypatch: pytest.MonkeyPatch, *args: str,
                     env: dict[str, str] | None = None) -> ServerConfig:
    """The ServerConfig that `fleet local ARGS` would start with (nothing is started)."""
    import fleet.server
    from fleet.cli import server_cmds

    captured: list[ServerConfig] = []
    monkeypatch.setattr(fleet.server, "run_cluster", lambda config, with_worker: config)
    monkeypatch.setattr(server_cmds, "_run",
                        lambda component, level, factory: captured.append(factory()))
    result = CliRunner().invoke(server_cmds.local, list(args), env=env or {},
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return captured[0]


def test_keys_are_kept_hashed_from_the_command_line_on(tmp_path, monkeypatch):
    file_key = "sk-file-key-0123456789"
    auth = _auth_file(tmp_path, [{"username": "u", "permissions": ["models:list"],
                                  "api_keys": [file_key]}])
    config = _config_from_cli(monkeypatch, "--api-key", ADMIN_KEY, "--auth-config", str(auth),
                              env={"FLEET_API_KEY": "sk-ignored-when-given"})
    assert config.api_key_hashes == (hashlib.sha256(ADMIN_KEY.encode()).hexdigest(),)
    from_env = _config_from_cli(monkeypatch, env={"FLEET_API_KEY": "sk-env-key-one sk-env-key-two"})
    assert from_env.api_key_hashes == (hash_key("sk-env-key-one"), hash_key("sk-env-key-two"))
    app = create_app(None, "127.0.0.1:1", config)
    state = _fastapi_app(app).state
    for held in (config.model_dump_json(), repr(config), pickle.dumps(config),
                 pickle.dumps(state.auth), repr(vars(state.auth))):
        text = held if isinstance(held, str) else held.decode("latin-1")
        assert ADMIN_KEY not in text and file_key not in text
    with pytest.raises(ValueError, match="SHA-256"):
        ServerConfig(api_key_hashes=(ADMIN_KEY,))  # a plain key never fits the field


def test_a_short_key_on_the_command_line_is_a_usage_error():
    from fleet.cli import server_cmds

    result = CliRunner().invoke(server_cmds.local, ["--api-key", "short"])
    assert result.exit_code == 2 and "at least 8 characters" in result.output


def test_cluster_auth_answers_whether_keys_are_on():
    with_keys = create_app(None, "127.0.0.1:1", ServerConfig(api_key_hashes=(hash_key(ADMIN_KEY),)))
    assert _call(with_keys, "GET", "/v1/cluster/auth").json() == {"auth": True}
    assert _call(with_keys, "GET", "/status").status_code == 200
    without = create_app(None, "127.0.0.1:1", ServerConfig())
    assert _call(without, "GET", "/v1/cluster/auth").json() == {"auth": False}
    assert with_auth(_behind, None, None, ServerConfig()) is _behind  # nothing added


def test_a_network_address_without_keys_is_refused_unless_insecure_is_asked(caplog):
    check_exposure(ServerConfig(host="127.0.0.1"))
    check_exposure(ServerConfig(host="::1"))
    check_exposure(ServerConfig(host="0.0.0.0", api_key_hashes=(hash_key(ADMIN_KEY),)))
    for host in ("0.0.0.0", "192.0.2.7", "::"):
        with pytest.raises(BadRequest) as refused:
            check_exposure(ServerConfig(host=host))
        assert "--api-key" in refused.value.message and "--insecure-no-auth" in refused.value.message
    with caplog.at_level(logging.WARNING, logger="fleet.api.auth.middleware"):
        check_exposure(ServerConfig(host="0.0.0.0", insecure_no_auth=True))
    assert "WITHOUT API KEYS" in caplog.text
