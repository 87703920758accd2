"""The first start on a FLEET_HOME of Fleet 0.1: its registrations and launched models go into
the new database once, and its files are kept aside as a backup; a database that already holds
a cluster's state is left alone; a state file that cannot be read leaves the last run's models
unknown, as it did in Fleet 0.1."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from fleet.catalogue.registry import Catalogue
from fleet.database import meta, open_database
from fleet.database.launched_models import ModelStore
from fleet.database.registrations import DatabaseRegistrations
from tests.database.previous_release import (
    MODELS,
    REGISTRATIONS,
    previous_release_models,
    previous_release_registration,
    write_previous_release_home,
)

MINILM = "/models/all-MiniLM-L6-v2"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "fleet-home"


def _backups(home: Path) -> dict[str, Path]:
    return {path.name.split(".imported-")[0]: path for path in home.glob("*.imported-*")}


def test_the_files_of_the_previous_release_are_imported_once_and_kept(home, database_url, caplog):
    write_previous_release_home(home, MINILM)
    with caplog.at_level(logging.INFO):
        db = open_database(database_url, import_from=home)
    try:
        assert ModelStore(db).load() == previous_release_models(MINILM)
        saved = {(t, n): family for t, n, family in DatabaseRegistrations(db).load()}
        assert set(saved) == REGISTRATIONS
        assert saved[("embedding", "team-minilm")] == previous_release_registration(
            "embedding", "team-minilm", MINILM)
        catalogue = Catalogue(DatabaseRegistrations(db))
        assert catalogue.find("team-minilm", "embedding").model_specs[0].model_uri == \
            f"file://{MINILM}"
        assert catalogue.find("team-llm", "LLM").model_family == "qwen2.5-instruct"
        # The files, moved aside whole: nothing is imported twice.
        backups = _backups(home)
        assert set(backups) == {"registrations", "state"}
        assert not (home / "registrations").exists() and not (home / "state").exists()
        assert json.loads((backups["state"] / "models.json").read_text()) == \
            previous_release_models(MINILM)
        assert "imported 2 registrations and 2 launched models" in caplog.text
        with db.reading() as session:
            assert meta.get(session, meta.IMPORTED)["models"] == 2
    finally:
        db.close()
    again = open_database(database_url, import_from=home)
    try:
        assert set(ModelStore(again).load()) == MODELS and len(_backups(home)) == 2
    finally:
        again.close()


def test_a_database_that_holds_a_clusters_state_is_left_alone(home, database_url, caplog):
    db = open_database(database_url)
    ModelStore(db).write({"theirs": {"model_name": "m"}})
    db.close()
    write_previous_release_home(home, MINILM)
    with caplog.at_level(logging.WARNING):
        db = open_database(database_url, import_from=home)
    try:
        assert ModelStore(db).load() == {"theirs": {"model_name": "m"}}
        assert DatabaseRegistrations(db).load() == []
        assert (home / "state" / "models.json").is_file() and not _backups(home)
        assert "already holds a cluster's state: they were not imported" in caplog.text
    finally:
        db.close()


@pytest.mark.parametrize("content", [b'{"team-embed": {"model_name": "team-mi', b"[1, 2]",
                                     b"\xff\xfe\x00garbage", b""])
def test_a_corrupt_state_file_leaves_the_last_runs_models_unknown(home, database_url, caplog,
                                                                  content):
    write_previous_release_home(home, MINILM)
    (home / "state" / "models.json").write_bytes(content)
    with caplog.at_level(logging.ERROR):
        db = open_database(database_url, import_from=home)
    try:
        assert ModelStore(db).load() is None  # a replica a worker still runs is adopted
        assert len(DatabaseRegistrations(db).load()) == 2  # the rest is imported
        assert (_backups(home)["state"] / "models.json").read_bytes() == content
        assert f"the state file {home / 'state' / 'models.json'} is corrupt" in caplog.text
    finally:
        db.close()


def test_registrations_without_a_state_file_mean_no_model_ran(home, database_url):
    write_previous_release_home(home, MINILM)
    (home / "state" / "models.json").unlink()
    db = open_database(database_url, import_from=home)
    try:
        assert ModelStore(db).load() == {}
    finally:
        db.close()


def test_a_registration_file_that_cannot_be_read_stays_in_the_backup(home, database_url, caplog):
    write_previous_release_home(home, MINILM)
    (home / "registrations" / "embedding" / "cut.json").write_text('{"model_name": ')
    (home / "registrations" / "video").mkdir()
    (home / "registrations" / "video" / "clip.json").write_text("{}")
    with caplog.at_level(logging.ERROR):
        db = open_database(database_url, import_from=home)
    try:
        assert {(t, n) for t, n, _ in DatabaseRegistrations(db).load()} == REGISTRATIONS
        backup = _backups(home)["registrations"]
        assert (backup / "embedding" / "cut.json").is_file()
        assert f"not imported: {home / 'registrations' / 'embedding' / 'cut.json'}" in caplog.text
        assert "no model type 'video'" in caplog.text
    finally:
        db.close()
