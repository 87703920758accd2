"""What the supervisor knows, shared by the pieces that act on it (launching, supervision of
replicas, scaling, restore): the workers, the models and their replicas, the route events the
API listens to, and the per-model locks."""

from __future__ import annotations

from dataclasses import dataclass, field

from fleet.cluster.supervisor.model_locks import ModelLocks
from fleet.cluster.supervisor.records import ModelRecord, ReplicaRecord, WorkerRecord
from fleet.cluster.supervisor.route_events import RouteEvents


@dataclass
class ClusterState:
    workers: dict[str, WorkerRecord] = field(default_factory=dict)
    models: dict[str, ModelRecord] = field(default_factory=dict)
    routes: RouteEvents = field(default_factory=RouteEvents)
    locks: ModelLocks = field(default_factory=ModelLocks)

    def find_replica(self, worker_key: str) -> tuple[ModelRecord, ReplicaRecord] | None:
        """The replica whose current launch attempt has this key (`uid-N:instance`)."""
        for record in self.models.values():
            for replica in record.replicas:
                if replica.worker_key == worker_key:
                    return record, replica
        return None

    def current(self, record: ModelRecord, replica: ReplicaRecord | None = None) -> bool:
        """Whether `record` (and `replica` in it) is still the one the cluster runs: a task that
        waited may find it terminated, or launched anew under the same uid."""
        if self.models.get(record.uid) is not record:
            return False
        return replica is None or any(r is replica for r in record.replicas)
