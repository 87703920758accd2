"""The launched models to bring back at the next start: one row per model uid, holding the
launch request it runs with (fleet.cluster.supervisor.restore reads and checks them).

Written before the change it records is made visible (a launch, a scale, a terminate), so that
what a restart brings back is what the user last saw accepted: a write that fails is reported
(StateNotSaved) and the change is not made. Each write is one short transaction that applies
the difference with what the table holds.

Until a supervisor has written them once, and while the table is empty, the models of the
last run are unknown (`load` answers None): a new database, or an imported state file that
could not be read. A supervisor
then adopts a replica that a worker still runs instead of ending it, since it may well be one
of the last run's."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

import fleet.database.meta as meta
from fleet.database.engine import JSON_WRITE_ERRORS, Database, driver_message
from fleet.database.schema import LaunchedModel

logger = logging.getLogger(__name__)


class ModelStore:
    def __init__(self, db: Database):
        self.db = db

    def load(self) -> dict[str, Any] | None:
        """Every entry as written (malformed ones included: the caller keeps them as they are),
        by uid; None when the models of the last run are unknown (see the top)."""
        try:
            with self.db.reading() as session:
                entries = read_entries(session)
                if not entries and not meta.get(session, meta.MODELS_KNOWN):
                    return None
                return entries
        except SQLAlchemyError as exc:
            logger.error("cannot read the launched models from %s (%s); starting without the "
                         "models of the last run", self.db.shown, driver_message(exc))
            return None

    def write(self, entries: dict[str, Any]) -> None:
        """Make the table hold exactly `entries`; StateNotSaved, and nothing written, if the
        database refuses."""
        with self.db.saving(f"write the launched models to {self.db.shown}",
                            f"save the cluster's state to {self.db.shown}",
                            JSON_WRITE_ERRORS) as session:
            write_entries(session, entries)


def read_entries(session: Session) -> dict[str, Any]:
    """By uid, in the order the state file kept them (sorted), whatever the database's
    collation."""
    rows = session.execute(select(LaunchedModel.uid, LaunchedModel.request)).all()
    return dict(sorted((uid, request) for uid, request in rows))


def write_entries(session: Session, entries: dict[str, Any]) -> None:
    saved = {uid: request for uid, request in
             session.execute(select(LaunchedModel.uid, LaunchedModel.request)).all()}
    gone = [uid for uid in saved if uid not in entries]
    if gone:
        session.execute(delete(LaunchedModel).where(LaunchedModel.uid.in_(gone)))
    for uid, request in entries.items():
        if uid not in saved:
            session.add(LaunchedModel(uid=uid, request=request))
        elif saved[uid] != request:
            session.merge(LaunchedModel(uid=uid, request=request))
    if not meta.get(session, meta.MODELS_KNOWN):
        meta.put(session, meta.MODELS_KNOWN, True)
