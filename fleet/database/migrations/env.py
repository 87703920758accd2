"""Alembic's entry: runs the migrations on the connection that fleet.database.migrations
passes (at each start), or, from the `alembic` command (developers, docs/database.md), on the
database that `-x url=...`, FLEET_DATABASE_URL or FLEET_HOME names."""

from __future__ import annotations

import logging.config

from alembic import context
from sqlalchemy import Connection

from fleet.database.schema import Base


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        # SQLite alters a table by copying it: later migrations must use batch operations.
        render_as_batch=connection.dialect.name == "sqlite",
        # SQLite rolls DDL back too, once the engine begins its transactions itself
        # (fleet.database.engine): an upgrade that fails half-way leaves the old schema.
        transactional_ddl=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _from_the_command_line() -> None:
    from fleet.database.engine import Database

    if context.config.config_file_name is not None:
        logging.config.fileConfig(context.config.config_file_name, disable_existing_loggers=False)
    url = context.get_x_argument(as_dictionary=True).get("url")
    db = Database(url)
    try:
        with db.connect_writing() as connection:
            _run(connection)
            connection.commit()
    finally:
        db.close()


if context.is_offline_mode():
    raise SystemExit("Fleet's migrations run on a database (no --sql): give -x url=... or "
                     "FLEET_DATABASE_URL")
given = context.config.attributes.get("connection")
if given is not None:
    _run(given)
else:
    _from_the_command_line()
