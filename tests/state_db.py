"""What a cluster saved in its state's database (fleet.database), read the way the tests read
FLEET_HOME's files before: the launched models and the registrations, and an entry written
as a careless edit of the database could leave it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fleet.database import Database
from fleet.database.launched_models import read_entries
from fleet.database.registrations import DatabaseRegistrations
from fleet.database.schema import LaunchedModel


def home_database_url(home: Path) -> str:
    """The database of a cluster started with FLEET_HOME=home and no --database-url."""
    return f"sqlite:///{home / 'fleet.db'}"


@contextmanager
def _database(where: Path | str) -> Iterator[Database]:
    db = Database(home_database_url(where) if isinstance(where, Path) else where)
    try:
        yield db
    finally:
        db.close()


def saved_models(where: Path | str) -> dict[str, Any]:
    """The launched models saved by the cluster of FLEET_HOME `where` (or at that URL)."""
    with _database(where) as db, db.reading() as session:
        return read_entries(session)


def save_model_entry(where: Path | str, uid: str, entry: Any) -> None:
    """The entry of `uid`, replaced by `entry` (whatever it is) behind the cluster's back."""
    with _database(where) as db, db.writing() as session:
        session.merge(LaunchedModel(uid=uid, request=entry))


def saved_family(where: Path | str | DatabaseRegistrations, model_type: str, name: str) -> Any:
    """A registration as the database holds it; None when it holds none."""
    if isinstance(where, DatabaseRegistrations):
        rows = where.load()
    else:
        with _database(where) as db:
            rows = DatabaseRegistrations(db).load()
    return next((family for t, n, family in rows if (t, n) == (model_type, name)), None)
