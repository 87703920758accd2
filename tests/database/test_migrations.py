"""The schema's versions: a new database gets the newest schema, an older one is upgraded with
its rows, the migrations make exactly the tables the code declares, and a schema newer than
this Fleet knows is refused with both versions named, untouched."""

from __future__ import annotations

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

import fleet
from fleet.database import Database, meta, open_database
from fleet.database.errors import DatabaseUnusable, SchemaTooNew
from fleet.database.launched_models import ModelStore
from fleet.database.migrations import alembic_config, newest_revisions, upgrade
from fleet.database.schema import Base

TABLES = {"registrations", "launched_models", "fleet_meta", "users", "api_keys", "audit_log",
          "usage_records", "alembic_version"}


def _revision_at(db: Database) -> tuple[str, ...]:
    with db.engine.connect() as connection:
        return tuple(sorted(MigrationContext.configure(connection).get_current_heads()))


def _alembic(db: Database, action, revision: str) -> None:
    """Run an alembic command on `db` as its command line would, on the engine's connection."""
    config = alembic_config()
    with db.connect_writing() as connection:
        with connection.begin():
            config.attributes["connection"] = connection
            action(config, revision)


def test_a_new_database_gets_the_newest_schema_once(database_url):
    db = Database(database_url)
    try:
        first = upgrade(db)
        assert first.created and first.after == newest_revisions()
        assert TABLES <= set(inspect(db.engine).get_table_names())
        assert _revision_at(db) == newest_revisions()
        with db.reading() as session:
            by = meta.get(session, meta.UPGRADED_BY)
        assert by["fleet"] == fleet.__version__ and by["revision"] == ",".join(newest_revisions())
        again = upgrade(db)
        assert not again.changed and again.before == newest_revisions()
    finally:
        db.close()


def test_the_migrations_make_the_tables_the_code_declares(db):
    with db.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []


def _every_revision() -> list[str]:
    script = ScriptDirectory.from_config(alembic_config())
    return [rev.revision for rev in script.walk_revisions()]


@pytest.mark.parametrize("revision", _every_revision())
def test_a_database_at_any_older_revision_is_upgraded_with_its_rows(database_url, revision):
    db = Database(database_url)
    try:
        _alembic(db, command.upgrade, revision)
        assert _revision_at(db) == (revision,)
        with db.engine.begin() as connection:  # rows as that revision's Fleet wrote them
            connection.execute(text(
                "INSERT INTO launched_models (uid, request, created_at, updated_at) "
                "VALUES ('kept', '{\"model_name\": \"m\", \"replica\": 2}', "
                "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
            connection.execute(text(
                "INSERT INTO fleet_meta (key, value, updated_at) "
                "VALUES ('models_known', 'true', CURRENT_TIMESTAMP)"))
        done = upgrade(db)
        assert done.before == (revision,) and _revision_at(db) == newest_revisions()
        assert ModelStore(db).load() == {"kept": {"model_name": "m", "replica": 2}}
    finally:
        db.close()


def test_every_migration_goes_down_and_up_again(db):
    _alembic(db, command.downgrade, "base")
    assert set(inspect(db.engine).get_table_names()) <= {"alembic_version"}
    _alembic(db, command.upgrade, "heads")
    assert TABLES <= set(inspect(db.engine).get_table_names())


def test_a_schema_newer_than_this_fleet_is_refused_and_left_as_it_is(db, database_url):
    ModelStore(db).write({"kept": {"model_name": "m"}})
    with db.writing() as session:
        session.execute(text("UPDATE alembic_version SET version_num = '0099_from_the_future'"))
        meta.put(session, meta.UPGRADED_BY, {"fleet": "9.1.0", "revision": "0099_from_the_future"})
    with pytest.raises(SchemaTooNew) as refused:
        open_database(database_url)
    message = refused.value.message
    assert "has schema 0099_from_the_future (Fleet 9.1.0 upgraded it)" in message
    assert f"newer than this Fleet {fleet.__version__} knows" in message
    assert f"its newest schema is {','.join(newest_revisions())}" in message
    assert db.shown in message and "s3cret" not in message
    assert _revision_at(db) == ("0099_from_the_future",)
    assert ModelStore(db).load() == {"kept": {"model_name": "m"}}


def test_a_database_that_cannot_be_reached_stops_the_start_with_why(postgres, tmp_path):
    closed = postgres.url("fleet").replace(str(postgres.port), str(postgres.port + 1))
    with pytest.raises(DatabaseUnusable, match="cannot open the database postgresql") as refused:
        open_database(closed)
    assert "s3cret" not in refused.value.message and "***" in refused.value.message
    (tmp_path / "a-file").write_text("")
    with pytest.raises(DatabaseUnusable, match="cannot make the folder"):
        open_database(f"sqlite:///{tmp_path / 'a-file' / 'fleet.db'}")


def test_a_newer_schema_is_named_even_when_its_tables_are_not_this_fleets(db, database_url):
    with db.writing() as session:
        session.execute(text("UPDATE alembic_version SET version_num = '0100_renamed_meta'"))
        session.execute(text("ALTER TABLE fleet_meta RENAME TO fleet_facts"))
    with pytest.raises(SchemaTooNew, match="has schema 0100_renamed_meta, newer than this Fleet"):
        open_database(database_url)


def test_a_database_of_0002_gets_the_usage_table_and_records_in_it(database_url):
    from datetime import datetime, timedelta, timezone

    from fleet.database.usage import UsageQuery, UsageRow, UsageStore

    db = Database(database_url)
    try:
        _alembic(db, command.upgrade, "0002_keys")
        assert "usage_records" not in inspect(db.engine).get_table_names()
        assert upgrade(db).after == newest_revisions()
        indexes = {ix["name"]: ix["column_names"]
                   for ix in inspect(db.engine).get_indexes("usage_records")}
        assert indexes == {"ix_usage_records_time": ["time"],
                           "ix_usage_records_key_id_time": ["key_id", "time"]}
        now = datetime.now(timezone.utc)
        store = UsageStore(db)
        store.insert([UsageRow(time=now, key_id="k", user_name="u", model="m", family="f",
                               kind="chat", prompt_tokens=2, completion_tokens=3, images=0,
                               audio_seconds=0.0, status=200, latency_ms=5.0)])
        assert store.tokens_by_key_since(now - timedelta(minutes=1)) == {"k": 5}
        assert store.query(UsageQuery(now - timedelta(hours=1), now + timedelta(hours=1)))[0][
            "requests"] == 1
    finally:
        db.close()
