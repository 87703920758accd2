"""Replicas added to and removed from a model while it serves (Xinference's
`POST /v1/models/{uid}/replicas` and `DELETE /v1/models/{uid}/replicas/{replica_id}`, and
`fleet scale`).

Added replicas are placed like a launch's (memory counted, refused with the numbers when none
fits) and join the model's routes once loaded. A removed replica drains: it leaves the routes
first, finishes the requests it has (at most `drain_timeout_s`), then its process ends. The new
replica count is written to the saved state before either is visible, so a restart brings back
the count the user last saw accepted."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fleet.autoscale import AutoscaleSettings
from fleet.cluster.supervisor.cluster_state import ClusterState
from fleet.cluster.supervisor.records import ModelRecord, ReplicaRecord
from fleet.cluster.supervisor.replica_launcher import ReplicaLauncher
from fleet.cluster.supervisor.restore import Restorer
from fleet.errors import BadRequest, Conflict, FleetError, LaunchFailed, NotFound, StateNotSaved
from fleet.limits import MAX_REPLICAS
from fleet.settings import drain_timeout_s

logger = logging.getLogger(__name__)

Plan = Callable[[dict[str, Any]], Awaitable[Any]]  # a launch request -> its LaunchPlan
Terminate = Callable[[str], Awaitable[None]]


def check_overrides(record: ModelRecord, overrides: dict[str, Any]) -> None:
    """Xinference lets new replicas differ from the model (another engine, GPU count or worker);
    Fleet's replicas of one model are alike, so a different value is refused with the reason
    rather than ignored."""
    engine = overrides.get("model_engine")
    if engine is not None and str(engine).lower() != record.engine.lower():
        raise BadRequest(f"model {record.uid} runs on {record.engine}; its replicas all do "
                         f"(terminate and relaunch it to use {engine})", code="unsupported_option")
    n_gpu = overrides.get("n_gpu")
    if n_gpu is not None and str(n_gpu) != str(record.request.get("n_gpu", "auto")):
        raise BadRequest(f"model {record.uid} was launched with n_gpu="
                         f"{record.request.get('n_gpu', 'auto')}; its replicas all are",
                         code="unsupported_option")
    if overrides.get("replica_config") is not None:
        raise BadRequest("replica_config has no counterpart in Fleet: new replicas are placed on "
                         "the workers with room for them", code="unsupported_option")


def check_bounds(record: ModelRecord, count: int, adding: bool) -> None:
    """A model that autoscales keeps its replicas within its bounds: a change by hand past them
    is refused (it would be undone at the next look), naming the way to move them. A step
    towards them passes (the autoscaler's own, after the bounds were changed)."""
    settings = AutoscaleSettings.of(record.request, record.family.model_type)
    if settings is None:
        return
    if count > settings.max_replicas if adding else count < max(settings.min_replicas, 1):
        raise BadRequest(f"model {record.uid} autoscales between {settings.min_replicas} and "
                         f"{settings.max_replicas} replicas; change its bounds (fleet autoscale, "
                         f"POST /v1/models/{record.uid}/autoscale) to give it {count}",
                         code="outside_autoscale_bounds")


class Scaler:
    def __init__(self, cluster: ClusterState, launcher: ReplicaLauncher,
                 restorer: Callable[[], Restorer], plan: Plan, terminate: Terminate):
        self._cluster = cluster
        self._launcher = launcher
        self._restorer = restorer
        self._plan = plan
        self._terminate = terminate

    def _scalable(self, uid: str) -> ModelRecord:
        record = self._cluster.models.get(uid)
        if record is None:
            raise NotFound(f"model {uid!r} is not running", code="model_not_found")
        if record.stand_in or record.state in ("launching", "terminating", "idle"):
            raise Conflict(f"model {uid} is {record.state}; change its replicas once it is "
                           "running", code="model_busy")
        return record

    async def add(self, uid: str, count: int, overrides: dict[str, Any]) -> list[dict[str, Any]]:
        """`count` new replicas, each ready before this returns: Xinference's answer for each."""
        if count < 1:
            raise BadRequest(f"replica must be at least 1, got {count}")
        async with self._cluster.locks.planning, self._cluster.locks.hold(uid):
            record = self._scalable(uid)
            check_overrides(record, overrides)
            check_bounds(record, len(record.replicas) + count, adding=True)
            if len(record.replicas) + count > MAX_REPLICAS:  # as a launch is refused past it
                raise BadRequest(f"model {uid} has {len(record.replicas)} replica(s); {count} more "
                                 f"would pass the {MAX_REPLICAS} replicas a model may have",
                                 code="too_many_replicas")
            plan = await self._plan(dict(record.request, replica=count))
            if plan.refusal is not None:
                raise plan.refusal
            first = max((r.index for r in record.replicas), default=-1) + 1
            added = [ReplicaRecord(replica_uid=f"{uid}-{first + n}", index=first + n,
                                   worker_address=p.worker.address, device=p.device,
                                   memory_bytes=p.memory_bytes, gpus=list(p.gpus))
                     for n, p in enumerate(plan.placements)]
            request = dict(record.request, replica=len(record.replicas) + count)
            self._restorer().save({uid: request})  # before the replicas exist
            record.request = request
            record.replicas.extend(added)
        logger.info("adding %d replica(s) to %s", count, uid)
        tasks = [asyncio.create_task(self._launcher.start(record, r)) for r in added]
        for task in tasks:
            record.track(task)  # terminate cancels them
        results = await asyncio.gather(*tasks, return_exceptions=True)
        failed = [(r, e) for r, e in zip(added, results, strict=True) if isinstance(e, BaseException)]
        if failed:
            await self._drop(record, [r for r, _ in failed])
            first_error = failed[0][1]
            reason = first_error.message if isinstance(first_error, FleetError) else repr(first_error)
            raise LaunchFailed(f"{len(failed)} of {count} new replica(s) of {uid} failed: {reason}")
        self._cluster.routes.touch(uid)
        return [{"replica_id": r.index, "replica_model_uid": r.replica_uid,
                 "worker_address": r.worker_address} for r in added]

    async def _drop(self, record: ModelRecord, replicas: list[ReplicaRecord]) -> None:
        """New replicas that did not start: their processes go, and the count goes back."""
        async with self._cluster.locks.hold(record.uid):
            await asyncio.gather(*(self._launcher.stop(r) for r in replicas))
            if not self._cluster.current(record):
                return
            record.replicas = [r for r in record.replicas if r not in replicas]
            request = dict(record.request, replica=len(record.replicas))
            try:
                self._restorer().save({record.uid: request})
            except StateNotSaved:  # logged: a restart will launch one replica more than now
                pass
            record.request = request

    async def remove(self, uid: str, replica_id: int) -> int:
        """Drain and end one replica; the replicas left. The last one goes with its model."""
        async with self._cluster.locks.hold(uid):
            record = self._scalable(uid)
            replica = next((r for r in record.replicas if r.index == replica_id), None)
            if replica is None:
                known = ", ".join(str(r.index) for r in record.replicas)
                raise NotFound(f"model {uid} has no replica {replica_id} (it has {known})",
                               code="replica_not_found")
            last = len(record.replicas) == 1
            if not last:
                check_bounds(record, len(record.replicas) - 1, adding=False)
                await self._remove(record, replica)
                return len(record.replicas)
        await self._terminate(uid)
        return 0

    async def remove_newest(self, uid: str) -> None:
        """Autoscaling's step down: drain and end the replica with the highest index; never the
        last one (a model goes to zero as an idle unload, not a terminate)."""
        async with self._cluster.locks.hold(uid):
            record = self._scalable(uid)
            serving = [r for r in record.replicas if r.state not in ("draining", "terminating")]
            if len(serving) < 2:
                raise Conflict(f"model {uid} has {len(serving)} replica(s); the last one stays",
                               code="model_busy")
            await self._remove(record, max(serving, key=lambda r: r.index))

    async def _remove(self, record: ModelRecord, replica: ReplicaRecord) -> None:
        request = dict(record.request, replica=len(record.replicas) - 1)
        self._restorer().save({record.uid: request})  # before it leaves
        record.request = request
        serving = replica.state == "ready"
        replica.state = "draining"
        self._cluster.routes.touch(record.uid)  # the API stops sending it requests
        logger.info("removing replica %s (draining it first)", replica.replica_uid)
        await self._launcher.stop(replica, drain_timeout_s() if serving else 0.0)
        record.replicas.remove(replica)
        self._cluster.routes.touch(record.uid)
