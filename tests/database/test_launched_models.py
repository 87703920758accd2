"""The launched models in the database: unknown until first written, then exactly what was
written (malformed entries as they were); a write that fails changes nothing and says so,
and the store works again once the database does."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import select

from fleet.database import open_database
from fleet.database.launched_models import ModelStore
from fleet.database.schema import LaunchedModel
from fleet.errors import StateNotSaved
from tests.postgres import postgres_server

MINILM = {"model_name": "all-MiniLM-L6-v2", "model_type": "embedding", "model_uid": "a",
          "replica": 2, "keep_alive": "10m", "min_replicas": 1, "max_replicas": 3}


def test_the_models_of_the_last_run_are_unknown_until_written(db):
    store = ModelStore(db)
    assert store.load() is None  # a new database says nothing of the last run
    store.write({})
    assert store.load() == {}  # known: no model ran


def test_rows_put_there_by_hand_are_the_last_runs_models(db):
    with db.writing() as session:  # a restored backup, an operator's INSERT
        session.add(LaunchedModel(uid="a", request=MINILM))
    assert ModelStore(db).load() == {"a": MINILM}


def test_a_write_is_read_back_exactly_malformed_entries_included(db):
    store = ModelStore(db)
    entries = {"b": MINILM, "a": {**MINILM, "envs": {"A": "é€"}}, "broken": 42,
               "listed": [1, 2], "null": None, "text": "x", "a/b": MINILM}
    store.write(entries)
    loaded = store.load()
    assert loaded == entries
    assert list(loaded) == sorted(entries)  # in uid order, as the state file kept them


def test_each_write_applies_the_difference(db):
    store = ModelStore(db)
    store.write({"a": MINILM, "b": MINILM, "c": MINILM})
    with db.reading() as session:
        stamps = dict(session.execute(select(LaunchedModel.uid, LaunchedModel.updated_at)).all())
    store.write({"a": MINILM, "b": {**MINILM, "replica": 3}, "d": MINILM})
    assert store.load() == {"a": MINILM, "b": {**MINILM, "replica": 3}, "d": MINILM}
    with db.reading() as session:
        after = dict(session.execute(select(LaunchedModel.uid, LaunchedModel.updated_at)).all())
    assert after["a"] == stamps["a"]  # untouched rows are not rewritten
    assert after["b"] >= stamps["b"] and "c" not in after


def test_a_write_the_database_refuses_changes_nothing_and_says_so(db, caplog):
    store = ModelStore(db)
    store.write({"a": MINILM})
    with caplog.at_level(logging.ERROR), pytest.raises(StateNotSaved) as refused:
        store.write({"a": None, "b": {"not json": {1, 2}}})  # a set: no JSON for it
    assert refused.value.status_code == 500 and refused.value.code == "state_not_saved"
    assert "could not save the cluster's state" in refused.value.message
    assert "nothing was changed" in refused.value.message and db.shown in refused.value.message
    assert store.load() == {"a": MINILM}


def test_postgresql_going_away_and_coming_back():
    """A write while the server is down fails fast with StateNotSaved; once it is back, the
    next write works on a fresh connection (the pool's old ones are dead)."""
    with postgres_server() as server:
        db = open_database(server.new_database())
        try:
            store = ModelStore(db)
            store.write({"a": MINILM})
            server.stop()
            with pytest.raises(StateNotSaved, match="could not save the cluster's state"):
                store.write({"a": MINILM, "b": MINILM})
            server.start()
            store.write({"a": MINILM, "b": MINILM})
            assert store.load() == {"a": MINILM, "b": MINILM}
        finally:
            db.close()
