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


@dataclass
class ReplicaRecord:
    replica_uid: str
    worker_address: str
    actor_address: str | None = None
    actor_uid: str | None = None
    state: str = "launching"
    error: str | None = None
    gpus: list[int] = field(default_factory=list)
    # Where it runs ("cpu" or "cuda") and the memory it was estimated to need there: promised
    # to it on its worker while it loads (fleet/cluster/placement.py).
    device: str = "cpu"
    memory_bytes: int = 0
    ready_at: float | None = None  # time.monotonic() when it became ready
    # Unique per launch attempt: a terminate that races a launch must not hit a later launch
    # of the same uid on the worker.
    instance: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    @property
    def worker_key(self) -> str:
        return f"{self.replica_uid}:{self.instance}"


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
    error: str | None = None
    # Relaunched from the state file after a restart, rather than asked for in this run.
    restored: bool = False
    # Set when the launch failed because the request was wrong: answered with a 400.
    rejection: Exception | None = None
    # Why this engine ("requested", "auto: gguf weights"), and one replica's memory estimate.
    engine_reason: str = ""
    memory_estimate: dict[str, Any] | None = None

    @property
    def state(self) -> str:
        states = {r.state for r in self.replicas}
        if self.error or "failed" in states:
            return "failed"
        if states == {"ready"}:
            return "ready"
        if "terminating" in states:
            return "terminating"
        return "launching"

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
            "status": self.state,
            "error": self.error,
            "created": int(self.created_at),
            "address": self.replicas[0].worker_address if self.replicas else None,
            "accelerators": sorted({str(g) for r in self.replicas for g in r.gpus}),
            "replicas": [
                {
                    "replica_uid": r.replica_uid,
                    "worker_address": r.worker_address,
                    "state": r.state,
                    "error": r.error,
                    "gpus": r.gpus,
                }
                for r in self.replicas
            ],
        }
        for key in ("model_lang", "language", "context_length", "dimensions", "max_tokens"):
            if hasattr(family, key):
                data[key] = getattr(family, key)
        return data

    def list_entry(self) -> dict[str, Any]:
        """An OpenAI model object, extended with the fields Xinference's list carries."""
        described = self.describe()
        described.pop("replicas")
        return {"id": self.uid, "object": "model", "owned_by": "fleet", **described}
