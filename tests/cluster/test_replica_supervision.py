"""A replica that keeps failing is restarted with growing waits and given up after the limit,
with every reason kept; reports about launch attempts already replaced change nothing. The
supervision runs for real here; the launcher is the edge (no processes)."""

from __future__ import annotations

import asyncio
import time

import pytest

from fleet.catalogue.registry import parse_family
from fleet.cluster.supervisor.cluster_state import ClusterState
from fleet.cluster.supervisor.records import ModelRecord, ReplicaRecord, WorkerRecord
from fleet.cluster.supervisor.replica_supervision import ReplicaSupervision, backoff_s
from fleet.errors import InsufficientMemory, LaunchFailed


class FailingLauncher:
    """Every start fails like a replica whose engine crashes while loading."""

    def __init__(self) -> None:
        self.starts: list[float] = []
        self.stops: list[str] = []

    async def start(self, record: ModelRecord, replica: ReplicaRecord) -> None:
        self.starts.append(time.monotonic())
        raise LaunchFailed(f"engine crashed (attempt {len(self.starts)})")

    async def stop(self, replica: ReplicaRecord, drain_s: float = 0.0) -> None:
        self.stops.append(replica.worker_key)


async def _nowhere(*_: object) -> None:
    raise InsufficientMemory("no other worker has room")


def _cluster() -> tuple[ClusterState, ModelRecord, ReplicaRecord]:
    cluster = ClusterState()
    cluster.workers["w:1"] = WorkerRecord(address="w:1", ref=None, resources={})
    family = parse_family("embedding", {"model_name": "m", "dimensions": 8, "model_id": "x/y"})
    replica = ReplicaRecord(replica_uid="m-0", worker_address="w:1", state="ready",
                            ready_at=time.monotonic())
    record = ModelRecord(uid="m", family=family, spec=family.model_specs[0], quantization="none",
                         engine="sentence_transformers", request={}, replicas=[replica])
    cluster.models["m"] = record
    return cluster, record, replica


def test_backoff_starts_at_once_then_doubles_up_to_the_cap(monkeypatch):
    monkeypatch.setenv("FLEET_RESTART_BACKOFF_S", "1")
    monkeypatch.setenv("FLEET_RESTART_BACKOFF_MAX_S", "5")
    assert [backoff_s(n) for n in range(1, 7)] == [0.0, 1.0, 2.0, 4.0, 5.0, 5.0]


def test_a_replica_that_keeps_failing_is_given_up_with_all_its_reasons(monkeypatch):
    monkeypatch.setenv("FLEET_RESTART_BACKOFF_S", "0.05")
    monkeypatch.setenv("FLEET_RESTART_LIMIT", "3")
    cluster, record, replica = _cluster()
    launcher = FailingLauncher()
    supervision = ReplicaSupervision(cluster, launcher, _nowhere)  # type: ignore[arg-type]

    async def run() -> None:
        first_key = replica.worker_key
        assert supervision.replica_down(first_key, "process 7 was killed by signal 9") is True
        assert replica.state == "restarting" and record.state == "restarting"
        while replica.state != "failed":
            await asyncio.sleep(0.01)
        # A report about the first process, long replaced, changes nothing.
        assert supervision.replica_down(first_key, "late news") is False

    asyncio.run(run())
    assert len(launcher.starts) == 3 and replica.restarts == 3
    waits = [b - a for a, b in zip(launcher.starts, launcher.starts[1:], strict=False)]
    assert waits[0] >= 0.05 and waits[1] >= 0.1  # 0.05 s, then twice that
    assert len(replica.failures) == 4
    assert "killed by signal 9" in replica.failures[0]
    assert "engine crashed (attempt 3)" in replica.failures[-1]
    assert replica.error.startswith("gave up after 4 failures in a row")
    assert record.state == "failed" and "gave up" in record.why_not_ready()
    assert supervision.restarts_total == {"m": 3}
    assert len(launcher.stops) == 3  # what each failed attempt left was ended


def test_a_replica_that_served_long_enough_counts_from_zero(monkeypatch):
    monkeypatch.setenv("FLEET_RESTART_RESET_S", "0")
    cluster, record, replica = _cluster()
    replica.failures_in_a_row = 4

    async def run() -> None:
        supervision = ReplicaSupervision(cluster, FailingLauncher(), _nowhere)  # type: ignore[arg-type]
        supervision.failed(record, replica, "segfault")
        assert replica.failures_in_a_row == 1 and replica.state == "restarting"
        for task in list(record.tasks):
            task.cancel()

    asyncio.run(run())


@pytest.mark.parametrize("state", ["launching", "draining", "terminating", "failed"])
def test_only_a_serving_replica_is_restarted_on_a_report(state):
    cluster, _, replica = _cluster()
    replica.state = state
    supervision = ReplicaSupervision(cluster, FailingLauncher(), _nowhere)  # type: ignore[arg-type]
    assert supervision.replica_down(replica.worker_key, "gone") is False
    assert replica.state == state
    if state == "launching":  # its load will fail; the worker's words are kept for its error
        assert replica.down_reason == "gone"


def test_a_replica_whose_worker_is_gone_waits_for_capacity_with_the_reason():
    cluster, record, replica = _cluster()
    del cluster.workers["w:1"]

    async def broken_planner(*_: object) -> None:
        raise RuntimeError("reading the weights' header failed")  # not a Fleet error either

    async def run() -> None:
        supervision = ReplicaSupervision(cluster, FailingLauncher(), broken_planner)  # type: ignore[arg-type]
        supervision.failed(record, replica, "worker w:1 stopped responding")
        while replica.state == "restarting":
            await asyncio.sleep(0.01)

    asyncio.run(run())
    assert replica.state == "waiting" and record.state == "waiting"
    assert "waiting for capacity: RuntimeError: reading the weights' header failed" in replica.error
    assert "stopped responding" in replica.error
