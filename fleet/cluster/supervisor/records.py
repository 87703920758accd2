"""The supervisor's bookkeeping: launched models, their replicas, and known workers."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from fleet.catalogue.schemas import BaseFamily, ModelSpec


@dataclass
class WorkerRecord:
    address: str
    ref: Any
    resources: dict[str, Any]
    last_heartbeat: float = field(default_factory=time.monotonic)
    registered_at: float = field(default_factory=time.time)


# A replica's states: launching -> ready; ready -> restarting (its process exited or hung) ->
# launching again, or waiting (for a worker with room) first, or failed (too many failures in a
# row); ready -> draining (being removed: finishes its requests) -> gone; terminating (the model).
SERVING_STATES = frozenset({"ready"})
MAX_FAILURES_KEPT = 10


@dataclass
class ReplicaRecord:
    replica_uid: str
    worker_address: str
    actor_address: str | None = None
    actor_uid: str | None = None
    state: str = "launching"
    error: str | None = None
    # Xinference's replica_id: the replica's number within its model (uid-<index>).
    index: int = 0
    pid: int | None = None
    restarts: int = 0  # launched again after a failure, in all
    failures_in_a_row: int = 0  # since it last served for a while (fleet.settings.restart_reset_s)
    failures: list[str] = field(default_factory=list)  # the latest reasons, oldest first
    # What the worker reported while this attempt was still loading (it says more than the
    # broken connection the load call sees).
    down_reason: str | None = None
    # The GPUs placement chose for it (the worker gives it those), then those it runs on.
    gpus: list[int] = field(default_factory=list)
    # Where it runs ("cpu" or "cuda") and the memory it was estimated to need there: promised
    # to it on its worker while it loads (fleet/cluster/supervisor/placement.py).
    device: str = "cpu"
    memory_bytes: int = 0
    ready_at: float | None = None  # time.monotonic() when it became ready
    # Unique per launch attempt: a terminate that races a launch must not hit a later launch
    # of the same uid on the worker.
    instance: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    @property
    def worker_key(self) -> str:
        return f"{self.replica_uid}:{self.instance}"

    def is_promised(self, last_report: float) -> bool:
        """Whether its memory is promised to it rather than in its worker's report made at
        `last_report` (time.monotonic()): it is loading, or became ready since."""
        if self.state == "launching":
            return True
        return self.state == "ready" and (self.ready_at or 0) > last_report

    @classmethod
    def adopted(cls, report: dict[str, Any], worker_address: str) -> ReplicaRecord:
        """A ready replica a worker reported after the supervisor restarted: tracked again as
        it is, its process untouched."""
        replica_uid, instance = report["key"].rsplit(":", 1)
        # What its GPUs were promised: None held them whole (fleet.cluster.supervisor.gpu_room).
        share = report.get("gpu_memory_bytes")
        return cls(replica_uid=replica_uid, worker_address=worker_address,
                   actor_address=report["address"], actor_uid=report["actor_uid"], state="ready",
                   gpus=list(report.get("gpus") or []), index=int(replica_uid.rsplit("-", 1)[1]),
                   pid=report.get("pid"), device="cuda" if report.get("gpus") else "cpu",
                   instance=instance, ready_at=time.monotonic(),
                   memory_bytes=int(share or 0) * len(report.get("gpus") or []))

    def new_attempt(self, worker_address: str, device: str, memory_bytes: int,
                    gpus: tuple[int, ...] = ()) -> None:
        """The same replica launched again, as a new process (maybe on another worker)."""
        self.worker_address, self.device, self.memory_bytes = worker_address, device, memory_bytes
        self.instance = uuid.uuid4().hex[:8]
        self.state, self.actor_address, self.actor_uid = "launching", None, None
        self.pid, self.gpus, self.ready_at, self.down_reason = None, list(gpus), None, None

    def note_failure(self, reason: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        self.failures = [*self.failures, f"{stamp} {reason}"][-MAX_FAILURES_KEPT:]
        self.error = reason

    def status(self) -> dict[str, Any]:
        """What describe, `fleet list` and /replicas show of it (Xinference's replica fields
        first)."""
        return {
            "replica_id": self.index, "replica_model_uid": self.replica_uid,
            "replica_uid": self.replica_uid, "worker_address": self.worker_address,
            "state": self.state, "error": self.error, "gpus": self.gpus, "pid": self.pid,
            "restarts": self.restarts,
            "last_failure": self.failures[-1] if self.failures else None,
            "failures": list(self.failures),
        }


@dataclass
class ModelRecord:
    uid: str
    family: BaseFamily
    spec: ModelSpec
    quantization: str
    engine: str
    # The launch request as the user sent it (what a restart replays).
    request: dict[str, Any]
    replicas: list[ReplicaRecord]
    created_at: float = field(default_factory=time.time)
    launch_task: asyncio.Task[None] | None = None
    # Restarts and scale-ups under way: terminate cancels them.
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    error: str | None = None
    # Relaunched from the saved state after a restart, rather than asked for in this run.
    restored: bool = False
    # A model of the last run that cannot be restored yet (no worker has joined): why. It has
    # no replicas and is tried again when a worker joins (fleet.cluster.supervisor.restore).
    waiting: str | None = None
    # Only listed, by the restorer, for a model of the last run that does not run (waiting, or
    # not restored): a launch, or the adoption of its replicas, replaces it.
    stand_in: bool = False
    # Set when the launch failed because the request was wrong: answered with a 400.
    rejection: Exception | None = None
    # Why this engine ("requested", "auto: gguf weights"), and one replica's memory estimate.
    engine_reason: str = ""
    memory_estimate: dict[str, Any] | None = None
    # Unloaded after its keep_alive without a request (or launched so): listed, no replica; its
    # next request loads it (fleet.cluster.supervisor.elastic). `waking`: that load, under way.
    idle: bool = False
    waking: asyncio.Task[None] | None = None

    @property
    def state(self) -> str:
        """`ready` whenever some replica can answer, and only then."""
        states = {r.state for r in self.replicas}
        if self.idle:
            return "idle"
        if self.waiting is not None and not states:
            return "waiting"
        if "terminating" in states:
            return "terminating"
        if self.launch_task is not None and not self.launch_task.done() and not self.error:
            return "launching"
        if states & SERVING_STATES:
            return "ready"
        if self.error or not states or states <= {"failed"}:
            return "failed"
        if "waiting" in states and not states & {"launching", "restarting"}:
            return "waiting"
        return "restarting"

    @property
    def ready_replicas(self) -> list[ReplicaRecord]:
        return [r for r in self.replicas if r.state in SERVING_STATES]

    def why_not_ready(self) -> str | None:
        """The reasons a model that is not ready gives (its own error, else its replicas')."""
        if self.state == "ready":
            return None
        if self.waiting is not None and not self.replicas:
            return self.waiting
        if self.error:
            return self.error
        reasons = [f"replica {r.replica_uid} {r.state}: {r.error}" for r in self.replicas
                   if r.error]
        return "; ".join(reasons) or None

    def track(self, task: asyncio.Task[Any]) -> None:
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def describe(self) -> dict[str, Any]:
        """Xinference's describe_model fields, plus state and replicas."""
        family = self.family
        data: dict[str, Any] = {
            "model_uid": self.uid,
            "model_type": family.model_type,
            "model_name": family.model_name,
            "model_description": family.model_description,
            "model_ability": family.abilities,
            "model_format": self.spec.model_format,
            "model_size_in_billions": self.spec.model_size_in_billions,
            "quantization": self.quantization,
            "model_engine": self.engine,
            "model_engine_reason": self.engine_reason,
            "memory_estimate": self.memory_estimate,
            "model_hub": "huggingface",
            "revision": self.spec.model_revision,
            "replica": len(self.replicas),
            "ready_replicas": len(self.ready_replicas),
            "status": self.state,
            "error": self.why_not_ready(),
            "created": int(self.created_at),
            "address": self.replicas[0].worker_address if self.replicas else None,
            "accelerators": sorted({str(g) for r in self.replicas for g in r.gpus}),
            "replicas": [r.status() for r in self.replicas],
            "launch_options": self.launch_options(),
            "aliases": list(self.request.get("aliases") or ()),
        }
        for key in ("model_lang", "language", "context_length", "dimensions", "max_tokens"):
            if hasattr(family, key):
                data[key] = getattr(family, key)
        return data

    def launch_options(self) -> dict[str, Any]:
        """The launch request as it was checked, for people to read (the web UI shows it):
        `envs` values may be secrets (tokens), so only their names are shown."""
        options = dict(self.request)
        if options.get("envs"):
            options["envs"] = {name: "***" for name in options["envs"]}
        return options

    def list_entry(self) -> dict[str, Any]:
        """An OpenAI model object, extended with the fields Xinference's list carries."""
        described = self.describe()
        described.pop("replicas")
        described.pop("launch_options")  # describe_model has them; the listing stays lean
        return {"id": self.uid, "object": "model", "owned_by": "fleet", **described}
