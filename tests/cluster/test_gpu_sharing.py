"""Several replicas per GPU: placement packs replicas onto a GPU while their estimates fit its
room (its free memory less what is promised to replicas placed there), spreads them when they
do not, follows gpu_idx, and refuses with the GPUs' numbers. The GPUs are those a worker
reports (fleet.cluster.worker.resources.gpu_info's fields): no GPU is needed."""

from __future__ import annotations

import pytest

from fleet.catalogue.registry import parse_family
from fleet.cluster.supervisor.gpu_room import gpu_occupancy
from fleet.cluster.supervisor.memory_estimate import GIB, MIB, MemoryEstimate
from fleet.cluster.supervisor.placement import Demand, Placement, place_replicas, worker_room
from fleet.cluster.supervisor.records import ModelRecord, ReplicaRecord, WorkerRecord
from fleet.cluster.supervisor.replica_launcher import launch_payload
from fleet.errors import InsufficientMemory

ADDRESS = "10.0.0.1:31234"


def gpu_worker(*free_gib: float, total_gib: float = 80) -> WorkerRecord:
    return WorkerRecord(address=ADDRESS, ref=None, resources={
        "memory_available": 500 * GIB,
        "gpus": [{"index": i, "name": "H100", "memory_total": int(total_gib * GIB),
                  "memory_free": int(f * GIB), "memory_used": int((total_gib - f) * GIB)}
                 for i, f in enumerate(free_gib)]})


def needs(gib: float | None, n_gpu: object = "auto", gpu_idx: object = None) -> Demand:
    """A replica needing `gib` on a GPU (None: no estimate, as with skip_memory_check)."""
    def estimate(device: str) -> MemoryEstimate:
        return MemoryEstimate(weights=int(gib * GIB) - 512 * MIB, kv_cache=0,
                              overhead=512 * MIB, device=device)
    return Demand("smollm2", estimate if gib is not None else None, n_gpu=n_gpu, gpu_idx=gpu_idx)


def model(*replicas: ReplicaRecord) -> ModelRecord:
    family = parse_family("embedding", {"model_name": "m", "dimensions": 8, "model_id": "x/y"})
    return ModelRecord(uid="m", family=family, spec=family.model_specs[0], quantization="none",
                       engine="sentence_transformers", request={}, replicas=list(replicas))


def on_gpus(uid: str, gpus: list[int], gib: float, state: str = "launching") -> ReplicaRecord:
    return ReplicaRecord(uid, ADDRESS, state=state, device="cuda", gpus=gpus,
                         memory_bytes=int(gib * GIB))


def as_replica(placement: Placement, uid: str) -> ReplicaRecord:
    """What the supervisor records of a placement (fleet.cluster.supervisor.adoption)."""
    return ReplicaRecord(uid, placement.worker.address, device=placement.device,
                         memory_bytes=placement.memory_bytes, gpus=list(placement.gpus))


def test_two_small_replicas_share_one_gpu():
    worker = gpu_worker(24)
    first = place_replicas([worker], [], 1, demand=needs(10))[0]
    assert (first.device, first.gpus, first.memory_bytes) == ("cuda", (0,), 10 * GIB)
    # The first is loading: its 10 GiB are promised, not yet in NVML's free figure.
    running = [model(as_replica(first, "a-0"))]
    room = worker_room(worker, running, needs(10))
    assert (room.gpus, room.free) == ((0,), 14 * GIB)
    assert room.where == "GPU 0 (shared with a-0)"
    second = place_replicas([worker], running, 1, demand=needs(10))[0]
    assert second.gpus == (0,)
    # Both of one launch: the second counts the first, placed just before it.
    both = place_replicas([worker], [], 2, demand=needs(10))
    assert [p.gpus for p in both] == [(0,), (0,)]


def test_a_third_that_does_not_fit_is_refused_with_the_gpus_numbers():
    worker = gpu_worker(24, 6)
    running = [model(on_gpus("a-0", [0], 10), on_gpus("a-1", [0], 10))]
    with pytest.raises(InsufficientMemory) as info:
        place_replicas([worker], running, 1, demand=needs(10))
    message = info.value.message
    assert message.startswith("smollm2 needs 10.0 GiB (weights 9.5 GiB + overhead 512 MiB)")
    assert (f"worker {ADDRESS} has 6.0 GiB free (GPU 1; GPU 0 has 4.0 GiB)") in message
    assert info.value.status_code == 400 and info.value.code == "insufficient_memory"


def test_replicas_spread_to_the_gpu_with_the_most_room():
    worker = gpu_worker(20, 12)
    # Two of one launch: GPU 0 has the most room, then GPU 1 (12) has more than GPU 0 (20 - 9).
    placed = place_replicas([worker], [], 2, demand=needs(9))
    assert [p.gpus for p in placed] == [(0,), (1,)]
    # With 10 GiB promised on GPU 0, an 11 GiB replica only fits GPU 1.
    running = [model(on_gpus("a-0", [0], 10))]
    assert place_replicas([worker], running, 1, demand=needs(11))[0].gpus == (1,)


