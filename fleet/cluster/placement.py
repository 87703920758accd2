"""Where replicas go: spread over workers, fewest replicas first, then most free memory."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from fleet.cluster.records import ModelRecord, WorkerRecord
from fleet.errors import BadRequest, Unavailable


def place_replicas(
    workers: list[WorkerRecord],
    models: Iterable[ModelRecord],
    replica_count: int,
    worker_ip: str | None = None,
) -> list[WorkerRecord]:
    if replica_count < 1:
        raise BadRequest(f"replica must be at least 1, got {replica_count}")
    candidates = workers
    if worker_ip:
        candidates = [w for w in workers if w.address == worker_ip
                      or w.address.rsplit(":", 1)[0] == worker_ip]
        if not candidates:
            known = ", ".join(w.address for w in workers) or "none"
            raise BadRequest(f"no worker at {worker_ip}; workers: {known}")
    if not candidates:
        raise Unavailable("no worker has joined the cluster yet", code="no_worker")
    load = Counter(r.worker_address for m in models for r in m.replicas)
    chosen = []
    for _ in range(replica_count):
        best = min(
            candidates,
            key=lambda w: (load[w.address], -w.resources.get("memory_available", 0)),
        )
        load[best.address] += 1
        chosen.append(best)
    return chosen
