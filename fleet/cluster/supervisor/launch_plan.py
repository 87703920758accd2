"""A launch, planned before anything starts: the family, the engine and why it was picked, the
memory one replica needs, and the workers its replicas go to, or why none can take them.
The supervisor launches what the plan says; `GET /v1/models/estimate` shows the plan alone."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from fleet.autoscale import AUTOSCALE_FIELDS
from fleet.catalogue.registry import Catalogue
from fleet.catalogue.schemas import BaseFamily
from fleet.cluster.supervisor.gpu_room import gpu_occupancy
from fleet.cluster.supervisor.launch_policy import LaunchPolicy, truthy
from fleet.cluster.supervisor.memory_estimate import MemoryEstimate, estimate_memory
from fleet.cluster.supervisor.placement import (
    Demand,
    Placement,
    Room,
    place_replicas,
    wants_gpu,
    worker_room,
    workers_at,
)
from fleet.cluster.supervisor.records import ModelRecord, WorkerRecord
from fleet.cluster.weights.projector import OPTION as PROJECTOR
from fleet.cluster.weights.projector import check_projector_choice
from fleet.cluster.weights.weights_info import infer_model_format
from fleet.engines.base import EngineInfo
from fleet.engines.launch_options import RemoteCodeOptions, validate_options
from fleet.engines.registry import EngineChoice, pick_engine
from fleet.errors import BadRequest, FleetError, InsufficientMemory

logger = logging.getLogger(__name__)

# The escape hatch: a launch argument that places replicas without comparing the estimate to
# free memory, for users who know better (an engine that offloads, a cache they cap).
SKIP_MEMORY_CHECK = "skip_memory_check"

# The launch's own fields; every other key of a launch body is an engine option. The last ones
# are Xinference's, which its clients always send (n_worker=1, the others null or false);
# fleet.launch_request refuses them set to anything else.
LAUNCH_FIELDS = frozenset({
    "model_name", "model_type", "model_engine", "model_uid", "model_format",
    "model_size_in_billions", "quantization", "replica", "n_gpu", "gpu_idx", "worker_ip",
    "model_path", "envs", "request_limits", "keep_alive", "idle", "aliases", SKIP_MEMORY_CHECK,
    *AUTOSCALE_FIELDS,
    "n_worker", "peft_model_config", "replica_config", "quantization_config",
    "enable_virtual_env", "virtual_env_packages", "virtual_env_find_links",
})


# Options Xinference's CLI sends with every launch, whatever the model: at this value they ask
# for nothing, so an engine that does not take them (embeddings and enable_thinking) lets them
# pass unread rather than refuse every launch from that CLI.
_ASKS_NOTHING = {"enable_thinking": False}


def engine_options(request: dict[str, Any]) -> dict[str, Any]:
    """The engine options of a launch body (its keys beyond LAUNCH_FIELDS that are set)."""
    return {k: v for k, v in request.items() if k not in LAUNCH_FIELDS and v is not None}


def _without_empty_defaults(options: dict[str, Any], declared: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items()
            if k in declared or k not in _ASKS_NOTHING or v != _ASKS_NOTHING[k]}


def checked_request(request: dict[str, Any], engine: EngineInfo,
                    model_type: str) -> dict[str, Any]:
    """The launch body with its engine options validated against the engine's typed options
    (fleet.engines.launch_options) and coerced to their types: BadRequest naming an unknown,
    misspelt or invalid one, before anything starts."""
    model = engine.options_model(model_type)
    options = validate_options(model, _without_empty_defaults(engine_options(request),
                                                              model.model_fields),
                               f"engine {engine.name} ({model_type} models)")
    return {**{k: v for k, v in request.items() if k in LAUNCH_FIELDS}, **options}


@dataclass
class LaunchPlan:
    family: BaseFamily
    choice: EngineChoice
    request: dict[str, Any]
    workers: list[WorkerRecord]
    models: list[ModelRecord]
    skip_check: bool
    has_gpu: bool | None = None  # whether the workers it may go to have a GPU it wants
    placements: list[Placement] = field(default_factory=list)
    refusal: FleetError | None = None
    # The operator's cap on the models a worker holds loaded (--max-loaded-models); None: none.
    max_loaded_models: int | None = None
    _estimates: dict[str, MemoryEstimate | None] = field(default_factory=dict)

    def estimate(self, device: str) -> MemoryEstimate | None:
        """One replica's need on `device`; None when it could not be estimated (an estimate
        that fails never blocks a launch: the engine's own error will say what is wrong)."""
        if device not in self._estimates:
            try:
                self._estimates[device] = estimate_memory(
                    self.family, self.choice.spec, self.choice.quantization, self.choice.engine,
                    device, self.request)
            except BadRequest:
                raise
            except Exception as exc:
                logger.warning("memory estimate of %s failed: %r", self.family.model_name, exc)
                self._estimates[device] = None
        return self._estimates[device]

    @property
    def demand(self) -> Demand:
        """What each replica asks of a worker; no estimate when the check is skipped."""
        return Demand(model_name=self.family.model_name,
                      estimate=None if self.skip_check else self.estimate,
                      n_gpu=self.request.get("n_gpu", "auto"), gpu_idx=self.request.get("gpu_idx"),
                      needs_gpu=self.choice.engine.needs_gpu)

    @property
    def device(self) -> str:
        if self.placements:
            return self.placements[0].device
        return "cuda" if self.has_gpu else "cpu"

    def place(self, all_workers: list[WorkerRecord]) -> None:
        """Choose the replicas' workers, or note why none has room (`refusal`)."""
        try:
            self.placements = place_replicas(self._under_the_cap(all_workers), self.models,
                                             int(self.request.get("replica") or 1),
                                             self.request.get("worker_ip"), self.demand)
            self.refusal = None
        except FleetError as exc:
            self.refusal = exc

    def _under_the_cap(self, workers: list[WorkerRecord]) -> list[WorkerRecord]:
        """The workers that may load one more model (--max-loaded-models); InsufficientMemory
        (code max_loaded_models) when none may: it is room that is missing, and unloading an
        idle model makes it (fleet.cluster.supervisor.elastic)."""
        cap = self.max_loaded_models
        if cap is None:
            return workers
        uid = self.request.get("model_uid") or self.family.model_name
        under = [w for w in workers if len(loaded_models(w, self.models, uid)) < cap]
        if workers and not under:
            raise InsufficientMemory(
                f"every worker holds {cap} loaded model(s), the most it may "
                f"(--max-loaded-models {cap}); terminate one, or give one a keep_alive so "
                "that it can be unloaded", code="max_loaded_models")
        return under

    def rooms(self) -> list[Room]:
        return [worker_room(w, self.models, self.demand) for w in self.workers]

    def as_dict(self) -> dict[str, Any]:
        """The dry run's answer: everything a launch would do, nothing launched."""
        estimate = self.estimate(self.device)
        spec = self.choice.spec
        workers = []
        for worker, room in zip(self.workers, self.rooms(), strict=True):
            need = self.estimate(room.device) if not room.problem else None
            fits = room.fits(None if self.skip_check else need)
            workers.append({"address": room.address, "device": room.device, "where": room.where,
                            "free": room.free if not room.problem else None,
                            "needed": need.total if need else None, "fits": fits,
                            "problem": room.problem, "gpus": list(room.gpus),
                            "gpu_occupancy": gpu_occupancy(worker, self.models)})
        return {
            "model_name": self.family.model_name, "model_type": self.family.model_type,
            "model_engine": self.choice.engine.name, "engine_reason": self.choice.reason,
            "model_format": spec.model_format, "model_size_in_billions": spec.model_size_in_billions,
            "quantization": self.choice.quantization,
            "replica": int(self.request.get("replica") or 1),
            "estimate": estimate.as_dict() if estimate else None,
            "fits": self.refusal is None, "reason": self.refusal.message if self.refusal else None,
            "skip_memory_check": self.skip_check,
            "placements": [{"worker": p.worker.address, "device": p.device,
                            "memory_bytes": p.memory_bytes, "gpus": list(p.gpus)}
                           for p in self.placements],
            "workers": workers,
            "launched": False,
        }


