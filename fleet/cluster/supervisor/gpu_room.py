"""Which GPU(s) of a worker a replica would go to, and how much memory each has left.

A GPU is shared by replicas while their memory estimates fit: its room is its free memory (as
NVML said in the worker's last report) less what is promised to the replicas placed on it that
are still loading, or ready since that report (their memory is not all in NVML's figure yet).
A replica of `n_gpu` GPUs promises each of them an equal share of its estimate.

A replica whose need is unknown (the memory check skipped, the estimate failed, the weights not
seen) holds its GPUs whole: nothing says what it will take (vLLM takes most of a GPU when it is
not told its share), so no other replica is put beside it, and it only goes to GPUs no replica
holds, which is one replica per GPU as before sharing. The worker keeps the same rule
(fleet.cluster.worker.gpu_owners), so the two agree.

Among the GPUs with room, the one with the most room is chosen (worst fit), not the tightest
(best fit): replicas on different GPUs do not share compute, and an estimate is an estimate, so
the most headroom is the safest place; GPUs are shared only once each holds something. The
price is fragmentation (two small models on two GPUs leave no GPU whole for a big one): a
launch that wants them packed pins them with `gpu_idx`."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from fleet.cluster.supervisor.memory_estimate import human
from fleet.cluster.supervisor.records import ModelRecord, ReplicaRecord, WorkerRecord


class Pending(Protocol):
    """A replica of this launch placed already (fleet.cluster.supervisor.placement.Placement)."""

    @property
    def gpus(self) -> tuple[int, ...]: ...

    @property
    def memory_bytes(self) -> int: ...

# How a launch of this one, not placed yet, is named among a GPU's holders.
THIS_LAUNCH = "(this launch)"


@dataclass(frozen=True)
class GpuLoad:
    """One GPU of a worker, with what placement has put on it."""

    index: int
    total: int  # bytes
    room: int  # bytes free less those promised
    promised: int  # bytes promised to replicas whose memory is not in `free` yet
    holders: tuple[str, ...]  # the replicas on it
    whole: bool  # one of them holds it whole (its need is unknown)

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "memory_total": self.total, "room": max(0, self.room),
                "promised": self.promised, "replicas": list(self.holders), "shared": not self.whole}

    def describe(self) -> str:
        if self.whole:
            return f"GPU {self.index} held whole by {', '.join(self.holders)}"
        return f"GPU {self.index} has {human(max(0, self.room))}"


def gpu_loads(worker: WorkerRecord, here: Sequence[ReplicaRecord],
              pending: Sequence[Pending] = ()) -> list[GpuLoad]:
    """The worker's GPUs with the replicas on them (`here`: those placed there; `pending`: the
    replicas of this launch placed just before)."""
    claims: list[tuple[str, tuple[int, ...], int, bool]] = [
        (r.replica_uid, tuple(r.gpus), r.memory_bytes, r.is_promised(worker.last_heartbeat))
        for r in here if r.gpus]
    claims += [(THIS_LAUNCH, p.gpus, p.memory_bytes, True) for p in pending if p.gpus]
    loads = []
    for gpu in worker.resources.get("gpus") or []:
        index = int(gpu["index"])
        mine = [c for c in claims if index in c[1]]
        promised = sum(memory // len(gpus) for _, gpus, memory, fresh in mine if fresh)
        loads.append(GpuLoad(index=index, total=int(gpu.get("memory_total", 0)),
                             room=int(gpu.get("memory_free", 0)) - promised, promised=promised,
                             holders=tuple(uid for uid, *_ in mine),
                             whole=any(memory == 0 for _, _, memory, _ in mine)))
    return loads


def placed_on(worker: WorkerRecord, models: Iterable[ModelRecord]) -> list[ReplicaRecord]:
    """The replicas placed on `worker` that hold memory there (loading or serving)."""
    return [r for m in models for r in m.replicas
            if r.worker_address == worker.address and r.state in ("launching", "ready")]


def gpu_occupancy(worker: WorkerRecord, models: Iterable[ModelRecord]) -> list[dict[str, Any]]:
    """Each GPU of `worker` with the replicas on it and the memory promised to them, for
    people (`/v1/workers`, the will-it-fit estimate)."""
    return [load.as_dict() for load in gpu_loads(worker, placed_on(worker, models))]


def choose_gpus(loads: list[GpuLoad], count: int, pinned: list[int] | None,
                shares: bool) -> tuple[list[GpuLoad], str | None]:
    """The GPUs for one replica, or why there are none: `count` of those it may share (the
    most room first), or the `pinned` ones. `shares`: its need is known, so it may go beside
    other replicas; else it needs GPUs no replica holds."""
    def usable(load: GpuLoad) -> bool:
        return not load.whole and (shares or not load.holders)

    if pinned is not None:
        by_index = {load.index: load for load in loads}
        missing = [i for i in pinned if i not in by_index]
        if missing:
            return [], f"has no GPU {_indices(missing)} (its GPUs: {_indices(sorted(by_index))})"
        held = [by_index[i] for i in pinned if not usable(by_index[i])]
        if held:
            return [], _held(held, shares)
        return [by_index[i] for i in pinned], None
    usable_loads = sorted((g for g in loads if usable(g)), key=lambda g: -g.room)
    if len(usable_loads) < count:
        kind = "it may share" if shares else "no replica holds"
        return [], (f"has {len(usable_loads)} GPU(s) {kind} of {len(loads)}, {count} needed"
                    + (f" ({'; '.join(g.describe() for g in loads if not usable(g))})"
                       if len(usable_loads) < len(loads) else ""))
    return usable_loads[:count], None


def _held(held: list[GpuLoad], shares: bool) -> str:
    whole = [g for g in held if g.whole]
    if whole:
        return "has " + "; ".join(g.describe() for g in whole)
    return (f"has GPU(s) {_indices([g.index for g in held])} in use by "
            f"{', '.join(sorted({h for g in held for h in g.holders}))}, and a launch whose "
            "memory is not checked needs GPUs of its own")


def _indices(indices: list[int]) -> str:
    return ",".join(map(str, indices))


def where(chosen: list[GpuLoad], loads: list[GpuLoad]) -> str:
    """`GPU 0 (shared with m-0); GPU 1 has 3.0 GiB`: the chosen GPUs, then the others."""
    label = f"GPU{'s' if len(chosen) > 1 else ''} {_indices([g.index for g in chosen])}"
    holders = sorted({h for g in chosen for h in g.holders})
    if holders:
        label += f" (shared with {', '.join(holders)})"
    others = [g.describe() for g in loads if g not in chosen]
    return "; ".join([label, *others])
