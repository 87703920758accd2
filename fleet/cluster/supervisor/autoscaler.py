"""Autoscaling while a model serves: the supervisor's side of fleet.autoscale's rule.

It is fed by the one poll of the replicas' own counts (fleet.cluster.supervisor.elastic asks
each ready replica's `activity()` every POLL_S, for idle unloads and for this), and acts through
the paths a user's scaling takes: a replica added as `POST /v1/models/{uid}/replicas` adds one
(placed where there is room, ready before it routes), one removed as `fleet scale` removes one
(the newest, drained first), and a model whose `min_replicas` is 0 unloaded as an idle one (its
next request loads it). One change at a time per model: the rule does not look while one is
under way, and waits its delay again after it.

Each decision is recorded with its reason (fleet.cluster.supervisor.model_events); the figures
an outside autoscaler needs (desired replicas, those wanted but refused for lack of room, the
requests in flight) are in `metrics()` for /metrics."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fleet.autoscale import AUTOSCALE_FIELDS, AutoscaleSettings, Decision, Load, ScaleRule, check_autoscale
from fleet.cluster.supervisor.cluster_state import ClusterState
from fleet.cluster.supervisor.model_events import ModelEvents
from fleet.cluster.supervisor.records import ModelRecord
from fleet.cluster.supervisor.restore import Restorer
from fleet.cluster.supervisor.scaling import Scaler
from fleet.errors import FleetError, InsufficientMemory, NotFound

logger = logging.getLogger(__name__)

Unload = Callable[[ModelRecord, str], Awaitable[None]]


class Autoscaler:
    def __init__(self, cluster: ClusterState, scaler: Scaler, unload: Unload,
                 restorer: Callable[[], Restorer], events: ModelEvents,
                 clock: Callable[[], float] = time.monotonic):
        self._cluster = cluster
        self._scaler = scaler
        self._unload = unload
        self._restorer = restorer
        self._events = events
        self._clock = clock
        self._rules: dict[str, ScaleRule] = {}
        self._loads: dict[str, Load] = {}  # the last look at each model, for /metrics
        self._busy: dict[str, asyncio.Task[None]] = {}
        # Per model: the replicas it should have while a change is under way, or that it wants
        # and no worker has room for (the gauge of replicas waiting for capacity).
        self._desired: dict[str, int] = {}

    @staticmethod
    def settings(record: ModelRecord) -> AutoscaleSettings | None:
        return AutoscaleSettings.of(record.request, record.family.model_type)

    # ---- the poll's looks -------------------------------------------------------------------
    def observe(self, record: ModelRecord, counts: list[tuple[int, int]]) -> None:
        """One look at a ready model's replicas ((served, in progress) of each): remembered for
        /metrics and, when the model is autoscaled, weighed by its rule (a change it decides
        starts in the background: the poll goes on)."""
        uid = record.uid
        load = Load(replicas=len(record.ready_replicas), in_flight=sum(c[1] for c in counts),
                    served=sum(c[0] for c in counts))
        self._loads[uid] = load
        settings = self.settings(record)
        rule = self._rules.setdefault(uid, ScaleRule())
        busy = self._busy.get(uid)
        if settings is None or (busy is not None and not busy.done()):
            rule.reset()
            return
        if load.in_flight <= settings.target_inflight * load.replicas:
            self._desired.pop(uid, None)  # a replica refused for lack of room is wanted no more
        decision = rule.decide(settings, load, self._clock())
        if decision is not None:
            task = asyncio.create_task(self._act(record, decision, load.replicas))
            self._busy[uid] = task
            record.track(task)  # terminate cancels it

    async def _act(self, record: ModelRecord, decision: Decision, before: int) -> None:
        uid = record.uid
        self._desired[uid] = decision.to
        try:
            if decision.to == 0:
                await self._unload(record, decision.reason)  # recorded as the unload
            elif decision.kind == "scale_up":
                await self._scaler.add(uid, decision.to - before, {})
                self._events.record(uid, "scale_up", before, decision.to, decision.reason)
            else:
                self._events.record(uid, "scale_down", before, decision.to, decision.reason)
                await self._scaler.remove_newest(uid)
            self._desired.pop(uid, None)
        except asyncio.CancelledError:
            raise
        except FleetError as exc:
            if not isinstance(exc, InsufficientMemory):
                self._desired.pop(uid, None)  # only lack of room keeps the replica wanted
            if decision.kind == "scale_up" and decision.to > 0:
                self._events.record(uid, "scale_up_failed", before, before, exc.message)
            logger.warning("autoscaling %s to %d failed: %s", uid, decision.to, exc.message)
        except Exception:
            self._desired.pop(uid, None)
            logger.exception("autoscaling %s to %d failed", uid, decision.to)

    # ---- changed while serving --------------------------------------------------------------
    async def configure(self, uid: str, changes: dict[str, Any]) -> dict[str, Any]:
        """`POST /v1/models/{uid}/autoscale`: the fields given replace the model's, checked
        together, saved in the state before they take effect; the settings now in force.
        The replica count saved with them is brought within the bounds, so that a restart
        launches a count that they allow (the rule brings the running count there too)."""
        async with self._cluster.locks.hold(uid):
            record = self._cluster.models.get(uid)
            if record is None or record.stand_in:
                raise NotFound(f"model {uid!r} is not running", code="model_not_found")
            fields = {k: record.request.get(k) for k in AUTOSCALE_FIELDS}
            fields.update({k: v for k, v in changes.items() if k in AUTOSCALE_FIELDS})
            if fields["min_replicas"] is None and fields["max_replicas"] is None:
                fields["min_replicas"] = 1  # naming only the target or a delay turns it on
            check_autoscale(fields)
            request = {**record.request, **{k: v for k, v in fields.items() if v is not None}}
            settings = AutoscaleSettings.of(request, record.family.model_type)
            assert settings is not None
            replica = int(request.get("replica") or 1)
            request["replica"] = min(max(replica, settings.min_replicas, 1), settings.max_replicas)
            self._restorer().save({uid: request})
            record.request = request
            self._rules.pop(uid, None)  # the new settings' delays start now
        logger.info("autoscaling of %s: %s", uid, settings.as_dict())
        return settings.as_dict()

    def describe(self, uid: str) -> dict[str, Any] | None:
        record = self._cluster.models.get(uid)
        settings = self.settings(record) if record is not None else None
        return settings.as_dict() if settings is not None else None

    # ---- what /metrics shows ----------------------------------------------------------------
    def desired(self, record: ModelRecord) -> int:
        if record.idle:
            return 0
        wanted = self._desired.get(record.uid)
        return wanted if wanted is not None else len(
            [r for r in record.replicas if r.state not in ("draining", "terminating")])

    def metrics(self) -> list[dict[str, Any]]:
        """Per model: replicas loaded, desired, wanted and waiting for room, requests in flight
        (running plus queued) as the replicas counted them at the last look, and the scale
        events by direction so far."""
        rows = []
        for uid, record in list(self._cluster.models.items()):
            loaded = len(record.ready_replicas)
            load = self._loads.get(uid)
            desired = self.desired(record)
            busy = self._busy.get(uid)
            changing = busy is not None and not busy.done()
            rows.append({"model": uid, "replicas": loaded, "desired": desired,
                         "waiting_for_capacity": 0 if changing else max(0, desired - loaded),
                         "in_flight": load.in_flight if load and not record.idle else 0,
                         "events": self._events.counts(uid)})
        return rows

    def forget(self, uid: str) -> None:
        for table in (self._rules, self._loads, self._busy, self._desired):
            table.pop(uid, None)  # type: ignore[attr-defined]
        self._events.forget(uid)
