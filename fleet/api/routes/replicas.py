"""Scaling a running model: Xinference's replica routes, with its request and answer shapes.

`POST /v1/models/{uid}/replicas` adds `replica` replicas (default 1) and answers, once they are
ready, `{"replica_id", "replica_model_uid", "worker_address"}` for one, or
`{"replica": n, "replicas": [...]}` for several. `DELETE /v1/models/{uid}/replicas/{replica_id}`
drains and ends one replica and answers `{"remaining_replicas": n}`; removing the last one
terminates the model, as in Xinference.

Fleet's own: `POST /v1/models/{uid}/autoscale` changes a model's autoscaling bounds, target and
delays while it serves (the fields given; answered with the settings now in force), and
`PUT /v1/models/{uid}/aliases` replaces the names it answers to besides its uid
(fleet.model_aliases), and `GET /v1/models/{uid}/events` lists what the supervisor did to its
replicas on its own, and why (scale-ups and downs, unloads and loads), oldest first: `{"data": [...]}`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from fleet.api.audit import audit
from fleet.api.protocol.fields import integer
from fleet.autoscale import MAX_DELAY_S
from fleet.limits import MAX_REPLICAS
from fleet.model_aliases import MAX_ALIASES, AliasName

router = APIRouter()


class AddReplicasRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    replica: StrictInt = Field(default=1, ge=1, le=MAX_REPLICAS)
    # Xinference's per-replica overrides: accepted when they match the model
    # (fleet.cluster.supervisor.scaling)
    model_engine: str | None = None
    n_gpu: StrictInt | str | None = None
    replica_config: dict[str, Any] | list[dict[str, Any]] | None = None


@router.post("/v1/models/{model_uid}/replicas")
async def add_model_replica(request: Request, model_uid: str,
                            body: AddReplicasRequest | None = None) -> dict[str, Any]:
    body = body or AddReplicasRequest()
    cluster = request.app.state.cluster
    overrides = body.model_dump(exclude={"replica"}, exclude_none=True)
    added = await cluster.supervisor.add_model_replicas(model_uid, body.replica, overrides)
    cluster.router.invalidate(model_uid)
    await audit(request, "model.scale_up", model_uid, {"added": body.replica})
    if body.replica == 1:
        return added[0]
    return {"replica": body.replica, "replicas": added}


@router.delete("/v1/models/{model_uid}/replicas/{replica_id}")
async def terminate_model_replica(request: Request, model_uid: str,
                                  replica_id: int) -> dict[str, int]:
    cluster = request.app.state.cluster
    remaining = await cluster.supervisor.terminate_model_replica(model_uid, replica_id)
    cluster.router.invalidate(model_uid)
    if remaining == 0:
        cluster.metrics.forget_model(model_uid)
    await audit(request, "model.scale_down", model_uid,
                {"replica_id": replica_id, "remaining_replicas": remaining})
    return {"remaining_replicas": remaining}


class AutoscaleRequest(BaseModel):
    """The fields to change; those left out keep their value. The bounds are checked together
    with the model's (fleet.autoscale.check_autoscale)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    # Whole numbers however JSON spells them (2 or 2.0), as the document says (integer()).
    min_replicas: integer(ge=0, le=MAX_REPLICAS) | None = None
    max_replicas: integer(ge=1, le=MAX_REPLICAS) | None = None
    target_inflight: float | None = Field(default=None, gt=0, le=1_000_000)
    scale_up_delay: float | None = Field(default=None, ge=0, le=MAX_DELAY_S)
    scale_down_delay: float | None = Field(default=None, ge=0, le=MAX_DELAY_S)


@router.post("/v1/models/{model_uid}/autoscale")
async def set_autoscale(request: Request, model_uid: str, body: AutoscaleRequest) -> dict[str, Any]:
    changes = body.model_dump(exclude_none=True)
    settings = await request.app.state.cluster.supervisor.set_autoscale(model_uid, changes)
    await audit(request, "model.autoscale", model_uid, changes)
    return settings


class AliasesRequest(BaseModel):
    """The model's aliases from now on (fleet.model_aliases); an empty list removes them."""

    model_config = ConfigDict(extra="forbid")

    aliases: list[AliasName] = Field(max_length=MAX_ALIASES)


@router.put("/v1/models/{model_uid}/aliases")
async def set_aliases(request: Request, model_uid: str, body: AliasesRequest) -> dict[str, Any]:
    names = await request.app.state.cluster.supervisor.set_aliases(model_uid, body.aliases)
    await audit(request, "model.aliases", model_uid, {"aliases": names})
    return {"model_uid": model_uid, "aliases": names}


@router.get("/v1/models/{model_uid}/events")
async def model_events(request: Request, model_uid: str) -> dict[str, Any]:
    return {"data": await request.app.state.cluster.supervisor.model_events(model_uid)}
