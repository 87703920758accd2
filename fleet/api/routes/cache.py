"""The weights caches of the cluster's workers, in Xinference's routes and shapes, so that
`xinference cached`, `xinference remove-cache` and xinference-client's `list_cached_models`,
`list_deletable_models` and `confirm_and_remove_model` work against Fleet unchanged.

Each cached entry (GET /v1/cache/models -> `{"list": [...]}`) carries Xinference's fields:
model_name, model_type, model_engine (engines that can run it), model_size_in_billions,
model_format, quantization, model_version (the cache folder's name, which removal takes), path,
real_path (where a linked entry points; None otherwise), actor_ip_address (the worker's
address) and size_bytes (bytes of its files, what removing it frees). Fleet adds file_count
(model files, bookkeeping left out), in_use_by (uids of running models that read it), complete
(False for a partial download) and known (whether the catalogue says what it holds); the answer
adds unreachable_workers. For an entry the catalogue does not know, model_name is the folder's
name and the variant fields are null."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request

from fleet.api.audit import audit
from fleet.cluster.weights.cache_inventory import MAX_MODEL_VERSION, MODEL_VERSION_PATTERN

router = APIRouter()


def _model_version() -> Any:
    """Required, and documented as the supervisor checks it (fleet.cluster.weights.cache_inventory),
    which refuses what is not one folder name with the code `invalid_model_version`."""
    return Query(description="The cache entry: a `model_version` of GET /v1/cache/models",
                 json_schema_extra={"minLength": 1, "maxLength": MAX_MODEL_VERSION,
                                    "pattern": MODEL_VERSION_PATTERN})


def _supervisor(request: Request) -> Any:
    return request.app.state.cluster.supervisor


@router.get("/v1/cache/models")
async def list_cached_models(request: Request, model_name: str | None = Query(None),
                             worker_ip: str | None = Query(None)) -> dict[str, Any]:
    return await _supervisor(request).list_cached_models(model_name or None, worker_ip or None)


@router.get("/v1/cache/models/files")
async def list_deletable_models(request: Request, model_version: str = _model_version(),
                                worker_ip: str | None = Query(None)) -> dict[str, Any]:
    """What a removal would delete: `{"model_version", "worker_ip", "paths", "in_use_by"}`."""
    return await _supervisor(request).list_deletable_models(model_version, worker_ip or None)


@router.delete("/v1/cache/models")
async def remove_cached_model(request: Request, model_version: str = _model_version(),
                              worker_ip: str | None = Query(None),
                              force: bool = Query(False)) -> dict[str, Any]:
    """`{"result": true, "removed": [...]}`; 404 for an unknown model_version, 409 while a
    running model reads it (unless `force=true`), 400 for a value that is not a folder name."""
    removed = await _supervisor(request).remove_cached_model(model_version, worker_ip or None,
                                                             force)
    await audit(request, "cache.remove", model_version,
                {"worker_ip": worker_ip or None, "force": force,
                 "removed": removed.get("removed") if isinstance(removed, dict) else None})
    return removed
