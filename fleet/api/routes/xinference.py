"""Routes that exist only so that Xinference's own CLI (`xinference launch ...`) drives Fleet
unchanged: it polls `GET /v1/models/instances` while a launch loads, and reads each replica's
status and error from it. Fleet's own clients use `/v1/models/{uid}/progress` and `/replicas`.

Included before the management routes: `/v1/models/{model_uid}` would otherwise take
"instances" for a model uid (which a launch therefore refuses as a uid)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request

from fleet.api.auth.middleware import visible_models
from fleet.errors import NotFound

router = APIRouter()

# Fleet's replica and model states under Xinference's names (its LaunchStatus).
_STATUS = {"launching": "CREATING", "ready": "READY", "failed": "ERROR",
           "terminating": "TERMINATING"}


def _status(state: str | None) -> str:
    return _STATUS.get(state or "", "CREATING")


def _instance(model: dict[str, Any]) -> dict[str, Any]:
    """One launched model in Xinference's InstanceInfo shape."""
    created = int(model.get("created") or 0)
    replicas = [
        {
            "replica_id": index,
            "replica_model_uid": replica["replica_uid"],
            "worker_address": replica["worker_address"],
            "status": _status(replica["state"]),
            "model_state": replica["state"],
            "created_ts": created,
            "error_message": replica.get("error"),
            "gpu_idx": replica.get("gpus") or None,
        }
        for index, replica in enumerate(model.get("replicas", []))
    ]
    return {
        "model_name": model["model_name"],
        "model_uid": model["model_uid"],
        "model_version": None,
        "model_ability": model.get("model_ability", []),
        "replica": model.get("replica", len(replicas)),
        "status": _status(model.get("status")),
        "instance_created_ts": created,
        "n_worker": 1,
        "replica_statuses": replicas,
    }


@router.get("/v1/models/instances")
async def model_instances(
    request: Request, model_name: str | None = Query(None), model_uid: str | None = Query(None)
) -> list[dict[str, Any]]:
    """Launched models (one by uid, those of one name, or all), sorted by uid. A uid that is
    not running answers an empty list, as Xinference does for a terminated launch."""
    supervisor = request.app.state.cluster.supervisor
    if model_uid is not None:
        try:
            models = [await supervisor.describe_model(model_uid)]
        except NotFound:
            return []
    else:
        uids = [m["model_uid"] for m in await supervisor.list_models()
                if model_name is None or m["model_name"] == model_name]
        models = []
        for uid in uids:
            try:
                models.append(await supervisor.describe_model(uid))
            except NotFound:  # terminated between the two calls
                continue
    models = visible_models(request.scope, models, "model_uid")  # a key limited to models
    return [_instance(m) for m in sorted(models, key=lambda m: m["model_uid"])]
