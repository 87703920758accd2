"""Where replicas go: spread over workers, fewest replicas first, then most free memory, among
the workers with room for them.

Room is the memory a replica would use on a worker: that of the GPU(s) placement picks for it
(several replicas may share a GPU while their estimates fit, fleet.cluster.supervisor.gpu_room),
else its available RAM, less what is promised to replicas still loading there (their memory is
not all taken yet). A replica that became ready after the worker's last report counts as
promised too, until the next heartbeat shows its memory as used. The GPUs chosen travel with
the placement to the replica's record, and from there to its worker in the launch."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from fleet.cluster.supervisor.gpu_room import choose_gpus, gpu_loads, placed_on, where
from fleet.cluster.supervisor.memory_estimate import MemoryEstimate, human
from fleet.cluster.supervisor.records import ModelRecord, ReplicaRecord, WorkerRecord
from fleet.errors import BadRequest, InsufficientMemory, Unavailable
from fleet.limits import MAX_REPLICAS


@dataclass(frozen=True)
class Demand:
    """What one replica asks of a worker."""

    model_name: str
    # The estimate for a device ("cpu" or "cuda"); None where memory is not checked.
    estimate: Callable[[str], MemoryEstimate | None] | None = None
    n_gpu: Any = "auto"
    gpu_idx: Any = None
    needs_gpu: bool = False


@dataclass(frozen=True)
class Room:
    """What a worker can give one replica."""

    address: str
    device: str  # "cpu" or "cuda"
    free: int  # bytes
    where: str  # "RAM", "GPU 0", "GPUs 0,1", with the other GPUs' room
    problem: str | None = None  # why it cannot take the replica whatever its size
    gpus: tuple[int, ...] = ()  # the GPUs it would take (`free`: each one's room, times them)
    capped: bool = False  # `free` is what the operator's --max-model-memory leaves

    def fits(self, need: MemoryEstimate | None) -> bool:
        """Whether a replica needing `need` (None: not checked) can go here."""
        return self.problem is None and (need is None or not need.checkable
                                         or need.total <= self.free)

    def describe(self) -> str:
        if self.problem:
            return f"worker {self.address} {self.problem}"
        return f"worker {self.address} has {human(self.free)} free ({self.where})"


@dataclass(frozen=True)
class Placement:
    worker: WorkerRecord
    device: str
    memory_bytes: int  # the estimate it was placed with (0 when unchecked)
    gpus: tuple[int, ...] = ()  # the GPUs chosen on the worker (device "cuda")


def wants_gpu(n_gpu: Any, gpu_idx: Any = None) -> bool:
    """Whether a launch takes a GPU where there is one (n_gpu "auto" does)."""
    return gpu_idx is not None or n_gpu not in (None, 0, "0")


def worker_room(worker: WorkerRecord, models: Iterable[ModelRecord], demand: Demand,
                pending: Sequence[Placement] = ()) -> Room:
    """The room `worker` has for one more replica, given the replicas placed already and the
    ones of this launch placed just before (`pending`)."""
    here = placed_on(worker, models)
    mine = [p for p in pending if p.worker.address == worker.address]
    gpus = worker.resources.get("gpus") or []
    if gpus and wants_gpu(demand.n_gpu, demand.gpu_idx):
        return _gpu_room(worker, here, mine, demand)
    if demand.needs_gpu:
        return Room(worker.address, "cuda", 0, "", "has no GPU")
    if demand.gpu_idx is not None or demand.n_gpu not in (None, 0, "0", "auto"):
        return Room(worker.address, "cuda", 0, "", f"has no GPU (n_gpu={demand.n_gpu} was asked)")
    return _ram_room(worker, here, mine)


def _ram_room(worker: WorkerRecord, here: list[ReplicaRecord], mine: list[Placement]) -> Room:
    """Available RAM less what is promised; within the operator's cap on the models' RAM
    (--max-model-memory) less the estimates of every replica there, where that is less."""
    mine_bytes = sum(p.memory_bytes for p in mine if p.device == "cpu")
    promised = mine_bytes + sum(r.memory_bytes for r in here
                                if r.device == "cpu" and r.is_promised(worker.last_heartbeat))
    free = int(worker.resources.get("memory_available", 0)) - promised
    cap = worker.resources.get("model_memory_limit")
    if cap is not None:
        within_cap = int(cap) - mine_bytes - sum(r.memory_bytes for r in here
                                                 if r.device == "cpu")
        if within_cap < free:
            return Room(worker.address, "cpu", max(0, within_cap),
                        f"RAM, of the {human(int(cap))} its models may take "
                        "(--max-model-memory)", capped=True)
    return Room(worker.address, "cpu", max(0, free), "RAM")


def _gpu_room(worker: WorkerRecord, here: list[ReplicaRecord], mine: list[Placement],
              demand: Demand) -> Room:
    need = demand.estimate("cuda") if demand.estimate else None
    loads = gpu_loads(worker, here, mine)
    pinned = None
    if demand.gpu_idx is not None:
        pinned = [demand.gpu_idx] if isinstance(demand.gpu_idx, int) else list(demand.gpu_idx)
    count = 1 if demand.n_gpu == "auto" else int(demand.n_gpu)
    chosen, problem = choose_gpus(loads, count, pinned, shares=_known(need))
    if problem is not None:
        return Room(worker.address, "cuda", 0, "", problem)
    # Each GPU takes an equal share: the one with the least room bounds them all.
    free = max(0, min(g.room for g in chosen)) * len(chosen)
    return Room(worker.address, "cuda", free, where(chosen, loads),
                gpus=tuple(g.index for g in chosen))


def _known(need: MemoryEstimate | None) -> bool:
    """Whether a replica's need is known enough to put it beside others on a GPU."""
    return need is not None and need.checkable


