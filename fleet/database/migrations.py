"""The schema's versions: Alembic's migrations, shipped in the package
(fleet/database/migrations/versions) and run from here at each start, so that users need no
alembic.ini and no command. A newer Fleet upgrades the database it is given; an older one
refuses a schema it does not know, naming both versions, rather than write into tables it
does not understand. Developers run the `alembic` command with fleet/database/alembic.ini
(docs/database.md).

One transaction holds the whole upgrade (SQLite and PostgreSQL both roll DDL back), under a
lock: SQLite's write lock, PostgreSQL's advisory lock, so that two processes starting at once
upgrade once."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.script.revision import RevisionError
from alembic.util.exc import CommandError
from sqlalchemy import Connection, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

import fleet
import fleet.database.meta as meta
from fleet.database.engine import Database, driver_message
from fleet.database.errors import DatabaseUnusable, SchemaTooNew
from fleet.database.schema import utc_now

logger = logging.getLogger(__name__)

SCRIPTS = Path(__file__).with_name("migrations")
# Any fixed number: the key of PostgreSQL's advisory lock that upgrades take.
_PG_LOCK = 0x466C656574  # "Fleet"


@dataclass(frozen=True)
class Upgrade:
    before: tuple[str, ...]  # the revisions the database was at (none: a new database)
    after: tuple[str, ...]

    @property
    def created(self) -> bool:
        return not self.before

    @property
    def changed(self) -> bool:
        return set(self.before) != set(self.after)


def alembic_config() -> Config:
    """Alembic's configuration, built in code: the scripts inside the package."""
    config = Config()
    config.set_main_option("script_location", str(SCRIPTS))
    return config


def newest_revisions() -> tuple[str, ...]:
    return tuple(sorted(ScriptDirectory.from_config(alembic_config()).get_heads()))


def upgrade(db: Database) -> Upgrade:
    """Bring the database's schema to this Fleet's newest; DatabaseUnusable when it cannot be
    reached, SchemaTooNew when a newer Fleet wrote it."""
    config = alembic_config()
    script = ScriptDirectory.from_config(config)
    heads = tuple(sorted(script.get_heads()))
    try:
        with db.connect_writing() as connection:
            with connection.begin():
                _lock(connection)
                before = tuple(sorted(MigrationContext.configure(connection).get_current_heads()))
                _refuse_unknown(connection, script, before, heads, db)
                if set(before) != set(heads):
                    config.attributes["connection"] = connection
                    command.upgrade(config, "heads")
                    with Session(bind=connection) as session:
                        meta.put(session, meta.UPGRADED_BY, {
                            "fleet": fleet.__version__, "revision": ",".join(heads),
                            "at": utc_now().isoformat()})
                        session.flush()
    except SQLAlchemyError as exc:
        raise DatabaseUnusable(f"cannot open the database {db.shown}: {driver_message(exc)}") from None
    done = Upgrade(before, heads)
    if done.changed:
        logger.info("database %s: schema %s -> %s", db.shown, ",".join(before) or "(new)",
                    ",".join(heads))
    return done


def _lock(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK})


def _refuse_unknown(connection: Connection, script: ScriptDirectory, current: tuple[str, ...],
                    heads: tuple[str, ...], db: Database) -> None:
    unknown = [revision for revision in current if not _known(script, revision)]
    if not unknown:
        return
    try:  # who upgraded it, if its tables still say so as this Fleet's do
        with connection.begin_nested(), Session(bind=connection) as session:
            by = meta.get(session, meta.UPGRADED_BY) or {}
    except SQLAlchemyError:
        by = {}
    writer = f" (Fleet {by['fleet']} upgraded it)" if isinstance(by, dict) and by.get("fleet") \
        else ""
    raise SchemaTooNew(
        f"the database {db.shown} has schema {','.join(unknown)}{writer}, newer than this Fleet "
        f"{fleet.__version__} knows (its newest schema is {','.join(heads)}): run a Fleet at "
        "least as new as the one that upgraded it, or give this one another database "
        "(--database-url)")


def _known(script: ScriptDirectory, revision: str) -> bool:
    try:
        return script.get_revision(revision) is not None
    except (CommandError, RevisionError):  # "Can't locate revision identified by ..."
        return False
