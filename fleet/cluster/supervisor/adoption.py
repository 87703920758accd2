"""A model of the last run brought back around the replicas its workers still run.

When the supervisor restarts and its workers do not, their replicas keep running and serving:
the workers report them when they join again, and the model is restored with those replicas
adopted as they are (same processes, same pids) and only the missing ones launched. These helpers
shape that launch: plan only the missing replicas, number the new ones after the adopted."""

from __future__ import annotations

import itertools
from typing import Any

from fleet.cluster.supervisor.placement import Placement
from fleet.cluster.supervisor.records import ReplicaRecord


def wanted(request: dict[str, Any]) -> int:
    return int(request.get("replica") or 1)


def plan_request(request: dict[str, Any], adopted: list[ReplicaRecord]) -> dict[str, Any]:
    """The request to plan: for the replicas still missing (at least one, for the plan to
    resolve the engine and options; none are placed when nothing is missing)."""
    if not adopted:
        return request
    return dict(request, replica=max(1, wanted(request) - len(adopted)))


def complete(request: dict[str, Any], adopted: list[ReplicaRecord]) -> bool:
    return bool(adopted) and len(adopted) >= wanted(request)


def replicas(uid: str, adopted: list[ReplicaRecord],
             placements: list[Placement]) -> list[ReplicaRecord]:
    """The adopted replicas, then one new replica per placement, numbered after them."""
    used = {r.index for r in adopted}
    free = (index for index in itertools.count() if index not in used)
    new = []
    for placement, index in zip(placements, free, strict=False):
        new.append(ReplicaRecord(replica_uid=f"{uid}-{index}", index=index,
                                 worker_address=placement.worker.address, device=placement.device,
                                 memory_bytes=placement.memory_bytes,
                                 gpus=list(placement.gpus)))
    return [*adopted, *new]


def record_request(planned: dict[str, Any], asked: dict[str, Any], uid: str) -> dict[str, Any]:
    """What the saved state keeps: the checked request, with the replica count asked for."""
    request = dict(planned, model_uid=uid)
    if "replica" in asked:
        request["replica"] = asked["replica"]
    else:
        request.pop("replica", None)
    return request
