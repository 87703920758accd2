"""The audit log: one row per management action (a launch, a scale, a terminate, a
registration, a cache removal, a key made, changed or revoked), with who made it (the key's
name and id), when, and from which address. Written by the management routes once the action
is done (fleet.api.audit), never by the inference path."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import select

from fleet.database.api_keys import as_utc
from fleet.database.engine import Database
from fleet.database.schema import AuditEntry, utc_now

MAX_ENTRIES = 1000  # the most one query answers


class AuditLog:
    def __init__(self, db: Database):
        self.db = db

    def record(self, *, actor: str, actor_key_id: str | None, action: str,
               target: str | None, details: dict[str, Any] | None,
               client_address: str | None) -> None:
        with self.db.writing() as session:
            session.add(AuditEntry(time=utc_now(), actor=actor, actor_key_id=actor_key_id,
                                   action=action, target=target, details=details,
                                   client_address=client_address))

    def query(self, since: datetime | None = None, action: str | None = None,
              limit: int = 100) -> list[dict[str, Any]]:
        """Newest first: the entries since `since` (inclusive), of one action if given."""
        statement = select(AuditEntry).order_by(AuditEntry.time.desc(), AuditEntry.id.desc())
        if since is not None:
            statement = statement.where(AuditEntry.time >= since.astimezone(timezone.utc))
        if action is not None:
            statement = statement.where(AuditEntry.action == action)
        with self.db.reading() as session:
            rows = session.scalars(statement.limit(min(limit, MAX_ENTRIES))).all()
            return [_entry(row) for row in rows]


def _entry(row: AuditEntry) -> dict[str, Any]:
    when = as_utc(row.time)
    return {"id": row.id, "time": when.isoformat() if when else None, "actor": row.actor,
            "actor_key_id": row.actor_key_id, "action": row.action, "target": row.target,
            "details": row.details, "client_address": row.client_address}
