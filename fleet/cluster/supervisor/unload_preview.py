"""The cluster as it would be once some models are unloaded, for the will-it-fit estimate: it
says which models a launch would unload to make room (fleet.cluster.supervisor.elastic) without
unloading them, so it plans on this view instead.

Without those models, a worker holds fewer loaded models (--max-loaded-models) and fewer
replicas' estimates (--max-model-memory); its measured free memory (RAM, or a GPU's) grows by
what their replicas were estimated to take, as their memory is in the worker's last report. A
replica's memory that is not in that report yet (it is loading, or became ready since: it is
only promised, fleet.cluster.supervisor.placement) goes with the replica itself. The real unload
measures instead: the launch plans again on the worker's next report."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

from fleet.cluster.supervisor.records import ModelRecord, ReplicaRecord, WorkerRecord


def as_if_unloaded(workers: Iterable[WorkerRecord], models: Iterable[ModelRecord],
                   gone: Sequence[ModelRecord]) -> tuple[list[WorkerRecord], list[ModelRecord]]:
    """(workers, models) with the models `gone` unloaded; the records given are not changed."""
    uids = {m.uid for m in gone}
    replicas = [r for m in gone for r in m.replicas if r.state in ("launching", "ready")]
    freed = [_freed(w, [r for r in replicas if r.worker_address == w.address]) for w in workers]
    return freed, [m for m in models if m.uid not in uids]


def by_worker(models: Iterable[ModelRecord]) -> dict[str, list[str]]:
    """Worker address -> the uids of those models with a replica there."""
    found: dict[str, set[str]] = {}
    for model in models:
        for replica in model.replicas:
            found.setdefault(replica.worker_address, set()).add(model.uid)
    return {address: sorted(uids) for address, uids in sorted(found.items())}


def _freed(worker: WorkerRecord, replicas: list[ReplicaRecord]) -> WorkerRecord:
    measured = [r for r in replicas if not r.is_promised(worker.last_heartbeat)]
    if not measured:
        return worker
    resources = dict(worker.resources)
    resources["memory_available"] = int(resources.get("memory_available", 0)) + sum(
        r.memory_bytes for r in measured if r.device == "cpu")
    resources["gpus"] = [_gpu_freed(gpu, measured) for gpu in resources.get("gpus") or []]
    return replace(worker, resources=resources)


def _gpu_freed(gpu: dict[str, Any], replicas: list[ReplicaRecord]) -> dict[str, Any]:
    index = int(gpu["index"])
    # A replica on n GPUs holds an equal share of its estimate on each (gpu_room).
    share = sum(r.memory_bytes // len(r.gpus) for r in replicas if index in r.gpus)
    return dict(gpu, memory_free=int(gpu.get("memory_free", 0)) + share) if share else gpu
