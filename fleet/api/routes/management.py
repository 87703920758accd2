"""Xinference's management API: models, registrations, engines, cluster."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request

from fleet import __version__
from fleet.api.audit import audit
from fleet.api.auth.middleware import auth_on, check_model, visible_models
from fleet.api.protocol.bodies import RegisterRequest
from fleet.catalogue.schemas import MODEL_TYPES, normalize_model_type
from fleet.errors import BadRequest
from fleet.launch_request import LaunchRequest, launch_body

router = APIRouter()

# A model type in a path: documented as the canonical names; `_model_type` also takes them in
# any case (`llm`), as Xinference does, and refuses anything else with a 400 that lists them.
ModelTypePath = Annotated[str, Path(description="LLM, embedding, rerank, image or audio "
                                                "(in any case)",
                                    json_schema_extra={"enum": list(MODEL_TYPES)})]


def _cluster(request: Request) -> Any:
    return request.app.state.cluster


def _model_type(value: str) -> str:
    try:
        return normalize_model_type(value)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


@router.get("/status")
async def status(request: Request) -> dict[str, Any]:
    """A cheap health check: answers without calling any actor."""
    uptime = round(time.time() - request.app.state.started_at, 1)
    return {"status": "ok", "version": __version__, "uptime_s": uptime}


@router.get("/v1/cluster/auth")
async def cluster_auth(request: Request) -> dict[str, bool]:
    """Whether API keys are on: Xinference's client asks first, then sends its key."""
    return {"auth": auth_on(request.app.state.auth)}


@router.get("/v1/address")
async def supervisor_address(request: Request) -> str:
    """The supervisor's actor address, which a joining worker needs."""
    return request.app.state.supervisor_address


@router.get("/v1/cluster/info")
async def cluster_info(request: Request) -> list[dict[str, Any]]:
    supervisor = _cluster(request).supervisor
    workers = await supervisor.list_workers()
    head = {"node_type": "Supervisor", "address": request.app.state.supervisor_address,
            "ip_address": request.app.state.supervisor_address.rsplit(":", 1)[0],
            "version": __version__, **(await supervisor.status())}
    return [head, *workers]


@router.get("/v1/workers")
async def workers(request: Request) -> list[dict[str, Any]]:
    return await _cluster(request).supervisor.list_workers()


@router.post("/v1/models")
async def launch_model(
    request: Request, body: LaunchRequest, wait_ready: bool = Query(True)
) -> dict[str, str]:
    check_model(request.scope, body.model_uid or body.model_name)  # a key limited to models
    cluster = _cluster(request)
    uid = await cluster.supervisor.launch_model(launch_body(body), wait_ready)
    cluster.router.invalidate(uid)
    await audit(request, "model.launch", uid, body.model_dump(
        mode="json", include={"model_name", "model_type", "model_engine", "replica"}))
    return {"model_uid": uid}


@router.get("/v1/models")
async def list_models(request: Request) -> dict[str, Any]:
    models = await _cluster(request).supervisor.list_models()
    # An alias is listed as its model under the alias's name, with `alias_of`: an OpenAI client
    # picks a model by `id` from this list (fleet.model_aliases).
    aliases = [{**model, "id": alias, "alias_of": model["id"]}
               for model in models for alias in model.get("aliases") or ()]
    return {"object": "list", "data": visible_models(request.scope, [*models, *aliases], "id")}


@router.get("/v1/models/estimate")
async def estimate_launch(request: Request, model_name: str = Query(min_length=1)) -> dict[str, Any]:
    """A dry run of a launch: the engine it would get and why, the memory one replica needs,
    the worker(s) it would go to or why none has room, and the models it would unload to make
    room (`would_unload`: worker -> uids). Launches nothing. The query takes
    the launch's arguments and is read as a launch body, so the two cannot disagree.
    (Declared before `/v1/models/{model_uid}`, which would otherwise take "estimate" for a
    model uid.)"""
    query = request.query_params
    arguments = {key: query.getlist(key) if len(query.getlist(key)) > 1 else value
                 for key, value in query.items()}
    body = LaunchRequest.model_validate(_query_integers(arguments))
    return await _cluster(request).supervisor.estimate_launch(launch_body(body))


# A launch body's replica bounds are strict integers (a JSON 1.5 or true is refused, not
# rounded); a query holds only strings, so their digits are read as the integer they spell.
_STRICT_INTEGER_FIELDS = ("min_replicas", "max_replicas")


def _query_integers(arguments: dict[str, Any]) -> dict[str, Any]:
    return {key: int(value) if key in _STRICT_INTEGER_FIELDS and isinstance(value, str)
            and value.isascii() and value.isdigit() else value
            for key, value in arguments.items()}


@router.get("/v1/models/{model_uid}")
async def describe_model(request: Request, model_uid: str) -> dict[str, Any]:
    return await _cluster(request).supervisor.describe_model(model_uid)


@router.delete("/v1/models/{model_uid}")
async def terminate_model(request: Request, model_uid: str) -> dict[str, Any]:
    cluster = _cluster(request)
    await cluster.supervisor.terminate_model(model_uid)
    cluster.router.invalidate(model_uid)
    cluster.metrics.forget_model(model_uid)
    await audit(request, "model.terminate", model_uid)
    return {}


@router.post("/v1/models/{model_uid}/cancel")
async def cancel_launch(request: Request, model_uid: str) -> dict[str, Any]:
    return await terminate_model(request, model_uid)


@router.get("/v1/models/{model_uid}/progress")
async def launch_progress(request: Request, model_uid: str) -> dict[str, Any]:
    return await _cluster(request).supervisor.launch_progress(model_uid)


@router.get("/v1/models/{model_uid}/replicas")
async def replicas(request: Request, model_uid: str) -> list[dict[str, Any]]:
    return await _cluster(request).supervisor.replica_status(model_uid)


@router.post("/v1/model_registrations/{model_type}")
async def register_model(request: Request, model_type: ModelTypePath, body: RegisterRequest) -> dict:
    await _cluster(request).supervisor.register_model(_model_type(model_type), body.family,
                                                      body.persist)
    await audit(request, "registration.register",
                f"{_model_type(model_type)}/{body.family.get('model_name')}",
                {"persist": body.persist})
    return {}


@router.get("/v1/model_registrations/{model_type}")
async def list_registrations(
    request: Request, model_type: ModelTypePath, detailed: bool = False
) -> list[dict[str, Any]]:
    return await _cluster(request).supervisor.list_registrations(_model_type(model_type), detailed)


@router.get("/v1/model_registrations/{model_type}/{model_name}")
async def get_registration(request: Request, model_type: ModelTypePath, model_name: str) -> dict:
    return await _cluster(request).supervisor.get_registration(_model_type(model_type), model_name)


@router.delete("/v1/model_registrations/{model_type}/{model_name}")
async def unregister_model(request: Request, model_type: ModelTypePath, model_name: str) -> dict:
    await _cluster(request).supervisor.unregister_model(_model_type(model_type), model_name)
    await audit(request, "registration.unregister", f"{_model_type(model_type)}/{model_name}")
    return {}


@router.get("/v1/engines/{model_name}")
async def engines(request: Request, model_name: str, detailed: bool = False) -> Any:
    return await _cluster(request).supervisor.engines_for(model_name, None, detailed)


@router.get("/v1/engines/{model_type}/{model_name}")
async def engines_typed(request: Request, model_type: ModelTypePath, model_name: str,
                        detailed: bool = False) -> Any:
    return await _cluster(request).supervisor.engines_for(
        model_name, _model_type(model_type), detailed
    )