def workers_at(workers: list[WorkerRecord], worker_ip: str | None) -> list[WorkerRecord]:
    """The workers a launch may use: those at `worker_ip` (an address or a host) if it names one."""
    if not worker_ip:
        return workers
    return [w for w in workers if w.address == worker_ip or w.address.rsplit(":", 1)[0] == worker_ip]


def _candidates(workers: list[WorkerRecord], worker_ip: str | None) -> list[WorkerRecord]:
    candidates = workers_at(workers, worker_ip)
    if worker_ip:
        if not candidates:
            known = ", ".join(w.address for w in workers) or "none"
            raise BadRequest(f"no worker at {worker_ip}; workers: {known}", code="no_such_worker")
    if not candidates:
        raise Unavailable("no worker has joined the cluster yet", code="no_worker")
    return candidates


def place_replicas(
    workers: list[WorkerRecord],
    models: Iterable[ModelRecord],
    replica_count: int,
    worker_ip: str | None = None,
    demand: Demand | None = None,
) -> list[Placement]:
    """A worker for each replica; InsufficientMemory, with the numbers, when some do not fit."""
    if replica_count < 1:
        raise BadRequest(f"replica must be at least 1, got {replica_count}")
    if replica_count > MAX_REPLICAS:  # each placement looks at the ones before it: quadratic
        raise BadRequest(f"replica {replica_count} is more than the {MAX_REPLICAS} replicas a "
                         "model may have", code="too_many_replicas")
    candidates = _candidates(workers, worker_ip)
    demand = demand or Demand(model_name="model")
    models = list(models)
    load = Counter(r.worker_address for m in models for r in m.replicas)
    chosen: list[Placement] = []
    for _ in range(replica_count):
        fitting = []
        rooms = []
        for worker in candidates:
            room = worker_room(worker, models, demand, chosen)
            rooms.append(room)
            need = demand.estimate(room.device) if demand.estimate and not room.problem else None
            if room.fits(need):
                fitting.append((worker, room, need))
        if not fitting:
            # Short of what the operator's cap leaves everywhere: unloading a model makes room
            # at once, without waiting for a worker to measure what it freed (elastic).
            capped = all(r.capped for r in rooms if not r.problem) and \
                any(not r.problem for r in rooms)
            raise InsufficientMemory(_refusal(demand, rooms, replica_count, len(chosen)),
                                     code="max_model_memory" if capped else "insufficient_memory")
        worker, room, need = min(
            fitting, key=lambda f: (load[f[0].address], -f[0].resources.get("memory_available", 0)))
        load[worker.address] += 1
        # On a GPU, 0 (need unknown) means the replica holds its GPUs whole (gpu_room).
        memory = need.total if need and (room.device == "cpu" or _known(need)) else 0
        chosen.append(Placement(worker, room.device, memory, room.gpus))
    return chosen


def _refusal(demand: Demand, rooms: list[Room], replica_count: int, placed: int) -> str:
    """`smollm2 needs 9.8 GiB (weights ... + overhead ...), worker A has 7.1 GiB free (RAM)`."""
    where = ", ".join(r.describe() for r in rooms)
    estimate = demand.estimate
    needs = {r.device: estimate(r.device) for r in rooms if not r.problem} if estimate else {}
    known = {device: need for device, need in needs.items() if need is not None}
    if not known:
        return f"no worker can take {demand.model_name}: {where}"
    if len(known) == 1:
        need = next(iter(known.values())).summary()
    else:  # GPU and CPU workers: each device has its own estimate
        need = "; ".join(f"{n.summary()} on {d}" for d, n in sorted(known.items()))
    replicas = f" per replica, {replica_count} replicas asked, room for {placed}" \
        if replica_count > 1 else ""
    return f"{demand.model_name} needs {need}{replicas}, {where}"
