"""Starting and stopping one replica: a process on its worker, its model loaded; and, to stop it,
its requests finished first (drained), then its process ended. Every call to another process
here has a time limit (fleet.cluster.deadlines)."""

from __future__ import annotations

import asyncio
import logging
import time

import xoscar as xo

from fleet.cluster.deadlines import within
from fleet.cluster.supervisor.launch_plan import engine_options
from fleet.cluster.supervisor.records import ModelRecord, ReplicaRecord, WorkerRecord
from fleet.engines.registry import engine_by_name
from fleet.errors import Unavailable
from fleet.messages import ReplicaLaunch
from fleet.settings import control_call_timeout_s, load_timeout_s

logger = logging.getLogger(__name__)

# Starting a process imports the engine libraries (seconds, more on a busy machine).
_PROCESS_START_FACTOR = 4
_DRAIN_POLL_S = 0.1


def launch_payload(record: ModelRecord, replica: ReplicaRecord | None = None) -> ReplicaLaunch:
    """What a worker needs to start one replica of `record`: on the GPUs placement chose for
    `replica` (else those the launch pinned, or the worker's choice), each promised an equal
    share of its estimate (none: the replica holds them whole, fleet.cluster.supervisor.gpu_room)."""
    request = record.request
    engine = engine_by_name(record.engine)
    gpus = list(replica.gpus) if replica is not None and replica.gpus else None
    share = replica.memory_bytes // len(gpus) if gpus and replica and replica.memory_bytes else None
    return ReplicaLaunch(
        model_uid=record.uid,
        family=record.family,
        spec=record.spec,
        quantization=record.quantization,
        model_engine=record.engine,
        # Validated against the same model when the launch was planned: this cannot fail.
        engine_options=engine.typed_options(record.family.model_type, engine_options(request)),
        model_path=request.get("model_path"),
        n_gpu=request.get("n_gpu", "auto"),
        gpu_idx=gpus if gpus is not None else request.get("gpu_idx"),
        gpu_memory_bytes=share,
        envs={str(k): str(v) for k, v in (request.get("envs") or {}).items()},
        request_limits=request.get("request_limits"),
        request=request,
    )


class ReplicaLauncher:
    def __init__(self, workers: dict[str, WorkerRecord]):
        self._workers = workers

    async def start(self, record: ModelRecord, replica: ReplicaRecord) -> None:
        """A process for the replica on its worker, and the model loaded in it: ready."""
        worker = self._workers.get(replica.worker_address)
        if worker is None:
            raise Unavailable(f"worker {replica.worker_address} is gone")
        placed = await within(worker.ref.launch_replica(replica.worker_key, launch_payload(record, replica)),
                              control_call_timeout_s() * _PROCESS_START_FACTOR,
                              f"worker {replica.worker_address}")
        replica.actor_address, replica.actor_uid = placed["address"], placed["actor_uid"]
        replica.gpus, replica.pid = placed["gpus"], placed.get("pid")
        model_ref = await within(xo.actor_ref(address=replica.actor_address, uid=replica.actor_uid),
                                 control_call_timeout_s(), f"replica {replica.replica_uid}")
        await within(model_ref.load(), load_timeout_s(), f"replica {replica.replica_uid}'s load")
        replica.state = "ready"
        replica.ready_at = time.monotonic()

    async def stop(self, replica: ReplicaRecord, drain_s: float = 0.0) -> None:
        """End the replica's process, after its requests finish (at most `drain_s` seconds)."""
        if drain_s > 0 and replica.actor_address and replica.ready_at is not None:
            await self._drain(replica, drain_s)
        worker = self._workers.get(replica.worker_address)
        if worker is None:
            return
        try:
            await within(worker.ref.terminate_replica(replica.worker_key),
                         control_call_timeout_s(), f"worker {replica.worker_address}")
        except Exception as exc:
            logger.warning("terminating %s: %s", replica.replica_uid, exc)

    async def end(self, worker_address: str, worker_key: str) -> None:
        """End a replica process the cluster does not track (a duplicate, or one of a model
        that is gone), by its key on its worker."""
        worker = self._workers.get(worker_address)
        if worker is None:
            return
        try:
            await within(worker.ref.terminate_replica(worker_key), control_call_timeout_s(),
                         f"worker {worker_address}")
        except Exception as exc:
            logger.warning("ending %s on %s: %s", worker_key, worker_address, exc)

    async def _drain(self, replica: ReplicaRecord, drain_s: float) -> None:
        """Wait until the replica has no request in progress (the API has stopped sending it
        new ones: its route changed before this), or until `drain_s` has passed."""
        deadline = time.monotonic() + drain_s
        try:
            ref = await within(xo.actor_ref(address=replica.actor_address, uid=replica.actor_uid),
                               control_call_timeout_s(), f"replica {replica.replica_uid}")
            # Requests the API sent just before it heard of the change are still on their way.
            await asyncio.sleep(_DRAIN_POLL_S)
            while time.monotonic() < deadline:
                left = deadline - time.monotonic()
                if not await within(ref.in_progress(), max(0.1, left), "the replica"):
                    return
                await asyncio.sleep(_DRAIN_POLL_S)
            logger.warning("replica %s still had requests after %.0f s of draining; stopping it",
                           replica.replica_uid, drain_s)
        except Exception as exc:  # gone already, or hung: nothing to wait for
            logger.info("draining %s: %s", replica.replica_uid, exc)
