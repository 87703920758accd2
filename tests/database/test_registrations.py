"""Custom registrations in the database, through the catalogue that holds them: saved before
they show, read back at the next start, gone for good once unregistered; a row that no longer
parses is skipped with a log line, and a save the database refuses registers nothing."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import text

from fleet.catalogue.registry import Catalogue
from fleet.database.registrations import DatabaseRegistrations
from fleet.errors import NotFound, StateNotSaved

EMBEDDING = {"model_name": "mine", "dimensions": 8, "max_tokens": 128, "language": ["en"],
             "model_id": "example/mine", "model_uri": "/models/mine"}


def test_a_registration_is_saved_read_back_and_removed(db):
    catalogue = Catalogue(DatabaseRegistrations(db))
    family = catalogue.register("embedding", EMBEDDING)
    saved = DatabaseRegistrations(db).load()
    assert saved == [("embedding", "mine", family.model_dump(mode="json", exclude_none=True))]
    reloaded = Catalogue(DatabaseRegistrations(db))  # the next start
    assert reloaded.find("mine", "embedding") == family
    reloaded.unregister("embedding", "mine")
    assert DatabaseRegistrations(db).load() == []
    assert "mine" not in Catalogue(DatabaseRegistrations(db)).families("embedding")
    with pytest.raises(NotFound):
        reloaded.unregister("embedding", "mine")


def test_one_not_persisted_is_not_saved(db):
    catalogue = Catalogue(DatabaseRegistrations(db))
    catalogue.register("embedding", EMBEDDING, persist=False)
    assert catalogue.find("mine").model_name == "mine"
    assert DatabaseRegistrations(db).load() == []


def test_a_row_that_does_not_parse_is_skipped_and_kept(db, caplog):
    store = DatabaseRegistrations(db)
    store.save("embedding", "bad", {"model_name": "bad"})  # no dimensions
    store.save("video", "odd", {**EMBEDDING, "model_name": "odd"})
    store.save("embedding", "good", {**EMBEDDING, "model_name": "good"})
    with caplog.at_level(logging.ERROR):
        families = Catalogue(store).families("embedding")
    assert "good" in families and "bad" not in families
    assert "skipping unreadable registration embedding/bad" in caplog.text
    assert "skipping registration video/odd: unknown model type" in caplog.text
    assert len(store.load()) == 3  # kept for the operator to repair


def test_a_change_the_database_refuses_changes_nothing(db):
    store = DatabaseRegistrations(db)
    catalogue = Catalogue(store)
    catalogue.register("embedding", {**EMBEDDING, "model_name": "kept"})
    with db.writing() as session:  # a database that has lost the table
        session.execute(text("ALTER TABLE registrations RENAME TO registrations_away"))
    with pytest.raises(StateNotSaved, match="could not save the registration") as refused:
        catalogue.register("embedding", EMBEDDING)
    assert refused.value.code == "state_not_saved" and "nothing was changed" in refused.value.message
    assert "mine" not in catalogue.families("embedding")
    with pytest.raises(StateNotSaved):
        catalogue.unregister("embedding", "kept")
    assert "kept" in catalogue.families("embedding")
