"""The cluster's weights caches, seen from the supervisor: every worker keeps its own
(fleet.cluster.weights.cache_inventory), so listing and removing ask each worker, or those at
`worker_ip`, as Xinference's `cached` and `remove-cache` do.

The supervisor adds what only it knows: which catalogue variant each cache folder holds (name,
type, format, size, quantization, engines that run it), from its catalogue, custom
registrations included."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fleet.catalogue.registry import Catalogue
from fleet.catalogue.schemas import MODEL_TYPES, BaseFamily, ModelSpec
from fleet.cluster.deadlines import within
from fleet.cluster.supervisor.placement import workers_at
from fleet.cluster.supervisor.records import WorkerRecord
from fleet.cluster.weights.cache_inventory import check_model_version
from fleet.cluster.weights.download import cache_folder
from fleet.engines.registry import ENGINES
from fleet.errors import BadRequest, Conflict, FleetError, NotFound
from fleet.settings import control_call_timeout_s

logger = logging.getLogger(__name__)

# Walking a large cache takes a while; a worker silent for this long is reported, not waited on.
_LIST_TIMEOUT_S = 60.0


def _folder_quantization(spec: ModelSpec, quantization: str) -> str:
    """A GGUF folder holds one quantization; any other folder holds the spec's weights, from
    which every listed quantization loads: "none" names the weights as stored."""
    if spec.model_format == "gguf" or len(spec.quantizations) == 1:
        return quantization
    return "none" if "none" in spec.quantizations else ",".join(spec.quantizations)


def _variant(family: BaseFamily, spec: ModelSpec, quantization: str) -> dict[str, Any]:
    return {
        "model_name": family.model_name,
        "model_type": family.model_type,
        "model_format": spec.model_format,
        "model_size_in_billions": spec.model_size_in_billions,
        "quantization": _folder_quantization(spec, quantization),
        "model_engine": [e.name for e in ENGINES if e.why_not(family, spec) is None] or None,
    }


def known_versions(catalogue: Catalogue) -> dict[str, dict[str, Any]]:
    """Cache folder name -> the catalogue variant that fleet.cluster.weights.download stores there."""
    known: dict[str, dict[str, Any]] = {}
    for model_type in MODEL_TYPES:
        for family in catalogue.families(model_type).values():
            for spec in family.model_specs:
                quantizations = spec.quantizations if spec.model_format == "gguf" \
                    else spec.quantizations[:1]
                for quantization in quantizations:
                    name = cache_folder(family, spec, quantization).name
                    if name not in known:
                        known[name] = _variant(family, spec, quantization)
    return known


def _targets(workers: list[WorkerRecord], worker_ip: str | None) -> list[WorkerRecord]:
    chosen = workers_at(workers, worker_ip)
    if worker_ip and not chosen:
        known = ", ".join(w.address for w in workers) or "none"
        raise BadRequest(f"no worker at {worker_ip}; workers: {known}", code="worker_not_found")
    return chosen


async def list_cached(workers: list[WorkerRecord], catalogue: Catalogue, model_name: str | None,
                      worker_ip: str | None) -> dict[str, Any]:
    """`{"list": entries, "unreachable_workers": [...]}`: a worker that does not answer is named
    rather than silently missing from the list."""
    targets = _targets(workers, worker_ip)
    known = known_versions(catalogue)
    results = await asyncio.gather(
        *(within(w.ref.cached_models(known, model_name), _LIST_TIMEOUT_S, f"worker {w.address}")
          for w in targets), return_exceptions=True)
    entries: list[dict[str, Any]] = []
    unreachable = []
    for worker, result in zip(targets, results, strict=True):
        if isinstance(result, FleetError):
            raise result
        if isinstance(result, BaseException):
            logger.warning("worker %s did not list its cache: %r", worker.address, result)
            unreachable.append({"address": worker.address, "error": repr(result)})
            continue
        entries.extend(result)
    entries.sort(key=lambda e: (str(e["model_name"]), e["model_version"], e["actor_ip_address"]))
    return {"list": entries, "unreachable_workers": unreachable}


async def _holders(workers: list[WorkerRecord], model_version: str,
                   worker_ip: str | None) -> list[tuple[WorkerRecord, dict[str, Any]]]:
    """The workers (of those asked) that hold the entry, with its path and users there."""
    check_model_version(model_version)  # refuse a hostile value before any worker sees it
    targets = _targets(workers, worker_ip)
    probes = await asyncio.gather(*(within(w.ref.cache_probe(model_version),
                                           control_call_timeout_s(), f"worker {w.address}")
                                    for w in targets))
    return [(w, p) for w, p in zip(targets, probes, strict=True) if p["path"]]


async def deletable(workers: list[WorkerRecord], model_version: str,
                    worker_ip: str | None) -> dict[str, Any]:
    """Xinference's `/v1/cache/models/files` answer: the paths a removal would delete (empty
    for an unknown version: Xinference's CLI says so itself), plus the models reading them."""
    holders = await _holders(workers, model_version, worker_ip)
    users = sorted({uid for _, probe in holders for uid in probe["in_use_by"]})
    return {"model_version": model_version, "worker_ip": worker_ip,
            "paths": [probe["path"] for _, probe in holders], "in_use_by": users}


async def remove(workers: list[WorkerRecord], model_version: str, worker_ip: str | None,
                 force: bool) -> dict[str, Any]:
    """Delete the entry from every worker asked that holds it. Refused as a whole (409) when a
    running replica reads it on any of them, unless forced, so that nothing is half-removed."""
    holders = await _holders(workers, model_version, worker_ip)
    if not holders:
        where = f" on worker {worker_ip}" if worker_ip else ""
        raise NotFound(f"no cached model {model_version!r}{where}; `fleet cached` lists them",
                       code="cache_not_found")
    busy = [f"{', '.join(p['in_use_by'])} on {w.address}" for w, p in holders if p["in_use_by"]]
    if busy and not force:
        raise Conflict(f"cached model {model_version!r} is in use by {'; '.join(busy)}; "
                       "terminate it first, or force the removal", code="cache_in_use")
    removed = []
    for worker, _ in holders:
        # Each worker checks again: a launch may have started since the probe.
        done = await within(worker.ref.remove_cache(model_version, force),
                            control_call_timeout_s(), f"worker {worker.address}")
        removed.append({**done, "actor_ip_address": worker.address})
    return {"result": True, "model_version": model_version, "removed": removed}
