"""SupervisorActor: one per cluster. Knows the workers, the catalogue and the launched models;
places replicas, drives their launch, and restores launched models after a restart.

It is not on the request path: the API asks it once where a model's replicas are, then calls
them directly."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

import xoscar as xo

from fleet.catalogue.registry import Catalogue
from fleet.cluster.actor_uids import SUPERVISOR_UID
from fleet.cluster.supervisor import adoption, aliases, cache_admin, replica_status
from fleet.cluster.supervisor.autoscaler import Autoscaler
from fleet.cluster.supervisor.cluster_state import ClusterState
from fleet.cluster.supervisor.elastic import Elastic
from fleet.cluster.supervisor.launch_plan import plan_launch
from fleet.cluster.supervisor.launch_policy import LaunchPolicy
from fleet.cluster.supervisor.model_events import ModelEvents
from fleet.cluster.supervisor.records import ModelRecord, ReplicaRecord, WorkerRecord
from fleet.cluster.supervisor.replica_launcher import ReplicaLauncher
from fleet.cluster.supervisor.replica_supervision import ReplicaSupervision
from fleet.cluster.supervisor.restore import Restorer
from fleet.cluster.supervisor.scaling import Scaler
from fleet.cluster.supervisor.unload_preview import as_if_unloaded, by_worker
from fleet.cluster.supervisor.worker_registry import WorkerRegistry
from fleet.database import Database, open_database
from fleet.database.launched_models import ModelStore
from fleet.database.registrations import DatabaseRegistrations
from fleet.engines.registry import engine_matrix, xinference_engine_params
from fleet.errors import BadRequest, FleetError, LaunchFailed, NotFound, Unavailable
from fleet.keep_alive import parse_keep_alive
from fleet.limits import MAX_REPLICAS
from fleet.server_config import ServerConfig
from fleet.settings import drain_timeout_s, restore_grace_s

logger = logging.getLogger(__name__)


class SupervisorActor(xo.StatelessActor):
    def __init__(self, config: ServerConfig | None = None) -> None:
        super().__init__()
        # What launches may do (fleet.cluster.supervisor.launch_policy): the operator's choice at start.
        self._policy = LaunchPolicy.from_config(config)
        # Workers, models, route events and per-model locks (fleet.cluster.supervisor.cluster_state).
        self._cluster = ClusterState()
        # Launches are planned one at a time (in a thread, off the event loop), so that two
        # of them never count the same free memory.
        self._launch_lock = self._cluster.locks.planning
        self._workers: dict[str, WorkerRecord] = self._cluster.workers
        self._models: dict[str, ModelRecord] = self._cluster.models
        self._launcher = ReplicaLauncher(self._workers)
        self._supervision = ReplicaSupervision(self._cluster, self._launcher,
                                               self._place_elsewhere)
        self._registry = WorkerRegistry(self._cluster, self._supervision, self._launcher)
        self._started_at = time.monotonic()
        self._local_worker = False  # a worker in this process joined (`fleet local`)
        self._scaler = Scaler(self._cluster, self._launcher, lambda: self.restorer, self._plan,
                              self.terminate_model)
        # Idle unload and load on demand (fleet.cluster.supervisor.elastic).
        self._events = ModelEvents()  # what was done to each model on its own, and why
        self._elastic = Elastic(self._cluster, self._launcher, lambda: self.restorer, self._plan,
                                self._launch,
                                parse_keep_alive(config.keep_alive) if config else None,
                                observe=lambda record, counts: self._autoscaler.observe(
                                    record, counts), events=self._events)
        # Replicas added and removed with the load (fleet.cluster.supervisor.autoscaler).
        self._autoscaler = Autoscaler(self._cluster, self._scaler, self._elastic.unload,
                                      lambda: self.restorer, self._events)
        # The state's database (fleet.database): registrations and launched models, read once
        # at start and written before each change shows.
        self._database_url = config.database_url if config else None
        self._database: Database | None = None
        self._catalogue: Catalogue | None = None
        # The models of the last run, and every write of the saved state (fleet.cluster.supervisor.restore).
        self._restorer: Restorer | None = None
        self._monitor: asyncio.Task[None] | None = None
        self._idle_watch: asyncio.Task[None] | None = None

    @classmethod
    def default_uid(cls) -> str:
        return SUPERVISOR_UID

    async def __post_create__(self) -> None:
        # The server upgraded it (and imported FLEET_HOME's old files) before starting this:
        # opening it checks the schema again, which then changes nothing.
        self._database = open_database(self._database_url)
        self._catalogue = Catalogue(DatabaseRegistrations(self._database))
        self._restorer = Restorer(self._cluster, ModelStore(self._database),
                                  lambda: self.catalogue)
        self._monitor = asyncio.create_task(self._registry.watch())
        self._idle_watch = asyncio.create_task(self._elastic.watch())
        # Then the models of the last run whose workers did not come back are launched anew,
        # and those rebuilt from what workers run are restored with the replicas reported.
        asyncio.get_running_loop().call_later(restore_grace_s(), self._restore_due)

    async def __pre_destroy__(self) -> None:
        for task in (self._monitor, self._idle_watch):
            if task is not None:
                task.cancel()
        if self._database is not None:
            self._database.close()

    @property
    def catalogue(self) -> Catalogue:
        assert self._catalogue is not None
        return self._catalogue

    @property
    def restorer(self) -> Restorer:
        assert self._restorer is not None
        return self._restorer

    # ---- workers -------------------------------------------------------------------------

    async def register_worker(self, address: str, resources: dict[str, Any],
                              replicas: list[dict[str, Any]] | None = None) -> None:
        """A worker joins (again), with the replicas it runs (fleet.cluster.supervisor.worker_registry)."""
        await self._registry.register(address, resources, replicas or [],
                                      self.restorer.adoptable)
        self._local_worker |= address == self.address
        await self._rebuild_reported()
        self._restore_due()

    async def _rebuild_reported(self) -> None:
        """A model whose replicas workers run, and whose entry the saved state lost, gets it
        back from the launch request that the workers report (fleet.cluster.supervisor.restore)."""
        for uid, reports in list(self._registry.reported.items()):
            if uid in self.restorer.pending:
                continue
            if not self.restorer.rebuild(uid, reports[0].get("request")):
                for report in self._registry.take_reported(uid):  # refused: never untracked
                    await self._launcher.end(report["worker"], report["key"])

    def heartbeat(self, address: str, resources: dict[str, Any]) -> bool:
        return self._registry.heartbeat(address, resources)

    def _restore_due(self) -> None:
        """Restore the models of the last run whose time has come (see _may_restore)."""
        if self.restorer.pending:
            asyncio.create_task(self.restorer.run(self._launch_restored, self._may_restore))

    def _may_restore(self, uid: str, request: dict[str, Any]) -> bool:
        """After a restart, a model's workers may still run its replicas: it waits for them to
        join again and report them (`restore_grace_s`), unless they all have, or the workers
        restarted with this supervisor (`fleet local`: its replicas ended with it)."""
        if self._local_worker or time.monotonic() - self._started_at >= restore_grace_s():
            return True
        return len(self._registry.reported.get(uid, [])) >= adoption.wanted(request)

    async def _launch_restored(self, request: dict[str, Any], **_: Any) -> str:
        reports = self._registry.take_reported(request["model_uid"])
        adopted = [ReplicaRecord.adopted(r, r["worker"]) for r in reports]
        if request["model_uid"] in self.restorer.rebuilt:
            # The count its lost entry asked for is not known (a worker knows the one its
            # replica was launched with, which scaling may have changed since): those running.
            request = dict(request, replica=min(max(1, len(adopted)), MAX_REPLICAS))
        keep, extra = adopted[:adoption.wanted(request)], adopted[adoption.wanted(request):]
        try:
            return await self.launch_model(request, wait_ready=False, restored=True, adopted=keep)
        except BaseException:
            extra = adopted  # not restored: none of them is tracked
            raise
        finally:
            for replica in extra:  # never left running untracked
                await self._launcher.end(replica.worker_address, replica.worker_key)

    def replica_down(self, worker_address: str, worker_key: str, reason: str) -> bool:
        """A worker's report that a replica's process exited or hung (the worker has ended
        it): the replica is restarted."""
        restarting = self._supervision.replica_down(worker_key, reason)
        logger.info("worker %s: replica %s is down: %s%s", worker_address, worker_key, reason,
                    "" if restarting else " (not serving: nothing to restart)")
        return restarting

    async def watch_routes(self, epoch: str, version: int,
                           timeout: float = 30.0) -> tuple[str, int, list[str] | None]:
        """Long poll for the API (fleet.api.routing): the uids whose routes changed."""
        return await self._cluster.routes.wait(epoch, version, timeout)

    def close_route_events(self) -> None:
        self._cluster.routes.close()

    async def list_workers(self) -> list[dict[str, Any]]:
        return await self._registry.rows()

    # ---- launching -----------------------------------------------------------------------

    async def _plan(self, request: dict[str, Any], place: bool = True,
                    fit_anyway: bool = False, unloaded: Sequence[ModelRecord] = ()) -> Any:
        """plan_launch in a thread: it reads weights' headers, lists folders and places the
        replicas, which must not stall the event loop that the API (in `fleet local`), the
        heartbeats and the actors share. `unloaded`: planned as though those models were
        (the estimate's view, fleet.cluster.supervisor.unload_preview)."""
        workers, models = as_if_unloaded(self._workers.values(), self._models.values(), unloaded)
        return await asyncio.to_thread(plan_launch, self.catalogue, workers, models, request,
                                       self._policy, place, fit_anyway)

    async def _prepare(self, request: dict[str, Any], restored: bool,
                       adopted: list[ReplicaRecord]) -> ModelRecord:
        """Plan the launch (engine, options, memory, workers) and refuse it at once, with the
        numbers, when it fits nowhere or is not allowed, before any process starts. `adopted`:
        replicas still running from before a supervisor restart (fleet.cluster.supervisor.adoption).
        A restored model is placed even where its estimate does not fit: it ran here before,
        and an estimate must not make it vanish from the saved state; launched anyway, it
        serves, or fails visibly and stays listed to be dealt with."""
        idle = bool(request.get("idle")) and not adopted
        plan = await self._elastic.make_room(
            lambda: self._plan(adoption.plan_request(request, adopted),
                               place=not idle and not adoption.complete(request, adopted),
                               fit_anyway=restored),
            request.get("model_uid") or request["model_name"])
        uid = request.get("model_uid") or plan.family.model_name
        existing = self._models.get(uid)
        if existing is not None and existing.state != "failed" and not existing.stand_in:
            raise BadRequest(f"model uid {uid!r} is already in use; terminate it or pick another",
                             code="duplicate_model_uid")
        aliases.check_launch(self._cluster, uid, request)
        if plan.refusal is not None:
            raise plan.refusal
        replicas = adoption.replicas(uid, adopted, plan.placements)
        estimate = await asyncio.to_thread(plan.estimate, plan.device)  # may read the weights
        record_request = adoption.record_request(plan.request, request, uid)
        if not idle:
            record_request.pop("idle", None)  # adopted replicas run: it is loaded
        return ModelRecord(
            uid=uid, family=plan.family, spec=plan.choice.spec,
            quantization=plan.choice.quantization, engine=plan.choice.engine.name,
            request=record_request, replicas=[] if idle else replicas,
            engine_reason=plan.choice.reason,
            memory_estimate=estimate.as_dict() if estimate else None, idle=idle,
        )

    async def estimate_launch(self, request: dict[str, Any]) -> dict[str, Any]:
        """The plan of a launch (engine, memory estimate, workers), launching nothing; refused
        like the launch itself, so it says nothing about paths a launch may not read. With the
        models it would unload to make room (`would_unload`, by worker), chosen as the launch
        would choose them (fleet.cluster.supervisor.elastic)."""
        plan, gone = await self._elastic.would_make_room(
            lambda unloaded: self._plan(request, unloaded=unloaded),
            request.get("model_uid") or request["model_name"])
        answer = await asyncio.to_thread(plan.as_dict)
        return {**answer, "would_unload": by_worker(gone)}

    async def launch_model(
        self, request: dict[str, Any], wait_ready: bool = True, restored: bool = False,
        adopted: list[ReplicaRecord] | None = None,
    ) -> str:
        async with self._launch_lock:
            record = await self._prepare(request, restored, adopted or [])
            async with self._cluster.locks.hold(record.uid):
                record.restored = restored
                # Written before anything is visible: a write that fails changes nothing.
                self.restorer.save({record.uid: record.request})
                stale = self._models.pop(record.uid, None)
                if stale is not None:  # a failed launch under the same uid: clear it away first
                    await self._stop_replicas(stale)
                self._models[record.uid] = record
                aliases.announce(self._cluster, record)
                if not record.idle:  # an idle model loads on its first request
                    record.launch_task = asyncio.create_task(self._launch(record))
        estimate = (record.memory_estimate or {}).get("summary", "not estimated")
        logger.info("launching %s (%s on %s [%s], %d replica(s), each needs %s)", record.uid,
                    record.family.model_name, record.engine, record.engine_reason,
                    len(record.replicas), estimate)
        if wait_ready:
            await self.wait_ready(record.uid)
        return record.uid

    async def wait_ready(self, uid: str) -> None:
        record = self._get(uid)
        task = record.launch_task
        if task is not None:
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:
                if not task.cancelled():
                    raise  # our own caller went away
                raise LaunchFailed(f"launch of {uid} was cancelled: the model was terminated") from None
        if record.rejection is not None:
            if self._models.get(uid) is record:
                del self._models[uid]
            raise record.rejection
        if record.state == "failed":
            raise LaunchFailed(f"launch of {uid} failed: {record.error}")

    async def _launch(self, record: ModelRecord) -> None:
        starting = [r for r in record.replicas if r.state == "launching"]  # not the adopted
        results = await asyncio.gather(
            *(self._launcher.start(record, r) for r in starting), return_exceptions=True
        )
        outcomes = zip(starting, results, strict=True)
        errors = [(r, e) for r, e in outcomes if isinstance(e, BaseException)]
        for replica, error in errors:
            replica.state = "failed"
            # The worker's report (the process died, or hung) says more than a broken call.
            replica.error = replica.down_reason or (
                error.message if isinstance(error, FleetError) else repr(error))
        if errors:
            record.error = errors[0][0].error
            bad_requests = [e for _, e in errors if isinstance(e, BadRequest)]
            if bad_requests:
                # The request itself was wrong (say, a path missing on the worker): answer 400
                # and keep no record of a launch that never really began.
                record.rejection = bad_requests[0]
            logger.error("launch of %s failed: %s", record.uid, record.error)
            # Nothing half-started: every replica's process goes, the failure stays readable.
            await self._stop_replicas(record)
            self.restorer.save_quietly()
            return
        self._cluster.routes.touch(record.uid)
        logger.info("model %s is ready", record.uid)

    async def _stop_replicas(self, record: ModelRecord, drain_s: float = 0.0) -> None:
        """End every replica's process (at once, each after its requests when `drain_s`)."""
        await asyncio.gather(*(self._launcher.stop(r, drain_s) for r in record.replicas))

    async def _place_elsewhere(self, record: ModelRecord, replica: ReplicaRecord,
                               avoid: str | None) -> Any:
        """A worker other than `avoid` with room for one more replica of `record` (called
        under the planning lock); raises the refusal, with the numbers, when none has."""
        workers = [w for w in self._workers.values() if w.address != avoid]
        plan = await asyncio.to_thread(plan_launch, self.catalogue, workers,
                                       list(self._models.values()),
                                       dict(record.request, replica=1), self._policy)
        if plan.refusal is not None:
            raise plan.refusal
        return plan.placements[0]

    # ---- models --------------------------------------------------------------------------

    def _get(self, uid: str) -> ModelRecord:
        record = self._models.get(uid)
        if record is None:
            raise NotFound(f"model {uid!r} is not running", code="model_not_found")
        return record

    async def terminate_model(self, uid: str) -> None:
        """Stop routing to the model, let its replicas finish the requests they have (up to
        `drain_timeout_s`), then end their processes."""
        async with self._cluster.locks.hold(uid):
            record = self._get(uid)
            # Its removal is written first: a write that fails leaves it running, and says so.
            self.restorer.save({uid: None})
            serving = {id(r) for r in record.ready_replicas}
            for replica in record.replicas:
                replica.state = "terminating"
            self._cluster.routes.touch(uid)
            for task in [record.launch_task, *record.tasks]:
                if task is not None and not task.done():
                    task.cancel()
            await asyncio.gather(*(self._launcher.stop(r, drain_timeout_s() if id(r) in serving
                                                       else 0.0) for r in record.replicas))
            self._models.pop(uid, None)
            aliases.announce(self._cluster, record)
            self._autoscaler.forget(uid)
        logger.info("model %s terminated", uid)

    async def add_model_replicas(self, uid: str, replica: int = 1,
                                 overrides: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Scale up while serving (fleet.cluster.supervisor.scaling)."""
        return await self._scaler.add(uid, replica, overrides or {})

    async def terminate_model_replica(self, uid: str, replica_id: int) -> int:
        """Drain and remove one replica; the replicas left (fleet.cluster.supervisor.scaling)."""
        return await self._scaler.remove(uid, replica_id)

    async def wake(self, uid: str) -> None:
        """Load an idle model, for a request that arrived for it (fleet.cluster.supervisor.elastic);
        Unavailable, with the reason, when it cannot be loaded."""
        await self._elastic.wake(self._get(uid))

    async def set_keep_alive(self, uid: str, value: str | float) -> bool:
        """A request's keep_alive becomes the model's (fleet.cluster.supervisor.elastic); False
        when it was that already."""
        return await self._elastic.set_keep_alive(self._get(uid), value)

    async def set_autoscale(self, uid: str, changes: dict[str, Any]) -> dict[str, Any]:
        """Change a model's autoscaling while it serves (fleet.cluster.supervisor.autoscaler)."""
        return await self._autoscaler.configure(uid, changes)

    def aliases(self) -> dict[str, str]:
        """alias -> model uid, for the API's routing (fleet.model_aliases)."""
        return aliases.alias_table(self._cluster)

    async def set_aliases(self, uid: str, names: list[str]) -> list[str]:
        return await aliases.set_aliases(self._cluster, self.restorer, uid, names)

    def model_events(self, uid: str) -> list[dict[str, Any]]:
        """The model's recent scale, unload and load events, oldest first, with their reasons."""
        self._get(uid)
        return self._events.recent(uid)

    def autoscale_metrics(self) -> list[dict[str, Any]]:
        return self._autoscaler.metrics()

    def list_models(self) -> list[dict[str, Any]]:
        return [m.list_entry() for m in self._models.values()]

    def describe_model(self, uid: str) -> dict[str, Any]:
        """The record's own fields, with what the supervisor decides for it: its autoscaling,
        the replicas it should have now, and its keep_alive in force (its own, else the
        cluster's; None: never unloaded)."""
        record = self._get(uid)
        return {**record.describe(), "autoscale": self._autoscaler.describe(uid),
                "desired_replicas": self._autoscaler.desired(record),
                "keep_alive_s": self._elastic.keep_alive(record)}

    def route(self, uid: str) -> list[tuple[str, str, str, str]]:
        """(address, actor uid, replica uid, worker) of every ready replica; the API caches it.
        An idle model's is Unavailable with the code `model_idle`: the API asks for its load
        (`wake`) and then for its route again."""
        record = self._get(uid)
        if record.idle or (record.waking is not None and not record.waking.done()):
            raise Unavailable(f"model {uid} is idle; a request loads it", code="model_idle")
        ready = [(r.actor_address, r.actor_uid, r.replica_uid, r.worker_address)
                 for r in record.ready_replicas]
        if ready:
            return ready  # type: ignore[return-value]
        state, why = record.state, record.why_not_ready()
        if state == "failed":
            raise Unavailable(f"model {uid} failed: {why}", code="model_failed")
        because = f": {why}" if why else ""
        raise Unavailable(f"model {uid} has no ready replica, it is {state}{because}",
                          code=f"model_{state}" if state != "launching" else "model_not_ready")

    async def replica_status(self, uid: str) -> list[dict[str, Any]]:
        return await replica_status.of_model(self._get(uid))

    async def replica_metrics(self) -> list[dict[str, Any]]:
        return await replica_status.of_every_model(self._models)

    async def launch_progress(self, uid: str) -> dict[str, Any]:
        record = self._get(uid)
        replicas = await self.replica_status(uid)
        progress = sum(r.get("progress", 0.0) for r in replicas) / max(1, len(replicas))
        stages = sorted({str(r.get("stage")) for r in replicas})
        return {"progress": round(progress, 4), "status": record.state,
                "stage": ", ".join(stages), "error": record.why_not_ready()}

    # ---- catalogue -----------------------------------------------------------------------

    def register_model(self, model_type: str, family: dict[str, Any], persist: bool) -> None:
        self.catalogue.register(model_type, family, persist)

    def unregister_model(self, model_type: str, model_name: str) -> None:
        if self.catalogue.is_builtin(model_type, model_name):
            raise BadRequest(f"{model_name!r} is a built-in model and cannot be unregistered")
        in_use = [m.uid for m in self._models.values() if m.family.model_name == model_name]
        if in_use:
            raise BadRequest(f"{model_name} is running as {', '.join(in_use)}; terminate it first")
        self.catalogue.unregister(model_type, model_name)

    def list_registrations(self, model_type: str, detailed: bool) -> list[dict[str, Any]]:
        return self.catalogue.list_registrations(model_type, detailed)

    def get_registration(self, model_type: str, model_name: str) -> dict[str, Any]:
        return self.catalogue.describe_registration(model_type, model_name)

    def engines_for(self, model_name: str, model_type: str | None, detailed: bool) -> Any:
        family = self.catalogue.find(model_name, model_type)
        # Whether an engine that needs a GPU could run: not known before a worker has joined.
        has_gpu = any(w.resources.get("gpus") for w in self._workers.values()) \
            if self._workers else None
        if detailed:
            return {"model_name": model_name, "model_type": family.model_type,
                    "engines": engine_matrix(family, has_gpu)}
        return xinference_engine_params(family, has_gpu)

    def status(self) -> dict[str, Any]:
        return {"workers": len(self._workers), "models": len(self._models)}

    # ---- weights caches (fleet.cluster.supervisor.cache_admin asks each worker) -----------------------

    async def list_cached_models(self, model_name: str | None = None,
                                 worker_ip: str | None = None) -> dict[str, Any]:
        return await cache_admin.list_cached(list(self._workers.values()), self.catalogue,
                                             model_name, worker_ip)

    async def list_deletable_models(self, model_version: str,
                                    worker_ip: str | None = None) -> dict[str, Any]:
        return await cache_admin.deletable(list(self._workers.values()), model_version, worker_ip)

    async def remove_cached_model(self, model_version: str, worker_ip: str | None = None,
                                  force: bool = False) -> dict[str, Any]:
        return await cache_admin.remove(list(self._workers.values()), model_version, worker_ip,
                                        force)
