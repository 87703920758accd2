"""Where the cluster's state lives: `--database-url`, else `FLEET_DATABASE_URL`, else SQLite in
`FLEET_HOME/fleet.db`. Only SQLite and PostgreSQL are kept: the two that the tests run
against. A URL is shown (logs, errors) only with its password hidden."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from fleet.errors import BadRequest
from fleet.settings import fleet_home

ENV = "FLEET_DATABASE_URL"
SQLITE_FILE = "fleet.db"
# psycopg 3 (the `postgres` extra): SQLAlchemy would take plain `postgresql://` for psycopg2.
POSTGRES_DRIVER = "postgresql+psycopg"
_POSTGRES_SPELLINGS = {"postgresql", "postgres", "postgresql+psycopg", "postgres+psycopg"}


def default_url() -> str:
    return f"sqlite:///{fleet_home() / SQLITE_FILE}"


def database_url(given: str | None = None) -> URL:
    """The URL to use: `given`, else the environment's, else the default; checked, and with
    PostgreSQL's driver named. BadRequest (a usage error at start) for anything else."""
    text = given or os.environ.get(ENV) or default_url()
    try:
        url = make_url(text)
    except ArgumentError:
        raise BadRequest(f"the database URL {hidden(text)!r} is not a URL; give "
                         "sqlite:////path/to/fleet.db or postgresql://user:password@host/db",
                         code="bad_database_url") from None
    if url.drivername in _POSTGRES_SPELLINGS:
        return url.set(drivername=POSTGRES_DRIVER)
    if url.drivername in ("sqlite", "sqlite+pysqlite"):
        if not url.database or url.database == ":memory:" or url.database.startswith("file:"):
            raise BadRequest("an SQLite database must be a file (sqlite:////path/to/fleet.db): "
                             "the cluster's state must outlive the process",
                             code="bad_database_url")
        return url
    raise BadRequest(f"Fleet keeps its state in SQLite or PostgreSQL, not {url.drivername!r}: "
                     "give sqlite:////path/to/fleet.db or postgresql://user:password@host/db",
                     code="bad_database_url")


def hidden(url: str | URL) -> str:
    """The URL as it may be shown: its password replaced by ***."""
    try:
        parsed = url if isinstance(url, URL) else make_url(url)
    except ArgumentError:
        return "<not a URL>"
    return parsed.render_as_string(hide_password=True)


def sqlite_file(url: URL) -> Path | None:
    """The file of an SQLite database, None for PostgreSQL."""
    if url.get_backend_name() != "sqlite" or url.database is None:
        return None
    return Path(url.database).expanduser()
