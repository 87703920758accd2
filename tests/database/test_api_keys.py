"""API keys and the audit log in the database, on SQLite and PostgreSQL: a key is kept as its
hash with its rights and limits, changed field by field, revoked but kept; every change gives a
new token (what API processes poll); the audit log answers newest first, by time and action."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy import text

from fleet.database.api_keys import LIMIT_FIELDS, DatabaseKeys
from fleet.database.audit import AuditLog

LIMITS = {"requests_per_minute": 5, "tokens_per_minute": 10_000, "max_concurrent_requests": 2,
          "daily_tokens": 3_000_000_000, "monthly_tokens": None}


def _create(keys: DatabaseKeys, name: str = "app", **overrides):
    fields = {"sha256": name.encode().hex().ljust(64, "0"), "prefix": "sk-fleet-abcd",
              "name": name, "owner": "team-a", "permissions": ["models:read"],
              "models": ["m1"], "limits": LIMITS, "expires_at": None}
    return keys.create(**{**fields, **overrides})


def test_a_key_is_kept_with_its_rights_and_limits_and_read_back(db):
    keys = DatabaseKeys(db)
    assert keys.snapshot().any_key is False and keys.token() is None
    expires = datetime.now(timezone.utc) + timedelta(days=1)
    made = _create(keys, expires_at=expires)
    again = DatabaseKeys(db).get(made.id)
    assert again == made
    assert again.limits == LIMITS
    assert again.limits["daily_tokens"] == 3_000_000_000  # beyond 32 bits on PostgreSQL too
    assert again.expires_at == expires and again.expires_at.tzinfo is not None
    assert again.owner == "team-a" and again.revoked_at is None
    with db.reading() as session:
        assert session.execute(text("SELECT name FROM users")).scalars().all() == ["team-a"]
    snapshot = keys.snapshot()
    assert snapshot.any_key and [k.id for k in snapshot.active] == [made.id]
    assert snapshot.token is not None


def test_every_change_gives_a_new_token_and_an_update_changes_only_what_it_names(db):
    keys = DatabaseKeys(db)
    made = _create(keys)
    first = keys.token()
    changed = keys.update(made.id, {"name": "renamed", "tokens_per_minute": None,
                                    "models": None, "owner": "team-b"})
    assert changed is not None and keys.token() != first
    assert changed.name == "renamed" and changed.models is None and changed.owner == "team-b"
    assert changed.limits == {**LIMITS, "tokens_per_minute": None}
    assert changed.permissions == ["models:read"] and changed.sha256 == made.sha256
    assert keys.update("key-unknown", {"name": "x"}) is None


def test_a_revoked_key_is_kept_listed_but_not_active_and_auth_stays_on(db):
    keys = DatabaseKeys(db)
    made = _create(keys)
    other = _create(keys, name="other")
    before = keys.token()
    revoked = keys.revoke(made.id)
    assert revoked is not None and revoked.revoked_at is not None
    assert keys.token() != before
    assert keys.revoke(made.id).revoked_at == revoked.revoked_at  # once
    snapshot = keys.snapshot()
    assert [k.id for k in snapshot.active] == [other.id]
    keys.revoke(other.id)
    assert keys.snapshot().any_key is True and keys.snapshot().active == []
    assert {k.id for k in keys.all()} == {made.id, other.id}
    assert keys.revoke("key-unknown") is None


def test_last_use_is_written_in_a_batch_without_a_key_change(db):
    keys = DatabaseKeys(db)
    made = _create(keys)
    token = keys.token()
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    keys.mark_used({made.id: when, "key-gone": when})
    assert keys.get(made.id).last_used_at == when and keys.token() == token


def test_the_limit_fields_are_the_tables_columns(db):
    with db.reading() as session:
        row = session.execute(text(f"SELECT {', '.join(LIMIT_FIELDS)} FROM api_keys")).all()
    assert row == []


def test_the_audit_log_answers_newest_first_by_time_and_action(db):
    log = AuditLog(db)
    log.record(actor="admin key", actor_key_id="flag-1", action="model.launch",
               target="m1", details={"model_name": "minilm"}, client_address="127.0.0.1")
    middle = datetime.now(timezone.utc)
    log.record(actor="ops", actor_key_id="key-1", action="key.revoke", target="key-2",
               details=None, client_address="10.0.0.2")
    log.record(actor="ops", actor_key_id="key-1", action="model.terminate", target="m1",
               details=None, client_address=None)
    entries = log.query()
    assert [e["action"] for e in entries] == ["model.terminate", "key.revoke", "model.launch"]
    assert entries[2]["details"] == {"model_name": "minilm"}
    assert entries[2]["client_address"] == "127.0.0.1" and entries[2]["actor"] == "admin key"
    assert [e["action"] for e in log.query(since=middle)] == ["model.terminate", "key.revoke"]
    assert [e["target"] for e in log.query(action="key.revoke")] == ["key-2"]
    assert len(log.query(limit=1)) == 1
    assert datetime.fromisoformat(entries[0]["time"]).tzinfo is not None
