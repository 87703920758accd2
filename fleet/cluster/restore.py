"""The models of the last run, brought back one by one, and what the state file says.

Each entry of `models.json` is restored on its own: one that fails does not stop the others.
- launched: it is a model of this run again (its replicas are placed like any launch; one whose
  estimate no longer fits is launched anyway, since it ran here before);
- not restorable yet (no worker, or not the one it asked for, has joined): it is listed as
  `waiting` with the reason, kept in the state file, and tried again when a worker joins;
- refused for good (its launch options are no longer allowed, say): listed as `failed` with the
  reason, and kept in the state file until it is terminated;
- malformed (not a launch request), or its model gone from the catalogue: nothing can be shown,
  so it is logged and kept in the state file unchanged, for the operator to repair.

Every change to what the state file records goes through `save`, before the change is made
visible (fleet.cluster.model_store)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fleet.catalogue.registry import Catalogue, select_spec
from fleet.cluster.cluster_state import ClusterState
from fleet.cluster.model_store import ModelStore, StateNotSaved, is_restorable
from fleet.cluster.records import ModelRecord
from fleet.errors import BadRequest, FleetError, Unavailable

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
        self.pending: dict[str, dict[str, Any]] = {}  # still to restore
        self.kept: dict[str, Any] = {}  # entries that cannot be shown: written back unchanged
        self._running = False
        self._again = False
        for uid, entry in store.load().items():
            problem = is_restorable(uid, entry)
            if problem is None:
                self.pending[uid] = entry
            else:
                logger.error("state file: entry %r cannot be restored: %s; it is kept in the file "
                             "as it is", uid, problem)
                self.kept[str(uid)] = entry

    # ---- the state file ---------------------------------------------------------------------

    def entries(self) -> dict[str, Any]:
        kept = {**self.kept, **self.pending}
        kept.update({uid: m.request for uid, m in self._cluster.models.items() if persisted(m)})
        return kept

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
                    if may(uid, request):
                        await self._restore_one(uid, request, launch)
                    elif uid not in self._cluster.models:
                        self._show(uid, request, "waiting for its workers to join again",
                                   waiting=True)
        finally:
            self._running = False

    async def _restore_one(self, uid: str, request: dict[str, Any], launch: Launch) -> None:
        current = self._cluster.models.get(uid)
        if current is not None and current.waiting is None:
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
        if not self._show(uid, request, reason, waiting=False):
            self.kept[uid] = request

    def _show(self, uid: str, request: dict[str, Any], reason: str, waiting: bool) -> bool:
        """List it (waiting, or failed with the reason); False if it cannot be shown."""
        current = self._cluster.models.get(uid)
        if current is not None and current.waiting is None:
            return True
        try:
            family = self._catalogue().find_for_launch(request["model_name"],
                                                       request.get("model_type"))
            spec, quantization = select_spec(family, request.get("model_format"),
                                             request.get("model_size_in_billions"),
                                             request.get("quantization"))
        except (FleetError, KeyError) as exc:
            logger.error("model %s of the last run cannot be shown (%s); it stays in the state "
                         "file", uid, getattr(exc, "message", exc))
            return False
        self._cluster.models[uid] = ModelRecord(
            uid=uid, family=family, spec=spec, quantization=quantization,
            engine=str(request.get("model_engine") or ""), request=dict(request), replicas=[],
            error=None if waiting else f"not restored: {reason}", restored=True,
            waiting=f"not restored yet: {reason}" if waiting else None)
        self._cluster.routes.touch(uid)
        return True
