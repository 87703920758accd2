"""`fleet.client.Client`: the Python client (over httpx) that the CLI uses too.

    from fleet.client import Client
    client = Client("http://127.0.0.1:9997")  # api_key="..." (or FLEET_API_KEY) when keys are on
    uid = client.launch_model("all-MiniLM-L6-v2", model_type="embedding", model_path="/models/x")
    client.get_model(uid).create_embedding(["hello"])
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx

from fleet.client.audio import AudioModelHandle
from fleet.client.handle import FleetClientError, ModelHandle, _raise_for_error
from fleet.client.images import ImageModelHandle
from fleet.settings import DEFAULT_ENDPOINT

__all__ = ["Client", "FleetClientError", "ModelHandle"]


class Client:
    def __init__(self, endpoint: str | None = None, api_key: str | None = None,
                 timeout: float = 600.0, connect_wait_s: float = 0.0):
        # connect_wait_s: keep retrying a refused connection this long (a server just started).
        self._connect_wait_s = connect_wait_s
        self.endpoint = (endpoint or os.environ.get("FLEET_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
        api_key = api_key or os.environ.get("FLEET_API_KEY")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=self.endpoint, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._response(method, path, **kwargs)
        return response.json() if response.content else None

    def _response(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        deadline = time.monotonic() + self._connect_wait_s
        while True:
            try:
                response = self._http.request(method, path, **kwargs)
                break
            except httpx.ConnectError as exc:
                if time.monotonic() < deadline:
                    time.sleep(0.2)
                    continue
                raise FleetClientError(
                    0, f"cannot connect to Fleet at {self.endpoint} ({exc}); is `fleet local` running?"
                ) from None
        _raise_for_error(response)
        return response

    def _generate(self, path: str, body: dict[str, Any]) -> Any:
        if not body.get("stream"):
            return self._request("POST", path, json=body)
        return self._stream(path, body)

    def _stream(self, path: str, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Server-sent events as dicts, until `[DONE]`; an error event raises."""
        with self._http.stream("POST", path, json=body) as response:
            if not response.is_success:
                response.read()
                _raise_for_error(response)
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[len("data:"):].strip()
                if data == "[DONE]":
                    return
                event = json.loads(data)
                if "error" in event:
                    error = event["error"]
                    raise FleetClientError(500, error.get("message", str(error)), error.get("code"))
                yield event

    # ---- models ----

    def launch_model(self, model_name: str, model_type: str | None = None,
                     wait_ready: bool = True, **kwargs: Any) -> str:
        body = {"model_name": model_name, "model_type": model_type, **kwargs}
        body = {k: v for k, v in body.items() if v is not None}
        result = self._request("POST", "/v1/models", json=body,
                               params={"wait_ready": str(wait_ready).lower()})
        return result["model_uid"]

    def estimate_launch(self, model_name: str, model_type: str | None = None,
                        **kwargs: Any) -> dict[str, Any]:
        """A dry run of `launch_model` with the same arguments: the engine it would get, the
        memory one replica needs (weights, KV cache, overhead) and the worker it would go to,
        or why none has room, and the models it would unload to make room (`would_unload`,
        worker -> uids). Launches nothing. Arguments that cannot travel in a query and do
        not change the estimate (envs) are left out."""
        params = {"model_name": model_name, "model_type": model_type, **kwargs}
        params = {k: str(v).lower() if isinstance(v, bool) else v for k, v in params.items()
                  if v is not None and not isinstance(v, dict)}
        return self._request("GET", "/v1/models/estimate", params=params)

    def list_models(self) -> dict[str, dict[str, Any]]:
        """The running models by uid (each with its `aliases`; the listing's entries for the
        aliases themselves, there for OpenAI clients, are left out)."""
        return {m["id"]: m for m in self._request("GET", "/v1/models")["data"]
                if "alias_of" not in m}

    def set_aliases(self, model_uid: str, aliases: list[str]) -> list[str]:
        """The other names the model answers to from now on (an empty list: none)."""
        return self._request("PUT", f"/v1/models/{quote(model_uid, safe='')}/aliases",
                             json={"aliases": aliases})["aliases"]

    def describe_model(self, model_uid: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/models/{quote(model_uid, safe='')}")

    def launch_progress(self, model_uid: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/models/{quote(model_uid, safe='')}/progress")

    def replicas(self, model_uid: str) -> list[dict[str, Any]]:
        return self._request("GET", f"/v1/models/{quote(model_uid, safe='')}/replicas")

    def terminate_model(self, model_uid: str) -> None:
        self._request("DELETE", f"/v1/models/{quote(model_uid, safe='')}")

    def add_model_replica(self, model_uid: str, replica: int = 1) -> dict[str, Any]:
        """Xinference's scale-up: `replica` more replicas, ready when this returns."""
        return self._request("POST", f"/v1/models/{quote(model_uid, safe='')}/replicas",
                             json={"replica": replica})

    def terminate_model_replica(self, model_uid: str, replica_id: int) -> int:
        """Drain and end one replica; the number left."""
        path = f"/v1/models/{quote(model_uid, safe='')}/replicas/{int(replica_id)}"
        return self._request("DELETE", path)["remaining_replicas"]

    def scale(self, model_uid: str, replicas: int) -> list[int]:
        """Add replicas, or remove the newest, until the model has `replicas`; their ids."""
        if replicas < 1:
            raise ValueError("a model keeps at least one replica; terminate it instead")
        ids = sorted(r["replica_id"] for r in self.describe_model(model_uid)["replicas"])
        if replicas > len(ids):
            added = self.add_model_replica(model_uid, replicas - len(ids))
            ids += [r["replica_id"] for r in added.get("replicas", [added])]
        for replica_id in reversed(ids[replicas:]):
            self.terminate_model_replica(model_uid, replica_id)
        return sorted(ids)[:replicas]

    def autoscale(self, model_uid: str, min_replicas: int | None = None,
                  max_replicas: int | None = None, target_inflight: float | None = None,
                  scale_up_delay: float | None = None,
                  scale_down_delay: float | None = None) -> dict[str, Any]:
        """Change the model's autoscaling while it serves (the arguments given); the settings
        now in force."""
        fields = {"min_replicas": min_replicas, "max_replicas": max_replicas,
                  "target_inflight": target_inflight, "scale_up_delay": scale_up_delay,
                  "scale_down_delay": scale_down_delay}
        return self._request("POST", f"/v1/models/{quote(model_uid, safe='')}/autoscale",
                             json={k: v for k, v in fields.items() if v is not None})

    def model_events(self, model_uid: str) -> list[dict[str, Any]]:
        """What the supervisor did to the model's replicas on its own, and why, oldest first."""
        return self._request("GET", f"/v1/models/{quote(model_uid, safe='')}/events")["data"]

    def get_model(self, model_uid: str) -> ModelHandle:
        described = self.describe_model(model_uid)  # fail early on an unknown uid
        if described.get("model_type") == "image":
            return ImageModelHandle(self, model_uid)
        if described.get("model_type") == "audio":
            return AudioModelHandle(self, model_uid)
        return ModelHandle(self, model_uid)

    # ---- catalogue ----

    def register_model(self, model_type: str, model: str | dict[str, Any],
                       persist: bool = True) -> None:
        family = json.loads(model) if isinstance(model, str) else model
        self._request("POST", f"/v1/model_registrations/{model_type}",
                      json={"model": family, "persist": persist})

    def unregister_model(self, model_type: str, model_name: str) -> None:
        self._request("DELETE", f"/v1/model_registrations/{model_type}/{quote(model_name)}")

    def list_model_registrations(self, model_type: str,
                                 detailed: bool = False) -> list[dict[str, Any]]:
        return self._request("GET", f"/v1/model_registrations/{model_type}",
                             params={"detailed": str(detailed).lower()})

    def get_model_registration(self, model_type: str, model_name: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/model_registrations/{model_type}/{quote(model_name)}")

    def query_engines(self, model_name: str, model_type: str | None = None,
                      detailed: bool = True) -> Any:
        path = f"/v1/engines/{model_type}/{quote(model_name)}" if model_type else \
            f"/v1/engines/{quote(model_name)}"
        return self._request("GET", path, params={"detailed": str(detailed).lower()})

    # ---- cluster ----

    def cluster_info(self) -> list[dict[str, Any]]:
        return self._request("GET", "/v1/cluster/info")

    def list_workers(self) -> list[dict[str, Any]]:
        return self._request("GET", "/v1/workers")

    def status(self) -> dict[str, Any]:
        return self._request("GET", "/status")

    # ---- weights cache (Xinference's method names; per worker in a cluster) ----

    def list_cached_models(self, model_name: str | None = None,
                           worker_ip: str | None = None) -> list[dict[str, Any]]:
        """Every worker's cached models (fields in fleet.api.routes.cache), or those of one
        model name, or of the worker(s) at `worker_ip`."""
        return self.cache_listing(model_name, worker_ip)["list"]

    def cache_listing(self, model_name: str | None = None,
                      worker_ip: str | None = None) -> dict[str, Any]:
        """The whole answer: `{"list": [...], "unreachable_workers": [...]}`."""
        params = {k: v for k, v in {"model_name": model_name, "worker_ip": worker_ip}.items() if v}
        return self._request("GET", "/v1/cache/models", params=params)

    def list_deletable_models(self, model_version: str,
                              worker_ip: str | None = None) -> dict[str, Any]:
        """What removing `model_version` would delete: `{"paths": [...], "in_use_by": [...]}`."""
        params = {k: v for k, v in {"model_version": model_version, "worker_ip": worker_ip}.items()
                  if v}
        return self._request("GET", "/v1/cache/models/files", params=params)

    def remove_cached_model(self, model_version: str, worker_ip: str | None = None,
                            force: bool = False) -> dict[str, Any]:
        """Delete a cached model; refused (409) while a running model uses it unless `force`."""
        params: dict[str, Any] = {"model_version": model_version, "force": str(force).lower()}
        if worker_ip:
            params["worker_ip"] = worker_ip
        return self._request("DELETE", "/v1/cache/models", params=params)

    def confirm_and_remove_model(self, model_version: str, worker_ip: str | None = None) -> bool:
        """Xinference's name for `remove_cached_model` (unforced): True once removed."""
        return bool(self.remove_cached_model(model_version, worker_ip)["result"])

    # ---- API keys and the audit log (admin keys) ----

    def create_key(self, name: str, **fields: Any) -> dict[str, Any]:
        """A new key: the answer's `key` is the only time it is shown. `fields`: owner,
        permissions, models, expires_at (ISO 8601), limits (a dict)."""
        body = {"name": name, **{k: v for k, v in fields.items() if v is not None}}
        return self._request("POST", "/v1/keys", json=body)

    def list_keys(self) -> list[dict[str, Any]]:
        return self._request("GET", "/v1/keys")["data"]

    def get_key(self, key_id: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/keys/{quote(key_id, safe='')}")

    def update_key(self, key_id: str, **changes: Any) -> dict[str, Any]:
        """Changes the fields given (None clears owner, models, expires_at or a limit)."""
        return self._request("PATCH", f"/v1/keys/{quote(key_id, safe='')}", json=changes)

    def revoke_key(self, key_id: str) -> dict[str, Any]:
        return self._request("DELETE", f"/v1/keys/{quote(key_id, safe='')}")

    def list_users(self) -> list[dict[str, Any]]:
        """The keys' owners, with their limits."""
        return self._request("GET", "/v1/users")["data"]

    def set_user_limits(self, name: str, limits: dict[str, int | None]) -> dict[str, Any]:
        """A user's limits, all of them (a limit left out or None: none), over its keys' sum."""
        return self._request("PUT", f"/v1/users/{quote(name, safe='')}/limits", json=limits)

    def audit_log(self, since: str | None = None, action: str | None = None,
                  limit: int = 100) -> list[dict[str, Any]]:
        """Management actions, newest first."""
        params = {k: v for k, v in {"since": since, "action": action, "limit": limit}.items()
                  if v is not None}
        return self._request("GET", "/v1/audit", params=params)["data"]

    # ---- Usage (an admin key sees every key's; another key its own) ----

    def usage(self, group_by: list[str] | None = None, bucket: str | None = None,
              start: str | None = None, end: str | None = None, key_id: str | None = None,
              user: str | None = None, model: str | None = None) -> dict[str, Any]:
        """GET /v1/usage: `{"start", "end", "bucket", "group_by", "data": [rows]}`; group_by
        from key, user, model, family; bucket hour, day or month (None: totals); start and
        end ISO 8601 (default: the last 24 hours)."""
        return self._request("GET", "/v1/usage", params=_usage_params(
            group_by, bucket, start, end, key_id, user, model))

    def usage_csv(self, group_by: list[str] | None = None, bucket: str | None = None,
                  start: str | None = None, end: str | None = None, key_id: str | None = None,
                  user: str | None = None, model: str | None = None) -> str:
        """The same rows as CSV text, with a header row."""
        params = _usage_params(group_by, bucket, start, end, key_id, user, model)
        return self._response("GET", "/v1/usage", params={**params, "format": "csv"}).text


def _usage_params(group_by: list[str] | None, bucket: str | None, start: str | None,
                  end: str | None, key_id: str | None, user: str | None,
                  model: str | None) -> dict[str, Any]:
    params: dict[str, Any] = {"group_by": ",".join(group_by)} if group_by else {}
    given = {"bucket": bucket, "start": start, "end": end, "key_id": key_id, "user": user,
             "model": model}
    return {**params, **{k: v for k, v in given.items() if v is not None}}
