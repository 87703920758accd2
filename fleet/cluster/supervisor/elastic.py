"""Models that come and go with demand: a model with a `keep_alive` (fleet.keep_alive) is
unloaded after that long without a request, and loaded again by the next one.

Idle is read from the replicas' own counts (ModelActor.activity: requests served, requests in
progress), asked every POLL_S: the supervisor is not on the request path and learns of requests
only this way. A model whose counts have not moved for its keep_alive, with nothing in progress,
is unloaded: it is marked idle first (the API's next request then asks for a load instead of
being routed), its replicas drain and their processes end, and the saved state says `idle` so a
restart keeps it so. It stays listed, with its uid, options and cached weights.

A load (`wake`) places the model's replicas as a launch would and waits for them; the requests
that arrive meanwhile wait on the same load (one load however many ask). A load that fails leaves
the model idle with the reason as its error, so that the next request tries again, rather than
a failed model that someone must relaunch."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Coroutine, Sequence
from typing import Any

import xoscar as xo

from fleet.cluster.deadlines import within
from fleet.cluster.supervisor.cluster_state import ClusterState
from fleet.cluster.supervisor.model_events import ModelEvents
from fleet.cluster.supervisor.records import ModelRecord, ReplicaRecord
from fleet.cluster.supervisor.replica_launcher import ReplicaLauncher
from fleet.cluster.supervisor.restore import Restorer
from fleet.errors import FleetError, InsufficientMemory, Unavailable
from fleet.keep_alive import describe_keep_alive, parse_keep_alive
from fleet.settings import control_call_timeout_s, drain_timeout_s, heartbeat_interval_s

logger = logging.getLogger(__name__)

POLL_S = 0.5

Plan = Callable[[dict[str, Any]], Awaitable[Any]]  # a launch request -> its LaunchPlan
# Plan a launch as though these models were unloaded (none: as the cluster is) -> its LaunchPlan.
Replan = Callable[[Sequence[ModelRecord]], Awaitable[Any]]
Launch = Callable[[ModelRecord], Coroutine[Any, Any, None]]  # start a record's launching replicas
# Told each look at a ready model's replicas ((served, in progress) of each): the autoscaler
# (fleet.cluster.supervisor.autoscaler) reads the same poll rather than asking again.
Observe = Callable[[ModelRecord, list[tuple[int, int]]], None]


class Elastic:
    def __init__(self, cluster: ClusterState, launcher: ReplicaLauncher,
                 restorer: Callable[[], Restorer], plan: Plan, launch: Launch,
                 default_keep_alive: float | None = None, observe: Observe | None = None,
                 events: ModelEvents | None = None):
        self._cluster = cluster
        self._launcher = launcher
        self._restorer = restorer
        self._plan = plan
        self._launch = launch
        self._default = default_keep_alive
        self._observe = observe
        self._events = events or ModelEvents()  # unloads and loads, with the reason
        # Per model uid: the requests its replicas had served when last asked, and since when
        # that count has not moved (time.monotonic()).
        self._seen: dict[str, tuple[int, float]] = {}
        # Actor references of the replicas polled, by their launch attempt's key (worker_key).
        self._refs: dict[str, Any] = {}

    def keep_alive(self, record: ModelRecord) -> float | None:
        """The model's own keep_alive, else the cluster's; None: it stays loaded."""
        value = record.request.get("keep_alive")
        return self._default if value is None else parse_keep_alive(value)

    async def set_keep_alive(self, record: ModelRecord, value: str | float) -> bool:
        """A request's keep_alive (Ollama's), the model's from now on: saved as the launch
        option is, so that a restart keeps it. False when the model had that one already."""
        seconds = parse_keep_alive(value)
        uid = record.uid
        async with self._cluster.locks.hold(uid):  # not beside a terminate, a load or an unload
            own = record.request.get("keep_alive")
            if not self._cluster.current(record) or (
                    own is not None and parse_keep_alive(own) == seconds):
                return False
            request = dict(record.request, keep_alive=value)
            self._restorer().save({uid: request})
            record.request = request
            replicas = len(record.replicas)
            self._events.record(uid, "keep_alive", replicas, replicas,
                                f"a request set keep_alive {describe_keep_alive(seconds)}")
            # The API processes drop what they knew of it (fleet.api.keep_alives).
            self._cluster.routes.touch(uid)
            return True

    # ---- unloading idle models -------------------------------------------------------------
    async def watch(self) -> None:
        """For as long as the supervisor runs: unload the models idle past their keep_alive."""
        while True:
            await asyncio.sleep(POLL_S)
            models = list(self._cluster.models.values())
            current = {r.worker_key for m in models for r in m.replicas}
            for gone in [key for key in self._refs if key not in current]:
                del self._refs[gone]
            # Together: a replica slow to answer delays no other model's look.
            await asyncio.gather(*(self._check_safely(r) for r in models))

    async def _check_safely(self, record: ModelRecord) -> None:
        try:
            await self._check(record)
        except asyncio.CancelledError:
            raise
        except Exception:  # one model's trouble must not stop the others' unloads
            logger.exception("could not check whether %s is idle", record.uid)

    async def _check(self, record: ModelRecord) -> None:
        keep_alive = self.keep_alive(record)
        if record.idle or record.state != "ready":
            self._seen.pop(record.uid, None)
            return
        answers = await asyncio.gather(*(self._activity(r) for r in record.replicas))
        counts = [c for c in answers if c is not None]
        if len(counts) < len(answers):
            return  # a replica that does not answer now: not known to be idle
        if self._observe is not None:  # every ready model: /metrics shows their load
            self._observe(record, counts)
        if keep_alive is None:
            self._seen.pop(record.uid, None)
            return
        served = sum(c[0] for c in counts)
        in_progress = sum(c[1] for c in counts)
        now = time.monotonic()
        seen = self._seen.get(record.uid)
        if seen is None or seen[0] != served or in_progress:
            self._seen[record.uid] = (served, now)
            return
        if now - seen[1] >= keep_alive:
            await self.unload(record, f"no request for {describe_keep_alive(keep_alive)}")

    async def _activity(self, replica: ReplicaRecord) -> tuple[int, int] | None:
        if replica.state != "ready" or not replica.actor_address:
            return (0, 0)
        try:
            # The reference is kept: making one is a call to the replica's process of its own,
            # and this poll runs twice a second for every replica.
            ref = self._refs.get(replica.worker_key)
            if ref is None:
                ref = await within(
                    xo.actor_ref(address=replica.actor_address, uid=replica.actor_uid),
                    control_call_timeout_s(), f"replica {replica.replica_uid}")
                self._refs[replica.worker_key] = ref
            served, in_progress = await within(ref.activity(), control_call_timeout_s(),
                                               f"replica {replica.replica_uid}")
            return int(served), int(in_progress)
        except Exception as exc:
            self._refs.pop(replica.worker_key, None)
            logger.debug("activity of %s: %r", replica.replica_uid, exc)
            return None

    async def unload(self, record: ModelRecord, reason: str) -> None:
        """Stop the model's replicas and keep it, idle, until its next request."""
        uid = record.uid
        async with self._cluster.locks.hold(uid):
            if not self._cluster.current(record) or record.idle or record.state != "ready":
                return
            request = dict(record.request, idle=True)
            self._restorer().save({uid: request})  # before it is visible
            record.request, record.idle, record.error = request, True, None
            self._seen.pop(uid, None)
            replicas = list(record.replicas)
            for replica in replicas:
                replica.state = "draining"
            self._cluster.routes.touch(uid)  # the API asks for a load from now on
            logger.info("unloading %s (%s)", uid, reason)
            self._events.record(uid, "unload", len(replicas), 0, reason)
            await asyncio.gather(*(self._launcher.stop(r, drain_timeout_s()) for r in replicas))
            record.replicas = [r for r in record.replicas if r not in replicas]

    # ---- making room ----------------------------------------------------------------------------
    async def make_room(self, plan: Callable[[], Awaitable[Any]], for_uid: str) -> Any:
        """`plan()` again after unloading, one at a time, the least recently used model that has
        a keep_alive (never one without), for as long as the plan lacks room; the last plan.
        Called under the planning lock, so that what is freed goes to this launch."""
        planned, _ = await self._room(lambda _gone: plan(), for_uid, unload=True)
        return planned

    async def would_make_room(self, plan: Replan,
                              for_uid: str) -> tuple[Any, list[ModelRecord]]:
        """What make_room would do, unloading nothing (the will-it-fit estimate): the plan made
        as though the models chosen were unloaded (`plan(gone)`), and those models."""
        return await self._room(plan, for_uid, unload=False)

    async def _room(self, plan: Replan, for_uid: str,
                    unload: bool) -> tuple[Any, list[ModelRecord]]:
        """The one loop of make_room and would_make_room, so that both choose alike."""
        chosen: list[ModelRecord] = []
        planned = await plan(())
        while isinstance(planned.refusal, InsufficientMemory):
            victim = self._least_recently_used(for_uid, chosen)
            if victim is None:
                break
            chosen.append(victim)
            if not unload:
                planned = await plan(chosen)
                continue
            planned = await self._unload_and_plan(victim, plan, for_uid)
        return planned, chosen

    async def _unload_and_plan(self, victim: ModelRecord, plan: Replan, for_uid: str) -> Any:
        """Unload `victim` and plan again. The room it makes within the caps (models loaded,
        --max-model-memory) counts at once; the memory it frees counts once its workers have
        measured it, so a plan that still lacks memory waits for their next report (a
        heartbeat at most) and is made again, before anything else is unloaded for it."""
        workers = {r.worker_address for r in victim.replicas}
        since = time.monotonic()
        await self.unload(victim, f"room for {for_uid}")
        planned = await plan(())
        if isinstance(planned.refusal, InsufficientMemory) and \
                planned.refusal.code == "insufficient_memory":
            await self._fresh_reports(workers, since)
            planned = await plan(())
        return planned

    def _least_recently_used(self, besides: str,
                             chosen: Collection[ModelRecord] = ()) -> ModelRecord | None:
        """A loaded model with a keep_alive, the one whose last request is the oldest (one not
        seen idle yet counts as just used), other than `besides` and those `chosen` already."""
        now = time.monotonic()
        passed = {besides, *(m.uid for m in chosen)}
        candidates = [m for m in self._cluster.models.values()
                      if m.uid not in passed and not m.idle and m.state == "ready"
                      and self.keep_alive(m) is not None]
        if not candidates:
            return None
        return min(candidates, key=lambda m: self._seen.get(m.uid, (0, now))[1])

    async def _fresh_reports(self, addresses: set[str], since: float) -> None:
        """Wait (a heartbeat at most) for those workers to report their memory after `since`."""
        deadline = time.monotonic() + heartbeat_interval_s() * 2
        while time.monotonic() < deadline:
            workers = [self._cluster.workers.get(a) for a in addresses]
            if all(w is None or w.last_heartbeat > since for w in workers):
                return
            await asyncio.sleep(0.1)

    # ---- loading them again -----------------------------------------------------------------
    async def wake(self, record: ModelRecord) -> None:
        """Load an idle model (one load for every caller while it runs); Unavailable with the
        reason when it cannot be loaded, the model staying idle."""
        if record.waking is None or record.waking.done():
            if not record.idle:
                return
            record.waking = asyncio.create_task(self._wake(record))
            record.track(record.waking)  # terminate cancels it
        await asyncio.shield(record.waking)

    async def _wake(self, record: ModelRecord) -> None:
        uid = record.uid
        async with self._cluster.locks.planning, self._cluster.locks.hold(uid):
            if not self._cluster.current(record) or not record.idle:
                return
            count = int(record.request.get("replica") or 1)
            try:
                plan = await self.make_room(
                    lambda: self._plan(dict(record.request, replica=count, idle=None)), uid)
                if plan.refusal is not None:
                    raise plan.refusal
            except FleetError as exc:
                self._still_idle(record, exc.message)
                raise Unavailable(f"model {uid} could not be loaded: {exc.message}",
                                  code="model_load_failed") from None
            request = {k: v for k, v in record.request.items() if k != "idle"}
            self._restorer().save({uid: request})
            first = max((r.index for r in record.replicas), default=-1) + 1
            record.replicas = [ReplicaRecord(replica_uid=f"{uid}-{first + n}", index=first + n,
                                             worker_address=p.worker.address, device=p.device,
                                             memory_bytes=p.memory_bytes, gpus=list(p.gpus))
                               for n, p in enumerate(plan.placements)]
            record.request, record.idle, record.error, record.rejection = request, False, None, None
            logger.info("loading %s for a request (%d replica(s))", uid, count)
            self._events.record(uid, "load", 0, count, "a request arrived")
            record.launch_task = asyncio.create_task(self._launch(record))
        await asyncio.shield(record.launch_task)
        if record.state != "ready":
            reason = record.why_not_ready() or "its replicas did not start"
            async with self._cluster.locks.hold(uid):
                if self._cluster.current(record):
                    await asyncio.gather(*(self._launcher.stop(r) for r in record.replicas))
                    record.replicas = []
                    self._still_idle(record, reason)
            raise Unavailable(f"model {uid} could not be loaded: {reason}",
                              code="model_load_failed")
        self._cluster.routes.touch(uid)

    def _still_idle(self, record: ModelRecord, reason: str) -> None:
        """After a failed load: idle again, with the reason to show, and so in the saved state."""
        record.idle, record.error, record.rejection = True, reason, None
        request = dict(record.request, idle=True)
        try:
            self._restorer().save({record.uid: request})
        except FleetError:  # logged: a restart would load it at once instead of on demand
            pass
        record.request = request
        logger.warning("model %s could not be loaded: %s; it stays idle", record.uid, reason)
        self._events.record(record.uid, "load_failed", 0, 0, reason)
