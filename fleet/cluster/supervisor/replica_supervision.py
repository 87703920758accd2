"""Replicas that fail while serving are launched again.

A replica is down when the worker reports that its process exited or stopped answering
(fleet.cluster.worker.replica_watch), or when its worker is lost. It is marked `restarting` with the
reason (the API stops routing to it at once: its route changes), then launched again as a new
process: on the same worker while that worker is there (its memory just came free) and has not
failed it repeatedly, else on another with room, else it is `waiting` for capacity and tried
again when a worker joins. Restarts back off exponentially (the first is immediate); after
`restart_limit` failures in a row it stays `failed`, with all its reasons. A replica that
served for `restart_reset_s` counts its failures from zero again."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from fleet.cluster.supervisor.cluster_state import ClusterState
from fleet.cluster.supervisor.placement import Placement
from fleet.cluster.supervisor.records import ModelRecord, ReplicaRecord
from fleet.cluster.supervisor.replica_launcher import ReplicaLauncher
from fleet.errors import FleetError
from fleet.settings import (
    restart_backoff_max_s,
    restart_backoff_s,
    restart_limit,
    restart_reset_s,
)

logger = logging.getLogger(__name__)

# After this many failures in a row on one worker, another worker with room is preferred.
_MOVE_AFTER = 2

# (record, replica, worker to avoid or None) -> a placement elsewhere; raises when none has room.
PlaceElsewhere = Callable[[ModelRecord, ReplicaRecord, str | None], Awaitable[Placement]]


def backoff_s(failures_in_a_row: int) -> float:
    """0 for the first failure, then the base doubling: 1, 2, 4 ... capped."""
    if failures_in_a_row <= 1:
        return 0.0
    return min(restart_backoff_max_s(), restart_backoff_s() * 2 ** (failures_in_a_row - 2))


def _reason(error: BaseException) -> str:
    return error.message if isinstance(error, FleetError) else f"{type(error).__name__}: {error}"


class ReplicaSupervision:
    def __init__(self, cluster: ClusterState, launcher: ReplicaLauncher,
                 place_elsewhere: PlaceElsewhere):
        self._cluster = cluster
        self._launcher = launcher
        self._place_elsewhere = place_elsewhere
        # Replica restarts in all since start, per model (fleet_replica_restarts_total).
        self.restarts_total: dict[str, int] = {}

    def replica_down(self, worker_key: str, reason: str) -> bool:
        """A worker's report; False when it is about no current, serving replica (a launch
        attempt already replaced, or one still loading: its load fails and says so)."""
        found = self._cluster.find_replica(worker_key)
        if found is None:
            return False
        record, replica = found
        if replica.state == "launching":
            replica.down_reason = reason
            return False
        if replica.state != "ready":
            return False
        self.failed(record, replica, reason)
        return True

    def failed(self, record: ModelRecord, replica: ReplicaRecord, reason: str) -> None:
        """`replica` stopped serving: restart it (after its back-off) or give up on it."""
        if replica.ready_at is not None and time.monotonic() - replica.ready_at > restart_reset_s():
            replica.failures_in_a_row = 0
        replica.failures_in_a_row += 1
        replica.note_failure(reason)
        self._cluster.routes.touch(record.uid)
        if replica.failures_in_a_row > restart_limit():
            replica.state = "failed"
            replica.error = (f"gave up after {replica.failures_in_a_row} failures in a row: "
                             + "; ".join(replica.failures))
            logger.error("replica %s: %s", replica.replica_uid, replica.error)
            return
        replica.state = "restarting"
        delay = backoff_s(replica.failures_in_a_row)
        logger.warning("replica %s is down (%s); restarting it in %.1f s", replica.replica_uid,
                       reason, delay)
        record.track(asyncio.create_task(self._restart(record, replica, delay)))

    def retry_waiting(self) -> None:
        """A worker joined, or capacity may have come free: try the replicas waiting for it."""
        for record in list(self._cluster.models.values()):
            for replica in record.replicas:
                if replica.state == "waiting":
                    replica.state = "restarting"
                    record.track(asyncio.create_task(self._restart(record, replica, 0.0)))

    async def _restart(self, record: ModelRecord, replica: ReplicaRecord, delay: float) -> None:
        await asyncio.sleep(delay)
        async with self._cluster.locks.planning, self._cluster.locks.hold(record.uid):
            if not self._cluster.current(record, replica) or replica.state != "restarting":
                return
            try:
                placement = await self._placement(record, replica)
            except Exception as exc:  # no worker with room (or planning itself failed)
                replica.state = "waiting"
                replica.error = f"waiting for capacity: {_reason(exc)} (after: {replica.error})"
                self._cluster.routes.touch(record.uid)
                logger.warning("replica %s: %s", replica.replica_uid, replica.error)
                return
            if replica.state != "restarting":  # its worker came back with it meanwhile
                return
            replica.new_attempt(placement.worker.address, placement.device,
                                placement.memory_bytes, placement.gpus)
            replica.restarts += 1
            self.restarts_total[record.uid] = self.restarts_total.get(record.uid, 0) + 1
        await self._launch_again(record, replica)

    async def _placement(self, record: ModelRecord, replica: ReplicaRecord) -> Placement:
        worker = self._cluster.workers.get(replica.worker_address)
        if worker is not None and replica.failures_in_a_row <= _MOVE_AFTER:
            return Placement(worker, replica.device, replica.memory_bytes, tuple(replica.gpus))
        if worker is not None:  # it failed here again and again: elsewhere if there is room
            try:
                return await self._place_elsewhere(record, replica, worker.address)
            except Exception as exc:  # no room elsewhere: here again, then
                logger.info("replica %s stays on %s: %s", replica.replica_uid, worker.address,
                            _reason(exc))
                return Placement(worker, replica.device, replica.memory_bytes, tuple(replica.gpus))
        return await self._place_elsewhere(record, replica, replica.worker_address)

    async def _launch_again(self, record: ModelRecord, replica: ReplicaRecord) -> None:
        attempt = replica.worker_key
        try:
            await self._launcher.start(record, replica)
        except asyncio.CancelledError:
            raise  # terminated meanwhile: terminate ends the process
        except Exception as exc:
            if replica.worker_key != attempt or not self._cluster.current(record, replica):
                return
            reason = replica.down_reason or _reason(exc)
            await self._launcher.stop(replica)
            self.failed(record, replica, f"restart failed: {reason}")
            return
        logger.info("replica %s is back on %s (pid %s, restart %d)", replica.replica_uid,
                    replica.worker_address, replica.pid, replica.restarts)
        self._cluster.routes.touch(record.uid)
