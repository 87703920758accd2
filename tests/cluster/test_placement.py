"""Placement with memory: a replica goes to a worker with room for it, in the usual preference
order among those; a launch that fits nowhere is refused with the numbers."""

from __future__ import annotations

import time

import pytest

from fleet.catalogue.registry import parse_family
from fleet.cluster.supervisor.memory_estimate import GIB, MIB, MemoryEstimate
from fleet.cluster.supervisor.placement import Demand, place_replicas, worker_room
from fleet.cluster.supervisor.records import ModelRecord, ReplicaRecord, WorkerRecord
from fleet.errors import InsufficientMemory


def worker(address: str, free_gib: float, gpus: tuple[tuple[int, float], ...] = ()) -> WorkerRecord:
    return WorkerRecord(address=address, ref=None, resources={
        "memory_available": int(free_gib * GIB),
        "gpus": [{"index": i, "memory_free": int(f * GIB), "memory_total": 80 * GIB} for i, f in gpus]})


def needs(cpu_gib: float, gpu_gib: float | None = None) -> Demand:
    def estimate(device: str) -> MemoryEstimate:
        total = gpu_gib if device == "cuda" and gpu_gib is not None else cpu_gib
        return MemoryEstimate(weights=int(total * GIB) - 512 * MIB, kv_cache=0, overhead=512 * MIB,
                              device=device)
    return Demand(model_name="smollm2", estimate=estimate)


def running(*replicas: ReplicaRecord) -> ModelRecord:
    family = parse_family("embedding", {"model_name": "m", "dimensions": 8, "model_id": "x/y"})
    return ModelRecord(uid="running", family=family, spec=family.model_specs[0],
                       quantization="none", engine="sentence_transformers", request={},
                       replicas=list(replicas))


def test_picks_the_worker_with_room_over_the_preferred_one():
    small, big = worker("10.0.0.1:1", 4), worker("10.0.0.2:1", 12)
    # `big` already runs a replica, so it would come second without the memory check.
    models = [running(ReplicaRecord("running-0", big.address, state="ready"))]
    placed = place_replicas([small, big], models, 1, demand=needs(6))
    assert [p.worker.address for p in placed] == [big.address]
    assert placed[0].device == "cpu" and placed[0].memory_bytes == 6 * GIB


def test_among_workers_with_room_the_usual_order_holds():
    first, second = worker("10.0.0.1:1", 10), worker("10.0.0.2:1", 20)
    models = [running(ReplicaRecord("running-0", second.address, state="ready"))]
    assert place_replicas([first, second], models, 1, demand=needs(2))[0].worker is first
    # Without an estimate, placement is what it always was.
    assert place_replicas([first, second], [], 1)[0].worker is second


def test_nowhere_to_go_is_refused_with_the_numbers():
    workers = [worker("10.0.0.1:31234", 7.1), worker("10.0.0.2:31234", 3)]
    with pytest.raises(InsufficientMemory) as info:
        place_replicas(workers, [], 1, demand=needs(9.8))
    message = info.value.message
    assert message.startswith("smollm2 needs 9.8 GiB (weights 9.3 GiB + overhead 512 MiB)")
    assert "worker 10.0.0.1:31234 has 7.1 GiB free (RAM)" in message
    assert "worker 10.0.0.2:31234 has 3.0 GiB free (RAM)" in message
    assert info.value.status_code == 400 and info.value.code == "insufficient_memory"


def test_memory_promised_to_loading_replicas_is_not_free():
    busy = worker("10.0.0.1:1", 10)
    loading = ReplicaRecord("running-0", busy.address, state="launching", memory_bytes=8 * GIB)
    assert worker_room(busy, [running(loading)], needs(1)).free == 2 * GIB
    with pytest.raises(InsufficientMemory, match="has 2.0 GiB free"):
        place_replicas([busy], [running(loading)], 1, demand=needs(3))
    # Ready since the worker's last report: still promised. Reported since: in memory_available.
    loading.state, loading.ready_at = "ready", time.monotonic() + 1
    assert worker_room(busy, [running(loading)], needs(1)).free == 2 * GIB
    loading.ready_at = busy.last_heartbeat - 1
    assert worker_room(busy, [running(loading)], needs(1)).free == 10 * GIB


def test_replicas_of_one_launch_count_against_each_other():
    one = worker("10.0.0.1:1", 10)
    assert len(place_replicas([one], [], 2, demand=needs(4))) == 2
    with pytest.raises(InsufficientMemory, match="3 replicas asked, room for 2"):
        place_replicas([one], [], 3, demand=needs(4))


