"""Which database a cluster uses, and how its URL is shown: never with its password."""

from __future__ import annotations

import pytest

from fleet.database import Database
from fleet.database.url import database_url, hidden
from fleet.errors import BadRequest


def test_the_default_is_sqlite_in_fleet_home(tmp_path, monkeypatch):
    monkeypatch.setenv("FLEET_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FLEET_DATABASE_URL", raising=False)
    url = database_url()
    assert url.get_backend_name() == "sqlite" and url.database == str(tmp_path / "home" / "fleet.db")


def test_the_environment_names_one_and_a_given_url_wins(monkeypatch):
    monkeypatch.setenv("FLEET_DATABASE_URL", "postgresql://a:b@db.example/fleet")
    assert database_url().host == "db.example"
    assert database_url("sqlite:////srv/fleet.db").database == "/srv/fleet.db"


@pytest.mark.parametrize("given", ["postgresql://u:p@h/d", "postgres://u:p@h/d",
                                   "postgresql+psycopg://u:p@h/d"])
def test_postgresql_is_reached_with_psycopg_whatever_its_spelling(given):
    url = database_url(given)
    assert url.drivername == "postgresql+psycopg"
    assert (url.username, url.password, url.host, url.database) == ("u", "p", "h", "d")


@pytest.mark.parametrize(("given", "why"), [
    ("mysql://u:p@h/d", "SQLite or PostgreSQL, not 'mysql'"),
    ("sqlite://", "must be a file"),
    ("sqlite:///:memory:", "must be a file"),
    ("not a url", "is not a URL"),
])
def test_what_fleet_cannot_keep_its_state_in_is_refused(given, why):
    with pytest.raises(BadRequest, match=why) as refused:
        database_url(given)
    assert refused.value.code == "bad_database_url"


def test_a_url_is_shown_without_its_password():
    given = "postgresql://fleet:pa%40ss-w0rd@db.example:5433/fleet"
    assert hidden(given) == "postgresql://fleet:***@db.example:5433/fleet"
    db = Database(given)  # connects to nothing yet
    try:
        assert "pa@ss-w0rd" not in repr(db) and "pa%40ss-w0rd" not in db.shown
        assert db.shown == "postgresql+psycopg://fleet:***@db.example:5433/fleet"
    finally:
        db.close()
    with pytest.raises(BadRequest) as refused:
        database_url("mysql://fleet:hunter2@h/d")
    assert "hunter2" not in refused.value.message
