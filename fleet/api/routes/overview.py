"""Routes that the web UI needs and the rest of the API did not have, each useful to any client:

- `GET /v1/cluster/overview`: the whole cluster in one answer (workers with their resources,
  models with each replica's live state, memory and restarts), so that a page showing the
  cluster live costs the API one call every few seconds, not one per model per second.
  Workers' resources are what `/metrics` exports, so they are given to a key that may read
  metrics (or an admin key); another key gets `workers: null` and the models it may use.
- `GET /v1/auth/me`: what the caller's key may do (its permissions and models), so that a
  client shows only the actions that will not be refused.
- `GET /v1/engines`: every engine Fleet knows, what it runs and whether it is installed here
  (the catalogue's engine filter)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, Request

from fleet.api.auth.keys import ADMIN, PERMISSIONS
from fleet.api.auth.middleware import GRANT_SCOPE_KEY, auth_on, visible_models
from fleet.engines.registry import ENGINES

router = APIRouter()

# What one replica row of the overview carries (the live status has more: batch details).
_REPLICA_FIELDS = ("replica_id", "replica_uid", "worker_address", "state", "stage", "progress",
                   "error", "gpus", "pid", "restarts", "memory_bytes", "uptime_s",
                   "requests_served", "last_failure")


def _may_see_workers(scope: dict) -> bool:
    grant = scope.get(GRANT_SCOPE_KEY)
    return grant is None or grant.allows("metrics:read")


@router.get("/v1/cluster/overview")
async def cluster_overview(request: Request) -> dict[str, Any]:
    """Workers, models and replicas in one answer (see the module's docstring)."""
    supervisor = request.app.state.cluster.supervisor
    workers, models, replicas = await asyncio.gather(
        supervisor.list_workers(), supervisor.list_models(), supervisor.replica_metrics())
    models = visible_models(request.scope, models, "model_uid")
    by_model: dict[str, list[dict[str, Any]]] = {}
    for row in replicas:
        by_model.setdefault(row["model"], []).append({k: row.get(k) for k in _REPLICA_FIELDS})
    listed = [{**model, "replicas": by_model.get(model["model_uid"], [])} for model in models]
    return {
        "time": time.time(),
        "workers": workers if _may_see_workers(request.scope) else None,
        "models": sorted(listed, key=lambda m: m["model_uid"]),
    }


@router.get("/v1/auth/me")
async def auth_me(request: Request) -> dict[str, Any]:
    """The caller's rights: every permission when the cluster has no keys."""
    grant = request.scope.get(GRANT_SCOPE_KEY)
    if grant is None:
        return {"auth": auth_on(request.app.state.auth), "holder": None,
                "permissions": sorted(PERMISSIONS), "models": None}
    permissions = PERMISSIONS if ADMIN in grant.permissions else grant.permissions
    return {"auth": True, "holder": grant.holder, "permissions": sorted(permissions),
            "models": sorted(grant.models) if grant.models is not None else None}


@router.get("/v1/engines")
async def list_engines() -> list[dict[str, Any]]:
    """Every engine: the model types, formats and abilities it runs, and whether its library
    is installed on the API's machine (the workers' say at launch)."""
    rows = []
    for engine in sorted(ENGINES, key=lambda e: e.priority):
        missing = await asyncio.to_thread(engine.missing_modules)
        rows.append({"engine": engine.name, "model_types": sorted(engine.implementations),
                     "formats": list(engine.formats), "abilities": list(engine.abilities),
                     "needs_gpu": engine.needs_gpu, "installed": not missing,
                     "missing": missing, "pip_extra": engine.pip_extra})
    return rows
