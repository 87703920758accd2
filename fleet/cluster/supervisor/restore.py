"""The models of the last run, brought back one by one, and what the saved state says.

Each launched model saved in the database (fleet.database.launched_models) is checked as a
launch checks its body (fleet.launch_request), and restored on its own: one that fails,
whatever the reason, does not stop the others.
- launched: it is a model of this run again (its replicas are placed like any launch; one whose
  estimate no longer fits is launched anyway, since it ran here before);
- not restorable yet (no worker, or not the one it asked for, has joined): it is listed as
  `waiting` with the reason, kept in the state, and tried again when a worker joins;
- refused for good (its launch options are no longer allowed, say): listed as `failed` with the
  reason, and kept in the state until it is terminated;
- not a launch request a launch would accept (not an object, a field of the wrong type, past a
  limit, an unknown model type): kept in the state unchanged, for the operator to repair, and
  listed as `failed` with the reason where its model can still be named;
- its model gone from the catalogue: nothing can be shown, so it is logged and kept.

A corrupt state never ends a replica that a worker still runs (the supervisor restarted, the
worker did not). The replica is adopted, and its model's entry rebuilt from what the worker
reports of it (the launch request it was started with), when its entry is unreadable, or when
the models of the last run are unknown (a new database, or a state file of an older Fleet that
could not be read: then every model not seen in this run may be one of the last run's). Only a
known state without the entry means that the model was terminated: its replica is ended.

Every change to what the state records goes through `save`, before the change is made
visible."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fleet.catalogue.registry import Catalogue, select_spec
from fleet.cluster.supervisor.cluster_state import ClusterState
from fleet.cluster.supervisor.records import ModelRecord
from fleet.database.launched_models import ModelStore
from fleet.errors import BadRequest, FleetError, StateNotSaved, Unavailable
from fleet.launch_request import checked_launch

logger = logging.getLogger(__name__)

# launch(request, wait_ready=False, restored=True) -> uid
Launch = Callable[..., Awaitable[str]]
# may(uid, request): whether to restore it now (else it waits, listed, for the next pass)
May = Callable[[str, dict[str, Any]], bool]


def retry_later(error: FleetError) -> bool:
    """Whether a refusal may go away once more workers join."""
    return isinstance(error, Unavailable) or (isinstance(error, BadRequest)
                                              and error.code == "no_such_worker")


def persisted(record: ModelRecord) -> bool:
    """A first launch that failed is forgotten (the user saw the error); a restored one that
    failed is kept, so that one bad start does not silently lose it."""
    return record.state != "failed" or record.restored


class Restorer:
    def __init__(self, cluster: ClusterState, store: ModelStore,
                 catalogue: Callable[[], Catalogue]):
        self._cluster = cluster
        self._store = store
        self._catalogue = catalogue
        self.pending: dict[str, dict[str, Any]] = {}  # still to restore: checked launch requests
        self.kept: dict[str, Any] = {}  # entries that cannot be restored: written back unchanged
        self.unreadable: set[str] = set()  # of those, the ones a launch would refuse
        self.rebuilt: set[str] = set()  # pending entries rebuilt from what workers run
        self.seen: set[str] = set()  # uids this run has launched or terminated
        self._running = False
        self._again = False
        entries = store.load()
        # Unreadable as a whole: any model may have been one of the last run's.
        self.state_lost = entries is None
        for uid, entry in (entries or {}).items():
            try:
                self.pending[uid] = checked_launch(entry, uid)
            except BadRequest as exc:
                self._refuse(uid, entry, exc.message)

    def _refuse(self, uid: str, entry: Any, reason: str) -> None:
        logger.error("saved state: entry %r cannot be restored: %s; it is kept in the state as "
                     "it is (a replica of it that a worker still runs is adopted, and the entry "
                     "rebuilt from it)", uid, reason)
        self.kept[uid] = entry
        self.unreadable.add(uid)
        if isinstance(entry, dict):
            self._show(uid, entry, reason, waiting=False)

    # ---- replicas that workers still run ----------------------------------------------------

    def adoptable(self, uid: str) -> bool:
        """Whether an untracked replica of `uid` that a worker runs is one of the last run's,
        to adopt rather than end (see the top)."""
        if uid in self.pending or uid in self.unreadable:
            return True
        return self.state_lost and uid not in self.seen and uid not in self._cluster.models

    def rebuild(self, uid: str, request: Any) -> bool:
        """The entry of a model whose replicas workers run, from the launch request they were
        started with (its own entry is missing or unreadable); False if a launch would refuse
        that request too."""
        try:
            self.pending[uid] = checked_launch(request, uid)
        except BadRequest as exc:
            logger.error("model %s runs on a worker, but its launch request cannot be rebuilt "
                         "from it: %s", uid, exc.message)
            return False
        logger.warning("model %s: its entry in the saved state is missing or unreadable; it is "
                       "rebuilt from the replicas its workers run", uid)
        self.rebuilt.add(uid)
        self.kept.pop(uid, None)
        self.unreadable.discard(uid)
        return True

    # ---- the saved state ---------------------------------------------------------------------

    def entries(self) -> dict[str, Any]:
        """What the saved state holds now: the models of this run over the entries still to
        restore, over those kept as they are and the ones only listed (stand-ins)."""
        models = self._cluster.models.values()
        entries = {m.uid: m.request for m in models if m.stand_in}
        entries.update(self.kept)
        entries.update(self.pending)
        entries.update({m.uid: m.request for m in models if persisted(m) and not m.stand_in})
        return entries

    def save(self, changes: dict[str, dict[str, Any] | None]) -> None:
        """Write the state with `changes` (uid -> request, or None: gone) applied; raises
        StateNotSaved, and then nothing is changed."""
        entries = self.entries()
        for uid, request in changes.items():
            if request is None:
                entries.pop(uid, None)
            else:
                entries[uid] = request
        self._store.write(entries)
        for uid in changes:
            self.pending.pop(uid, None)
            self.kept.pop(uid, None)
            self.unreadable.discard(uid)
            self.rebuilt.discard(uid)
            self.seen.add(uid)

    def save_quietly(self) -> None:
        """For a change that already happened (a launch failed): a failed write is logged."""
        try:
            self._store.write(self.entries())
        except StateNotSaved:
            pass

    # ---- restoring --------------------------------------------------------------------------

    async def run(self, launch: Launch, may: May = lambda uid, request: True) -> None:
        """One pass over the models still to restore (those `may` allows now); one asked for
        meanwhile runs after it."""
        if self._running:
            self._again = True
            return
        self._running = True
        try:
            self._again = True
            while self._again:
                self._again = False
                for uid, request in list(self.pending.items()):
                    try:
                        await self._consider(uid, request, launch, may)
                    except Exception:  # one entry's surprise never stops the others
                        logger.exception("restoring model %s failed", uid)
        finally:
            self._running = False

    async def _consider(self, uid: str, request: dict[str, Any], launch: Launch,
                        may: May) -> None:
        current = self._cluster.models.get(uid)
        if may(uid, request):
            await self._restore_one(uid, request, launch)
        elif current is None or (current.stand_in and current.waiting is None):
            self._show(uid, request, "waiting for its workers to join again", waiting=True)

    async def _restore_one(self, uid: str, request: dict[str, Any], launch: Launch) -> None:
        current = self._cluster.models.get(uid)
        if current is not None and not current.stand_in:
            self.pending.pop(uid, None)  # launched again by a user meanwhile: that one stands
            return
        try:
            await launch(dict(request, model_uid=uid), wait_ready=False, restored=True)
            logger.info("restoring model %s from the last run", uid)
            return
        except FleetError as exc:
            reason = exc.message
            if retry_later(exc):
                logger.warning("model %s of the last run waits: %s", uid, reason)
                self._show(uid, request, reason, waiting=True)
                return
        except Exception as exc:  # whatever it is, it must not stop the other restores
            logger.exception("restoring model %s failed", uid)
            reason = f"{type(exc).__name__}: {exc}"
        logger.error("could not restore model %s: %s", uid, reason)
        self.pending.pop(uid, None)
        self.rebuilt.discard(uid)
        if not self._show(uid, request, reason, waiting=False):
            self.kept[uid] = request

    def _show(self, uid: str, request: dict[str, Any], reason: str, waiting: bool) -> bool:
        """List it (waiting, or failed with the reason); False if it cannot be shown."""
        current = self._cluster.models.get(uid)
        if current is not None and not current.stand_in:
            return True
        try:
            family = self._catalogue().find_for_launch(request["model_name"],
                                                       request.get("model_type"))
            spec, quantization = select_spec(family, request.get("model_format"),
                                             request.get("model_size_in_billions"),
                                             request.get("quantization"))
        except Exception as exc:  # an unreadable entry may hold anything
            logger.error("model %s of the last run cannot be shown (%s); it stays in the state "
                         "file", uid, getattr(exc, "message", exc))
            return False
        self._cluster.models[uid] = ModelRecord(
            uid=uid, family=family, spec=spec, quantization=quantization,
            engine=str(request.get("model_engine") or ""), request=dict(request), replicas=[],
            error=None if waiting else f"not restored: {reason}", restored=True,
            waiting=f"not restored yet: {reason}" if waiting else None, stand_in=True)
        self._cluster.routes.touch(uid)
        return True