def test_gpu_room_is_the_free_memory_of_a_gpu_not_held_whole():
    gpu_worker = worker("10.0.0.1:1", 100, gpus=[(0, 8), (1, 24)])
    owner = ReplicaRecord("running-0", gpu_worker.address, state="ready", device="cuda", gpus=[1])
    room = worker_room(gpu_worker, [running(owner)], needs(50, gpu_gib=10))
    # The replica there has no estimate: it holds GPU 1 whole, so GPU 0 is the room.
    assert (room.device, room.free, room.gpus) == ("cuda", 8 * GIB, (0,))
    assert room.where == "GPU 0; GPU 1 held whole by running-0"
    with pytest.raises(InsufficientMemory, match=r"needs 10.0 GiB .*has 8.0 GiB free \(GPU 0; GPU 1 held"):
        place_replicas([gpu_worker], [running(owner)], 1, demand=needs(50, gpu_gib=10))
    placed = place_replicas([gpu_worker], [], 1, demand=needs(50, gpu_gib=10))
    assert placed[0].device == "cuda" and placed[0].memory_bytes == 10 * GIB  # on GPU 1's 24 GiB
    # n_gpu=None keeps it on the CPU: RAM is what counts then.
    cpu = Demand("smollm2", needs(50, gpu_gib=10).estimate, n_gpu=None)
    assert place_replicas([gpu_worker], [], 1, demand=cpu)[0].device == "cpu"


def test_an_engine_that_needs_a_gpu_skips_workers_without_one():
    cpu_only, with_gpu = worker("10.0.0.1:1", 100), worker("10.0.0.2:1", 4, gpus=[(0, 40)])
    demand = Demand("smollm2", needs(2).estimate, needs_gpu=True)
    assert place_replicas([cpu_only, with_gpu], [], 1, demand=demand)[0].worker is with_gpu
    with pytest.raises(InsufficientMemory, match="worker 10.0.0.1:1 has no GPU"):
        place_replicas([cpu_only], [], 1, demand=demand)


def test_unknown_weights_are_not_held_against_a_launch():
    def unknown(device: str) -> MemoryEstimate:
        return MemoryEstimate(weights=None, kv_cache=None, overhead=512 * MIB, device=device)
    placed = place_replicas([worker("10.0.0.1:1", 0.1)], [], 1, demand=Demand("m", unknown))
    assert placed[0].memory_bytes == 512 * MIB


def test_placement_is_bounded_by_the_replicas_a_model_may_have():
    # Each placement looks at the ones before it: 100000 replicas took minutes of one core.
    from fleet.errors import BadRequest
    from fleet.limits import MAX_REPLICAS

    workers = [worker("10.0.0.1:1", 10_000)]
    assert len(place_replicas(workers, [], MAX_REPLICAS)) == MAX_REPLICAS
    started = time.monotonic()
    with pytest.raises(BadRequest, match=f"more than the {MAX_REPLICAS} replicas") as info:
        place_replicas(workers, [], 100_000)
    assert info.value.code == "too_many_replicas" and time.monotonic() - started < 0.1


def test_the_operators_cap_bounds_a_workers_models_by_their_estimates():
    capped = worker("10.0.0.1:1", 12)
    capped.resources["model_memory_limit"] = 5 * GIB
    here = running(ReplicaRecord(replica_uid="running-0", worker_address=capped.address,
                                 state="ready", memory_bytes=2 * GIB, ready_at=0.0))
    room = worker_room(capped, [here], needs(1))
    assert (room.free, room.capped) == (3 * GIB, True)  # not the 12 GiB of free RAM
    assert "--max-model-memory" in room.where
    with pytest.raises(InsufficientMemory) as refused:
        place_replicas([capped], [here], 1, demand=needs(4))
    assert refused.value.code == "max_model_memory"
    assert "has 3.0 GiB free (RAM, of the 5.0 GiB its models may take" in refused.value.message
    capped.resources["memory_available"] = 2 * GIB  # less free RAM than the cap leaves
    assert worker_room(capped, [here], needs(1)).capped is False
    with pytest.raises(InsufficientMemory) as short:
        place_replicas([capped], [here], 1, demand=needs(4))
    assert short.value.code == "insufficient_memory"  # only a measure of the RAM says more
