"""API keys made while a real `fleet local` runs (POST/GET/PATCH/DELETE /v1/keys, `fleet keys`)
and the audit log (GET /v1/audit):

- an open cluster (no --api-key, no --auth-config) stays open until its first key is made,
  which must be an admin key and turns keys on at once;
- a key made through the API works at once, its permissions and models hold as a file key's
  do, a revoked one is refused within a second, an expired one at its time;
- the keys of --api-key and --auth-config still work, are listed read-only and cannot be
  changed through the API;
- bad input is a 400 in OpenAI's error shape, an unknown id a 404;
- the audit log records a launch and a revocation with who made them and from where;
- the CLI round trip: create, list, update, revoke."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from tests.concurrency import wait_for_status
from tests.conftest import FleetProcess, free_port

ADMIN_KEY = "sk-e2e-flag-admin-key-0001"
FILE_KEY = "sk-e2e-file-user-key-0002"


def _env_without_keys() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("FLEET_API_KEY", "FLEET_AUTH_CONFIG")}


def _call(cluster: FleetProcess, method: str, path: str, key: str | None = None,
          **kwargs) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.request(method, f"{cluster.endpoint}{path}", headers=headers, timeout=120,
                         **kwargs)


def _embed(cluster: FleetProcess, key: str | None, model: str = "minilm") -> httpx.Response:
    return _call(cluster, "POST", "/v1/embeddings", key, json={"model": model, "input": "hi"})


@pytest.fixture(scope="module")
def open_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FleetProcess]:
    home = tmp_path_factory.mktemp("fleet-home")
    port = free_port()
    server = FleetProcess(["local", "-p", str(port)], home, port,
                          env=_env_without_keys()).wait_ready()
    yield server
    server.stop()


def test_the_first_key_must_be_admin_and_turns_keys_on_at_once(open_cluster, minilm_path):
    assert _call(open_cluster, "GET", "/v1/cluster/auth").json() == {"auth": False}
    refused = _call(open_cluster, "POST", "/v1/keys", json={"name": "app"})
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "first_key_not_admin"
    assert _call(open_cluster, "GET", "/v1/models").status_code == 200  # still open
    assert _call(open_cluster, "GET", "/v1/keys").json()["data"] == []
    # The fixture's first key, made without a key:
    key = _first_key_of(open_cluster, minilm_path)
    assert key.startswith("sk-fleet-")
    assert _call(open_cluster, "GET", "/v1/cluster/auth").json() == {"auth": True}
    anonymous = _call(open_cluster, "GET", "/v1/models")
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "invalid_api_key"
    assert _embed(open_cluster, None).status_code == 401
    assert _embed(open_cluster, key).status_code == 200
    assert _call(open_cluster, "GET", "/v1/auth/me", key).json()["holder"] == "ops"


_made: dict[str, str] = {}


def _first_key_of(cluster: FleetProcess, minilm_path: str) -> str:
    if "first" not in _made:
        launched = _call(cluster, "POST", "/v1/models", json={
            "model_name": "all-MiniLM-L6-v2", "model_type": "embedding", "model_uid": "minilm",
            "model_path": minilm_path})
        assert launched.status_code == 200, launched.text
        made = _call(cluster, "POST", "/v1/keys", json={"name": "ops", "permissions": ["admin"]})
        assert made.status_code == 200, made.text
        _made["first"] = made.json()["key"]
    return _made["first"]


@pytest.fixture(scope="module")
def admin(open_cluster: FleetProcess, minilm_path: str) -> str:
    return _first_key_of(open_cluster, minilm_path)


def test_a_key_works_at_once_holds_its_rights_and_is_refused_within_a_second_once_revoked(
        open_cluster, admin):
    made = _call(open_cluster, "POST", "/v1/keys", admin, json={
        "name": "app", "owner": "team-a", "permissions": ["models:list", "models:read"],
        "models": ["minilm"], "limits": {"requests_per_minute": 5, "daily_tokens": 100000}})
    assert made.status_code == 200, made.text
    shown = made.json()
    key = shown["key"]
    assert shown["prefix"] == key[:len(shown["prefix"])] and len(shown["prefix"]) < len(key)
    assert shown["limits"]["requests_per_minute"] == 5 and shown["owner"] == "team-a"
    assert _embed(open_cluster, key).status_code == 200  # at once
    other_model = _embed(open_cluster, key, model="another-model")
    assert other_model.status_code == 403
    assert other_model.json()["error"]["code"] == "model_not_allowed"
    assert _call(open_cluster, "GET", "/v1/keys", key).status_code == 403  # not admin
    launch = _call(open_cluster, "POST", "/v1/models", key, json={"model_name": "minilm"})
    assert launch.status_code == 403 and launch.json()["error"]["type"] == "permission_error"
    assert [m["id"] for m in _call(open_cluster, "GET", "/v1/models", key).json()["data"]] \
        == ["minilm"]
    listed = _call(open_cluster, "GET", "/v1/keys", admin).json()["data"]
    assert key not in json.dumps(listed) and "sha256" not in json.dumps(listed)
    assert {k["name"] for k in listed} >= {"ops", "app"}
    one = _call(open_cluster, "GET", f"/v1/keys/{shown['id']}", admin).json()
    assert "key" not in one and one["status"] == "active" and one["source"] == "database"

    changed = _call(open_cluster, "PATCH", f"/v1/keys/{shown['id']}", admin,
                    json={"models": None, "limits": {"requests_per_minute": None}})
    assert changed.status_code == 200, changed.text
    assert changed.json()["models"] is None and changed.json()["limits"]["daily_tokens"] == 100000
    assert _embed(open_cluster, key, model="another-model").status_code == 404  # may now

    revoked = _call(open_cluster, "DELETE", f"/v1/keys/{shown['id']}", admin)
    assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
    took = wait_for_status(lambda: _embed(open_cluster, key), 401, within_s=1.0)
    assert took < 1.0
    revived = _call(open_cluster, "PATCH", f"/v1/keys/{shown['id']}", admin,
                    json={"expires_at": None})
    assert revived.status_code == 409 and revived.json()["error"]["code"] == "key_revoked"
    assert _embed(open_cluster, key).status_code == 401


def test_an_expired_key_is_refused(open_cluster, admin):
    expires = datetime.now(timezone.utc) + timedelta(seconds=2)
    made = _call(open_cluster, "POST", "/v1/keys", admin,
                 json={"name": "short", "expires_at": expires.isoformat()}).json()
    assert _embed(open_cluster, made["key"]).status_code == 200
    wait_for_status(lambda: _embed(open_cluster, made["key"]), 401, within_s=4.0)
    assert datetime.now(timezone.utc) >= expires
    assert _call(open_cluster, "GET", f"/v1/keys/{made['id']}", admin).json()["status"] \
        == "expired"


@pytest.mark.parametrize(("body", "field"), [
    ({"name": "x", "permissions": ["models:fly"]}, "unknown permission 'models:fly'"),
    ({"name": "x", "expires_at": "2001-01-01T00:00:00Z"}, "expires_at is in the past"),
    ({"name": "x", "expires_at": "9999-12-31T23:00:00-05:00"}, "out of range in UTC"),
    ({"name": "x", "expires_at": "tomorrow"}, "expires_at"),
    ({"name": "x", "limits": {"requests_per_minute": 0}}, "limits.requests_per_minute"),
    ({"name": "x", "limits": {"tokens_per_minute": "many"}}, "limits.tokens_per_minute"),
    ({"name": "x", "limits": {"per_hour": 3}}, "limits.per_hour"),
    ({"name": "x", "permissions": ["admin"], "models": ["minilm"]}, "cannot be limited"),
    ({"name": ""}, "name"),
    ({"permissions": ["models:read"]}, "name"),
    ({"name": "x", "secret": "y"}, "secret"),
])
def test_bad_key_bodies_are_400s_in_the_error_shape(open_cluster, admin, body, field):
    answer = _call(open_cluster, "POST", "/v1/keys", admin, json=body)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["type"] == "invalid_request_error" and field in error["message"]


def test_unknown_ids_are_404s_and_bad_patches_400s(open_cluster, admin):
    for method in ("GET", "PATCH", "DELETE"):
        answer = _call(open_cluster, method, "/v1/keys/key-none", admin,
                       json={"name": "y"} if method == "PATCH" else None)
        assert answer.status_code == 404, (method, answer.text)
        assert answer.json()["error"]["code"] == "key_not_found"
    made = _call(open_cluster, "POST", "/v1/keys", admin, json={"name": "p"}).json()
    for body in ({"name": None}, {"permissions": ["nope"]},
                 {"expires_at": "2000-01-01T00:00:00"}, {"limits": {"daily_tokens": -1}},
                 {"permissions": ["admin"]}):  # admin, while limited to no models: fine
        answer = _call(open_cluster, "PATCH", f"/v1/keys/{made['id']}", admin, json=body)
        if body == {"permissions": ["admin"]}:
            assert answer.status_code == 200
            continue
        assert answer.status_code == 400, (body, answer.text)
        assert answer.json()["error"]["type"] == "invalid_request_error"
    limited = _call(open_cluster, "PATCH", f"/v1/keys/{made['id']}", admin,
                    json={"models": ["minilm"]})
    assert limited.status_code == 400 and "cannot be limited" in limited.json()["error"]["message"]


def test_the_audit_log_records_launches_and_revocations_with_their_actor(open_cluster, admin):
    made = _call(open_cluster, "POST", "/v1/keys", admin, json={"name": "gone"}).json()
    _call(open_cluster, "DELETE", f"/v1/keys/{made['id']}", admin)
    ops = next(k for k in _call(open_cluster, "GET", "/v1/keys", admin).json()["data"]
               if k["name"] == "ops")
    revocations = _call(open_cluster, "GET", "/v1/audit", admin,
                        params={"action": "key.revoke"}).json()["data"]
    entry = next(e for e in revocations if e["target"] == made["id"])
    assert entry["actor"] == "ops" and entry["actor_key_id"] == ops["id"]
    assert entry["client_address"] == "127.0.0.1" and entry["details"] == {"name": "gone"}
    launch = _call(open_cluster, "GET", "/v1/audit", admin,
                   params={"action": "model.launch"}).json()["data"]
    assert [(e["target"], e["actor"]) for e in launch] == [("minilm", "anonymous")]
    assert launch[0]["details"]["model_name"] == "all-MiniLM-L6-v2"
    creations = _call(open_cluster, "GET", "/v1/audit", admin,
                      params={"action": "key.create"}).json()["data"]
    assert creations[-1]["actor"] == "anonymous" and creations[-1]["details"]["name"] == "ops"
    since = _call(open_cluster, "GET", "/v1/audit", admin,
                  params={"since": entry["time"], "limit": 1}).json()["data"]
    assert len(since) == 1
    for bad in ({"limit": 0}, {"since": "0001-01-01T00:00:00+14:00"}, {"since": "then"},
                {"since": "0.5"}, {"since": "1700000000"}):
        answer = _call(open_cluster, "GET", "/v1/audit", admin, params=bad)
        assert answer.status_code == 400, (bad, answer.text)
        assert answer.json()["error"]["type"] == "invalid_request_error"
    assert _call(open_cluster, "GET", "/v1/audit").status_code == 401


def _fleet(cluster: FleetProcess, key: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fleet", *args, "-e", cluster.endpoint],
                          env={**_env_without_keys(), "FLEET_API_KEY": key},
                          capture_output=True, text=True, timeout=120)


def test_the_cli_round_trip(open_cluster, admin):
    made = _fleet(open_cluster, admin, "keys", "create", "--name", "cli-app", "-p",
                  "models:read", "-m", "minilm", "--requests-per-minute", "7",
                  "--expires-in", "1d")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip().splitlines()[-1]
    assert key.startswith("sk-fleet-") and _embed(open_cluster, key).status_code == 200
    listed = _fleet(open_cluster, admin, "keys", "list", "--json")
    entry = next(k for k in json.loads(listed.stdout) if k["name"] == "cli-app")
    assert key not in listed.stdout and entry["limits"]["requests_per_minute"] == 7
    assert entry["models"] == ["minilm"] and entry["expires_at"] is not None
    table = _fleet(open_cluster, admin, "keys", "list")
    assert "cli-app" in table.stdout and key not in table.stdout
    updated = _fleet(open_cluster, admin, "keys", "update", entry["id"], "--name", "cli-renamed",
                     "--requests-per-minute", "none", "--no-expiry")
    assert updated.returncode == 0, updated.stderr
    after = _call(open_cluster, "GET", f"/v1/keys/{entry['id']}", admin).json()
    assert after["name"] == "cli-renamed" and after["expires_at"] is None
    assert after["limits"]["requests_per_minute"] is None
    bad = _fleet(open_cluster, admin, "keys", "create", "--name", "x", "-p", "fly")
    assert bad.returncode == 1 and "unknown permission 'fly'" in bad.stderr
    assert _fleet(open_cluster, admin, "keys", "revoke", entry["id"]).returncode == 0
    wait_for_status(lambda: _embed(open_cluster, key), 401, within_s=1.0)
    audit = _fleet(open_cluster, admin, "audit", "--action", "key.revoke", "--json")
    assert entry["id"] in [e["target"] for e in json.loads(audit.stdout)]


FAMILY = {"model_name": "audited", "dimensions": 8, "max_tokens": 128, "language": ["en"],
          "model_id": "example/audited", "model_uri": "/models/audited"}


def test_every_management_action_is_in_the_audit_log_with_its_key(open_cluster, admin):
    ops = next(k for k in _call(open_cluster, "GET", "/v1/keys", admin).json()["data"]
               if k["name"] == "ops")
    started = _call(open_cluster, "GET", "/v1/audit", admin, params={"limit": 1}).json()["data"]
    since = started[0]["time"]
    added = _call(open_cluster, "POST", "/v1/models/minilm/replicas", admin, json={"replica": 1})
    assert added.status_code == 200, added.text
    removed = _call(open_cluster, "DELETE",
                    f"/v1/models/minilm/replicas/{added.json()['replica_id']}", admin)
    assert removed.status_code == 200, removed.text
    assert _call(open_cluster, "POST", "/v1/models/minilm/autoscale", admin,
                 json={"max_replicas": 2}).status_code == 200
    assert _call(open_cluster, "POST", "/v1/model_registrations/embedding", admin,
                 json={"model": FAMILY, "persist": False}).status_code == 200
    assert _call(open_cluster, "DELETE", "/v1/model_registrations/embedding/audited",
                 admin).status_code == 200
    assert _call(open_cluster, "DELETE", "/v1/cache/models", admin,
                 params={"model_version": "no-such-download"}).status_code == 404  # not done
    assert _call(open_cluster, "DELETE", "/v1/models/minilm", admin).status_code == 200
    entries = _call(open_cluster, "GET", "/v1/audit", admin, params={"since": since}).json()
    done = [(e["action"], e["target"]) for e in reversed(entries["data"])
            if e["id"] != started[0]["id"]]
    assert done == [("model.scale_up", "minilm"), ("model.scale_down", "minilm"),
                         ("model.autoscale", "minilm"),
                         ("registration.register", "embedding/audited"),
                         ("registration.unregister", "embedding/audited"),
                         ("model.terminate", "minilm")]
    for entry in entries["data"][:6]:
        assert (entry["actor"], entry["actor_key_id"]) == ("ops", ops["id"])
        assert entry["client_address"] == "127.0.0.1"
    assert all(e["action"] != "cache.remove" for e in entries["data"])


def test_keys_and_the_closed_door_survive_a_restart(open_cluster, admin):
    open_cluster.stop()
    port = free_port()
    again = FleetProcess(["local", "-p", str(port)], open_cluster.home, port,
                         env=_env_without_keys()).wait_ready()
    try:
        assert _call(again, "GET", "/v1/cluster/auth").json() == {"auth": True}
        assert _call(again, "GET", "/v1/models").status_code == 401
        assert _call(again, "GET", "/v1/models", admin).status_code == 200
        audit = _call(again, "GET", "/v1/audit", admin, params={"action": "key.revoke"})
        assert len(audit.json()["data"]) >= 2
        # Its last use, noted before the stop, was written as the server stopped.
        ops = next(k for k in _call(again, "GET", "/v1/keys", admin).json()["data"]
                   if k["name"] == "ops")
        assert ops["last_used_at"] is not None
    finally:
        again.stop()


# ---- a cluster with --api-key and --auth-config ----

@pytest.fixture(scope="module")
def keyed_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FleetProcess]:
    home = tmp_path_factory.mktemp("fleet-home")
    auth_file = home.parent / "auth.json"
    auth_file.write_text(json.dumps({"user_config": [
        {"username": "reader", "permissions": ["models:list"], "api_keys": [FILE_KEY]}]}))
    port = free_port()
    server = FleetProcess(["local", "-p", str(port), "--auth-config", str(auth_file)], home,
                          port, env={**_env_without_keys(), "FLEET_API_KEY": ADMIN_KEY}
                          ).wait_ready()
    yield server
    server.stop()


def test_command_line_and_file_keys_work_and_are_read_only(keyed_cluster):
    assert _call(keyed_cluster, "GET", "/v1/models", FILE_KEY).status_code == 200
    assert _call(keyed_cluster, "GET", "/v1/keys", FILE_KEY).status_code == 403
    listed = _call(keyed_cluster, "GET", "/v1/keys", ADMIN_KEY).json()["data"]
    assert {(k["source"], k["name"], k["read_only"]) for k in listed} == {
        ("flag", "admin key", True), ("file", "reader", True)}
    assert ADMIN_KEY not in json.dumps(listed) and FILE_KEY not in json.dumps(listed)
    for entry in listed:
        one = _call(keyed_cluster, "GET", f"/v1/keys/{entry['id']}", ADMIN_KEY)
        assert one.status_code == 200 and one.json()["source"] == entry["source"]
        for method in ("PATCH", "DELETE"):
            refused = _call(keyed_cluster, method, f"/v1/keys/{entry['id']}", ADMIN_KEY,
                            json={"name": "z"} if method == "PATCH" else None)
            assert refused.status_code == 409, refused.text
            error = refused.json()["error"]
            assert error["code"] == "key_read_only" and "restart" in error["message"]
    assert _call(keyed_cluster, "GET", "/v1/models", FILE_KEY).status_code == 200
    # A key made through the API on a keyed cluster needs no admin permission.
    made = _call(keyed_cluster, "POST", "/v1/keys", ADMIN_KEY, json={"name": "app"})
    assert made.status_code == 200, made.text
    assert _call(keyed_cluster, "GET", "/v1/models", made.json()["key"]).status_code == 200
    entry = next(e for e in _call(keyed_cluster, "GET", "/v1/audit", ADMIN_KEY).json()["data"]
                 if e["action"] == "key.create")
    assert entry["actor"] == "admin key" and entry["actor_key_id"].startswith("flag-")