def test_a_ready_replica_reported_since_is_in_the_free_memory_not_promised():
    worker = gpu_worker(14)
    ready = on_gpus("a-0", [0], 10, state="ready")
    ready.ready_at = worker.last_heartbeat - 1  # the report (14 GiB free) counts it already
    assert worker_room(worker, [model(ready)], needs(1)).free == 14 * GIB
    ready.ready_at = worker.last_heartbeat + 1  # ready after the report: still promised
    assert worker_room(worker, [model(ready)], needs(1)).free == 4 * GIB


def test_gpu_idx_pins_a_launch_and_may_share_the_pinned_gpu():
    worker = gpu_worker(30, 70)
    running = [model(on_gpus("a-0", [0], 10))]
    # GPU 1 has more room, but the launch names GPU 0: it goes there, beside a-0.
    pinned = place_replicas([worker], running, 1, demand=needs(15, gpu_idx=0))[0]
    assert pinned.gpus == (0,)
    with pytest.raises(InsufficientMemory, match=r"has 20.0 GiB free \(GPU 0 \(shared with a-0\)"):
        place_replicas([worker], running, 1, demand=needs(25, gpu_idx=[0]))
    with pytest.raises(InsufficientMemory, match=r"has no GPU 3 \(its GPUs: 0,1\)"):
        place_replicas([worker], running, 1, demand=needs(1, gpu_idx=3))


def test_n_gpu_2_takes_two_gpus_each_fitting_its_share():
    worker = gpu_worker(20, 30, 10)
    placed = place_replicas([worker], [], 1, demand=needs(36, n_gpu=2))[0]
    assert placed.gpus == (1, 0)  # the two with the most room; 18 GiB on each
    loads = {g["index"]: g for g in gpu_occupancy(worker, [model(as_replica(placed, "b-0"))])}
    assert loads[0]["promised"] == loads[1]["promised"] == 18 * GIB
    assert loads[0]["replicas"] == ["b-0"] and loads[2]["replicas"] == []
    # 44 GiB is 22 on each: GPU 0 has 20.
    with pytest.raises(InsufficientMemory, match=r"has 40.0 GiB free \(GPUs 1,0; GPU 2 has"):
        place_replicas([worker], [], 1, demand=needs(44, n_gpu=2))


def test_without_an_estimate_a_replica_holds_a_gpu_of_its_own():
    worker = gpu_worker(24, 20)
    unchecked = place_replicas([worker], [], 1, demand=needs(None))[0]
    assert (unchecked.gpus, unchecked.memory_bytes) == ((0,), 0)
    running = [model(as_replica(unchecked, "u-0"))]
    # Nothing is put beside it, however small...
    assert place_replicas([worker], running, 1, demand=needs(1))[0].gpus == (1,)
    with pytest.raises(InsufficientMemory, match="GPU 0 held whole by u-0"):
        place_replicas([worker], running, 1, demand=needs(1, gpu_idx=0))
    # ...and another without an estimate needs a GPU no replica holds.
    beside = running + [model(on_gpus("a-0", [1], 1))]
    with pytest.raises(InsufficientMemory, match="has 0 GPU.s. no replica holds of 2, 1 needed"):
        place_replicas([worker], beside, 1, demand=needs(None))


def test_the_launch_carries_placements_gpus_and_each_ones_share():
    replica = on_gpus("m-0", [2, 0], 36)
    launch = launch_payload(model(replica), replica)
    assert (launch.gpu_idx, launch.gpu_memory_bytes) == ([2, 0], 18 * GIB)
    whole = on_gpus("m-1", [1], 0)  # no estimate: no share, the worker gives it GPU 1 whole
    launch = launch_payload(model(whole), whole)
    assert (launch.gpu_idx, launch.gpu_memory_bytes) == ([1], None)
    cpu = ReplicaRecord("m-2", ADDRESS, memory_bytes=GIB)
    assert (launch_payload(model(cpu), cpu).gpu_idx, launch_payload(model(cpu), cpu)
            .gpu_memory_bytes) == (None, None)


def test_a_replica_adopted_after_a_supervisor_restart_keeps_its_share():
    # The worker reports each replica's share (None: held whole), so a restarted supervisor
    # shares its GPU as before, or not.
    shared = ReplicaRecord.adopted({"key": "m-0:ab", "address": "x", "actor_uid": "y",
                                    "gpus": [0, 1], "gpu_memory_bytes": 5 * GIB}, ADDRESS)
    whole = ReplicaRecord.adopted({"key": "m-1:cd", "address": "x", "actor_uid": "y",
                                   "gpus": [2], "gpu_memory_bytes": None}, ADDRESS)
    assert (shared.device, shared.memory_bytes) == ("cuda", 10 * GIB)
    loads = {g["index"]: g for g in gpu_occupancy(gpu_worker(9, 9, 9), [model(shared, whole)])}
    assert loads[0]["shared"] and not loads[2]["shared"]


def test_gpu_idx_on_the_command_line_must_be_indices():
    from click.testing import CliRunner

    from fleet.cli.model_cmds import launch

    result = CliRunner().invoke(launch, ["smollm2", "--gpu-idx", "0,x"])
    assert result.exit_code == 2 and "'0,x': GPU indices, comma-separated" in result.output
