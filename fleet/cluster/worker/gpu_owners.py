"""Which replicas run on which of this machine's GPUs, and the GPUs a new replica gets.

Several replicas may share a GPU: placement (fleet.cluster.supervisor.gpu_room) put them there
because their memory estimates fit, and sends each launch the GPUs it chose (`gpu_idx`) with
the share promised on each (`gpu_memory_bytes`). A replica launched without a share (its
memory was not estimated) holds its GPUs whole, as placement assumes too: it only gets GPUs no
replica holds, and no replica is put beside it."""

from __future__ import annotations

from typing import Any

from fleet.errors import BadRequest


class GpuOwners:
    def __init__(self) -> None:
        self._holders: dict[int, set[str]] = {}
        # Each replica's GPUs and its share of each (None: held whole).
        self._gpus: dict[str, list[int]] = {}
        self._shares: dict[str, int | None] = {}

    def assign(self, replica_key: str, gpus: list[dict[str, Any]], n_gpu: Any, gpu_idx: Any,
               share: int | None, where: str) -> list[int]:
        """The GPUs `replica_key` runs on, recorded as its; BadRequest when they cannot be had.
        `gpus`: the machine's (fleet.cluster.worker.resources.gpu_info); `gpu_idx`: the GPUs
        placement chose or the launch pinned (None: picked here, as `n_gpu` says)."""
        indices = [int(g["index"]) for g in gpus]
        if gpu_idx is not None:
            wanted = [gpu_idx] if isinstance(gpu_idx, int) else [int(i) for i in gpu_idx]
            missing = [i for i in wanted if i not in indices]
            if missing:
                raise BadRequest(f"worker {where} has no GPU {missing} (its GPUs: {indices})")
            refused = [i for i in wanted if not self._may_join(i, share)]
            if refused:
                raise BadRequest(f"GPU(s) {refused} on worker {where} are {self._why(share)}")
        elif n_gpu in (None, 0, "0") or not gpus:
            if n_gpu not in (None, 0, "0", "auto"):
                raise BadRequest(f"worker {where} has no GPU, n_gpu={n_gpu} was asked")
            return []
        else:
            # Picked here (placement did not choose): GPUs no replica holds, most free memory
            # first, as before GPUs were shared.
            by_free = sorted(gpus, key=lambda g: -int(g.get("memory_free", 0)))
            free = [int(g["index"]) for g in by_free if not self._holders.get(int(g["index"]))]
            count = 1 if n_gpu == "auto" else int(n_gpu)
            if count > len(free):
                raise BadRequest(f"n_gpu={count} but worker {where} has {len(free)} free GPU(s)")
            wanted = free[:count]
        for index in wanted:
            self._holders.setdefault(index, set()).add(replica_key)
        self._gpus[replica_key], self._shares[replica_key] = list(wanted), share
        return list(wanted)

    def _may_join(self, index: int, share: int | None) -> bool:
        holders = self._holders.get(index) or set()
        if share is None:
            return not holders
        return all(self._shares.get(key) is not None for key in holders)

    @staticmethod
    def _why(share: int | None) -> str:
        if share is None:
            return "in use, and a replica whose memory is not estimated needs GPUs of its own"
        return "held whole by a replica whose memory is not estimated"

    def release(self, replica_key: str) -> None:
        for index in self._gpus.pop(replica_key, []):
            holders = self._holders.get(index, set())
            holders.discard(replica_key)
            if not holders:
                self._holders.pop(index, None)
        self._shares.pop(replica_key, None)

    def gpus_of(self, replica_key: str) -> list[int]:
        return list(self._gpus.get(replica_key, []))

    def share_of(self, replica_key: str) -> int | None:
        return self._shares.get(replica_key)

    def holders(self) -> dict[int, list[str]]:
        """GPU index -> the replica keys on it (the worker's describe)."""
        return {index: sorted(keys) for index, keys in sorted(self._holders.items())}
