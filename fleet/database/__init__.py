"""The cluster's state in a database (docs/database.md): SQLite in FLEET_HOME by default,
PostgreSQL by URL, through SQLAlchemy 2, with the schema versioned by Alembic.

- `url`: which database, and how it is shown (never its password);
- `engine`: the engine and short transactions (`Database.reading`, `Database.writing`);
- `schema`: the tables; `migrations`: their versions, upgraded at start;
- `registrations`, `launched_models`: what the catalogue and the supervisor keep there;
- `legacy_import`: FLEET_HOME's files of an older Fleet, imported at the first start.

The supervisor and the API use it; workers and replicas never do (a worker may run where the
database cannot be reached). Nothing on a request's path touches it: what they need is read at
start and kept in memory."""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from fleet.database.engine import Database, driver_message
from fleet.database.errors import DatabaseUnusable
from fleet.database.legacy_import import import_fleet_home
from fleet.database.migrations import upgrade

logger = logging.getLogger(__name__)


def open_database(url: str | None = None, import_from: Path | None = None) -> Database:
    """The state's database at `url` (None: FLEET_DATABASE_URL, else FLEET_HOME's), its schema
    upgraded to this Fleet's, and the files of an older Fleet in `import_from` imported into
    it if it is new. DatabaseUnusable (a FleetError) when it cannot be used."""
    db = Database(url)
    try:
        upgrade(db)
        if import_from is not None:
            import_fleet_home(db, import_from)
    except SQLAlchemyError as exc:
        db.close()
        raise DatabaseUnusable(f"cannot import the files of {import_from} into {db.shown}: "
                               f"{driver_message(exc)}") from None
    except BaseException:
        db.close()
        raise
    return db