def loaded_models(worker: WorkerRecord, models: Iterable[ModelRecord],
                  besides: str | None = None) -> set[str]:
    """The uids of the models with a replica loading or loaded on `worker` (but `besides`)."""
    return {m.uid for m in models if m.uid != besides
            and any(r.worker_address == worker.address and r.state in ("launching", "ready")
                    for r in m.replicas)}


def plan_launch(catalogue: Catalogue, workers: list[WorkerRecord], models: Iterable[ModelRecord],
                request: dict[str, Any], policy: LaunchPolicy | None = None, place: bool = True,
                fit_anyway: bool = False) -> LaunchPlan:
    """Plan `request` (the launch body). Raises BadRequest for a request that is wrong in itself
    (unknown model, engine, variant, option), Forbidden for one that `policy` does not allow;
    a launch that only lacks room comes back with `refusal`. `place`: whether to choose the
    replicas' workers at all; `fit_anyway`: placed without the memory check when the estimate
    says they do not fit (a model of the last run: it ran here before). Blocking: it may read
    the weights' headers, and placing is quadratic in the replicas (run it in a thread)."""
    policy = policy or LaunchPolicy()
    policy.check_request(request)  # before the first look at the disk
    family = catalogue.find_for_launch(request["model_name"], request.get("model_type"))
    model_format = request.get("model_format") or infer_model_format(request.get("model_path"),
                                                                     family)
    n_gpu = request.get("n_gpu", "auto")
    candidates = workers_at(workers, request.get("worker_ip"))
    has_gpu = (any(w.resources.get("gpus") for w in candidates)
               and wants_gpu(n_gpu, request.get("gpu_idx"))) if candidates else None
    choice = pick_engine(family, request.get("model_engine"), model_format,
                         request.get("model_size_in_billions"), request.get("quantization"),
                         has_gpu=has_gpu)
    options_model = choice.engine.options_model(family.model_type)
    policy.check_plan(request, family, choice.spec,
                      builtin=catalogue.is_builtin(family.model_type, family.model_name),
                      reads_remote_code=issubclass(options_model, RemoteCodeOptions))
    request = checked_request(request, choice.engine, family.model_type)
    check_projector_choice(choice.spec, request.get(PROJECTOR),
                           from_hub=not (request.get("model_path") or choice.spec.model_uri))
    plan = LaunchPlan(family=family, choice=choice, request=request, workers=candidates,
                      models=list(models), skip_check=truthy(request.get(SKIP_MEMORY_CHECK)),
                      has_gpu=has_gpu, max_loaded_models=policy.max_loaded_models)
    if place:
        plan.place(workers)
    if fit_anyway and isinstance(plan.refusal, InsufficientMemory):
        logger.warning("placing %s although %s", request.get("model_uid") or family.model_name,
                       plan.refusal.message)
        plan.skip_check = True
        plan.place(workers)
    return plan
