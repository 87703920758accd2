"""The workers the supervisor knows: they join (and join again, after either side restarted or
the network came back) with the replicas they still run, send heartbeats, and are lost when
they stop.

A joining worker's replicas are reconciled, so that nothing runs twice or untracked:
- one the cluster tracks (same launch attempt) serves again if it was given up with its worker;
- one of a model of the last run that is not restored yet is kept to be adopted (the
  supervisor restarted, the worker did not: the model keeps serving, nothing is relaunched),
  and so is one whose model's entry the saved state lost (fleet.cluster.supervisor.restore: the entry is
  rebuilt from the launch request that the worker reports with it);
- any other (its model was terminated, or its replica was relaunched elsewhere meanwhile) is
  ended on the worker.
A lost worker's serving replicas are launched again elsewhere
(fleet.cluster.supervisor.replica_supervision)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import xoscar as xo

from fleet.cluster.deadlines import within
from fleet.cluster.supervisor.cluster_state import ClusterState
from fleet.cluster.supervisor.gpu_room import gpu_occupancy
from fleet.cluster.supervisor.records import ModelRecord, ReplicaRecord, WorkerRecord
from fleet.cluster.supervisor.replica_launcher import ReplicaLauncher
from fleet.cluster.supervisor.replica_supervision import ReplicaSupervision
from fleet.settings import control_call_timeout_s, worker_timeout_s

logger = logging.getLogger(__name__)

_STATUS_TIMEOUT_S = 5.0


class WorkerRegistry:
    def __init__(self, cluster: ClusterState, supervision: ReplicaSupervision,
                 launcher: ReplicaLauncher):
        self._cluster = cluster
        self._supervision = supervision
        self._launcher = launcher
        # Ready replicas that workers reported for models not restored yet: uid -> reports.
        self.reported: dict[str, list[dict[str, Any]]] = {}

    async def register(self, address: str, resources: dict[str, Any],
                       replicas: list[dict[str, Any]], adoptable: Callable[[str], bool]) -> None:
        ref = await within(xo.actor_ref(address=address, uid="fleet-worker"),
                           control_call_timeout_s(), f"worker {address}")
        known = address in self._cluster.workers
        self._cluster.workers[address] = WorkerRecord(address=address, ref=ref,
                                                      resources=resources)
        logger.info("worker %s %s (%d CPUs, %d replica(s) running)", address,
                    "joined again" if known else "joined", resources.get("cpu_count", 0),
                    len(replicas))
        for report in replicas:
            await self._reconcile(address, report, adoptable)
        self._supervision.retry_waiting()

    async def _reconcile(self, address: str, report: dict[str, Any],
                         adoptable: Callable[[str], bool]) -> None:
        key, uid = report["key"], report["model_uid"]
        found = self._cluster.find_replica(key)
        if found is not None:
            self._serve_again(*found, address, report)
            return
        if report.get("state") == "ready" and adoptable(uid):
            self.reported.setdefault(uid, []).append({**report, "worker": address})
            return
        why = "its model is not running" if uid not in self._cluster.models else \
            "its replica runs elsewhere now"
        logger.warning("worker %s runs replica %s, which the cluster no longer tracks (%s); "
                       "ending it", address, key, why)
        await self._launcher.end(address, key)

    def _serve_again(self, record: ModelRecord, replica: ReplicaRecord, address: str,
                     report: dict[str, Any]) -> None:
        """The replica's worker came back before the replica was launched anew elsewhere."""
        if replica.state not in ("restarting", "waiting") or report.get("state") != "ready":
            return
        replica.state, replica.worker_address = "ready", address
        replica.pid, replica.ready_at = report.get("pid", replica.pid), time.monotonic()
        replica.failures_in_a_row = max(0, replica.failures_in_a_row - 1)
        logger.info("replica %s is back with its worker %s", replica.replica_uid, address)
        self._cluster.routes.touch(record.uid)

    def take_reported(self, uid: str) -> list[dict[str, Any]]:
        return self.reported.pop(uid, [])

    def heartbeat(self, address: str, resources: dict[str, Any]) -> bool:
        """False for a worker the supervisor does not know (it restarted, or had given the
        worker up): the worker then joins again, with its replicas."""
        worker = self._cluster.workers.get(address)
        if worker is None:
            return False
        worker.resources = resources
        worker.last_heartbeat = time.monotonic()
        return True

    async def watch(self) -> None:
        while True:
            timeout = worker_timeout_s()
            await asyncio.sleep(timeout / 3)
            now = time.monotonic()
            for address, worker in list(self._cluster.workers.items()):
                if now - worker.last_heartbeat > timeout:
                    logger.error("worker %s stopped sending heartbeats; removing it", address)
                    del self._cluster.workers[address]
                    self._lost(address)

    def _lost(self, address: str) -> None:
        for model in list(self._cluster.models.values()):
            for replica in model.replicas:
                if replica.worker_address == address and replica.state == "ready":
                    self._supervision.failed(model, replica, f"worker {address} stopped responding")

    async def rows(self) -> list[dict[str, Any]]:
        """Each worker's own view (its live replica processes), not only the supervisor's."""
        return list(await asyncio.gather(*(self._row(w)
                                           for w in list(self._cluster.workers.values()))))

    async def _row(self, worker: WorkerRecord) -> dict[str, Any]:
        try:
            live = await within(worker.ref.describe(), _STATUS_TIMEOUT_S,
                                f"worker {worker.address}")
            replicas, resources = live["replicas"], live["resources"]
        except Exception as exc:
            logger.warning("worker %s did not answer: %s", worker.address, exc)
            replicas, resources = [], worker.resources
        return {
            "node_type": "Worker",
            "address": worker.address,
            "ip_address": worker.address.rsplit(":", 1)[0],
            "registered_at": int(worker.registered_at),
            "seconds_since_heartbeat": round(time.monotonic() - worker.last_heartbeat, 1),
            "resources": resources,
            "replicas": replicas,
            # Each GPU with the replicas placement put there (several when they share it) and
            # the memory promised to those still loading.
            "gpu_occupancy": gpu_occupancy(worker, self._cluster.models.values()),
        }
