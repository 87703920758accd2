"""SQLite as several processes of one machine share it (the supervisor and API processes): in
WAL mode, with foreign keys on and commits on disk when they return, and writers that wait
their turn instead of failing with "database is locked"."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from sqlalchemy import text

from fleet.database import Database, open_database
from fleet.database.registrations import DatabaseRegistrations
from fleet.database.schema import Registration

WRITES = 40


def test_each_connection_is_set_for_sharing(tmp_path):
    db = open_database(f"sqlite:///{tmp_path / 'fleet.db'}")
    try:
        with db.engine.connect() as connection:
            pragma = {name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()
                      for name in ("journal_mode", "foreign_keys", "synchronous", "busy_timeout")}
        assert pragma == {"journal_mode": "wal", "foreign_keys": 1, "synchronous": 2,
                          "busy_timeout": 10000}
    finally:
        db.close()


def _register_many(url: str, who: str) -> None:
    db = Database(url)
    for index in range(WRITES):
        with db.writing() as session:  # a read, then a write that depends on it
            seen = session.execute(text("SELECT count(*) FROM registrations")).scalar()
            session.add(Registration(model_type="embedding", model_name=f"{who}-{index}",
                                     family={"seen": seen}))
    db.close()


def test_writers_in_several_processes_take_turns(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'fleet.db'}"
    open_database(url).close()
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_register_many, args=(url, f"p{n}")) for n in range(3)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(120)
    assert [writer.exitcode for writer in writers] == [0, 0, 0]
    db = Database(url)
    try:
        seen = sorted(family["seen"] for _, _, family in DatabaseRegistrations(db).load())
        assert seen == list(range(3 * WRITES))  # each write saw every one before it
    finally:
        db.close()
