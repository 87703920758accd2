"""One database of cluster state, opened from its URL: the engine, and sessions in short
transactions (`reading`, `writing`).

SQLite is shared by several processes of one machine (the supervisor and API processes), so:
- WAL, so that a reader never waits for a writer, nor a writer for readers;
- a write takes the write lock when its transaction begins (BEGIN IMMEDIATE): a transaction
  that read first and asked for the lock later could otherwise fail at once (SQLITE_BUSY) rather
  than wait `busy_timeout` for its turn;
- synchronous=FULL: a commit is on disk when it returns, as the state files were (fsync);
- foreign keys enforced, which SQLite leaves off unless asked, connection by connection.
SQLAlchemy's pysqlite driver would otherwise begin transactions itself, late and deferred; it is
told not to (isolation_level None), and the engine's `begin` event says BEGIN itself.

PostgreSQL is reached with psycopg 3; a connection that the server dropped (a restart) is
noticed before use (pre-ping), and a server that cannot be reached fails in CONNECT_TIMEOUT_S
instead of the TCP stack's minutes."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from fleet.database.errors import DatabaseUnusable
from fleet.database.url import database_url, hidden, sqlite_file
from fleet.errors import StateNotSaved

logger = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 10_000
CONNECT_TIMEOUT_S = 5
_WRITE = "fleet_write"  # the execution option that makes a transaction begin as a writer
# What refuses a write of JSON that a user gave: the database, or a value that JSON cannot
# hold (TypeError, ValueError).
JSON_WRITE_ERRORS: tuple[type[Exception], ...] = (SQLAlchemyError, TypeError, ValueError)


class Database:
    """The state's database at `url` (None: FLEET_DATABASE_URL, else FLEET_HOME's SQLite file).
    Opening it connects to nothing yet; fleet.database.migrations brings its schema up to date."""

    def __init__(self, url: str | URL | None = None):
        self.url = url if isinstance(url, URL) else database_url(url)
        self.engine = _create_engine(self.url)
        self._reading = sessionmaker(self.engine, expire_on_commit=False)
        self._writing = sessionmaker(self.engine.execution_options(**{_WRITE: True}),
                                     expire_on_commit=False)

    @property
    def shown(self) -> str:
        """The URL as logs and errors show it (no password)."""
        return hidden(self.url)

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A session whose transaction reads a consistent view, and ends with the block."""
        with self._reading() as session, session.begin():
            yield session

    @contextmanager
    def writing(self) -> Iterator[Session]:
        """One transaction that holds the write lock from its start; committed when the block
        ends, rolled back (nothing written) when it raises."""
        with self._writing() as session, session.begin():
            yield session

    def connect_writing(self) -> Connection:
        """A connection whose transactions begin as writers, as `writing`'s do: what the
        migrations run on (fleet.database.migrations)."""
        return self.engine.execution_options(**{_WRITE: True}).connect()

    @contextmanager
    def saving(self, what: str, told: str | None = None,
               errors: tuple[type[Exception], ...] = (SQLAlchemyError,)) -> Iterator[Session]:
        """`writing`, for a change of the cluster's state: when the database refuses it (one
        of `errors`), the failure is logged ("could not {what}") and raised as StateNotSaved
        ("could not {told} (reason); nothing was changed"; `told` defaults to `what`)."""
        try:
            with self.writing() as session:
                yield session
        except errors as exc:
            reason = driver_message(exc)
            logger.error("could not %s: %s", what, reason)
            raise StateNotSaved(f"could not {told or what} ({reason}); nothing was "
                                "changed") from None

    def close(self) -> None:
        self.engine.dispose()

    def __repr__(self) -> str:
        return f"Database({self.shown!r})"


def _create_engine(url: URL) -> Engine:
    if url.get_backend_name() == "sqlite":
        return _sqlite_engine(url)
    return create_engine(url, pool_pre_ping=True, pool_size=2, max_overflow=4,
                         connect_args={"connect_timeout": CONNECT_TIMEOUT_S,
                                       "application_name": "fleet"})


def _sqlite_engine(url: URL) -> Engine:
    path = sqlite_file(url)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DatabaseUnusable(f"cannot make the folder of the database {hidden(url)}: "
                                   f"{exc.strerror or exc}") from None
    engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # the `begin` event below begins
        cursor = dbapi_connection.cursor()
        try:
            for pragma in ("journal_mode=WAL", "synchronous=FULL", "foreign_keys=ON",
                           f"busy_timeout={BUSY_TIMEOUT_MS}"):
                cursor.execute(f"PRAGMA {pragma}")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        writer = connection.get_execution_options().get(_WRITE, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if writer else "BEGIN")

    return engine


def driver_message(error: Exception) -> str:
    """The driver's own message, without SQLAlchemy's statement and parameters (which may hold
    what a user stored) and its link to the FAQ."""
    original = getattr(error, "orig", None)
    lines = str(original if original is not None else error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
