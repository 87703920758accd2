"""The stored responses of OpenAI's Responses API, bounded by count and age: each write prunes
what is past either bound (the oldest first), so the table never holds more than the bounds
allow. Called off the event loop (fleet.api.responses.store), never on the hot path."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select

from fleet.database.api_keys import as_utc
from fleet.database.engine import Database
from fleet.database.schema import StoredResponse, utc_now


@dataclass(frozen=True)
class ResponseRecord:
    id: str
    model: str
    response: dict[str, Any]
    input_items: list[dict[str, Any]]
    conversation: list[dict[str, Any]]


class DatabaseResponses:
    def __init__(self, db: Database, max_count: int, max_age: timedelta):
        self.db = db
        self.max_count = max_count
        self.max_age = max_age

    def save(self, record: ResponseRecord) -> None:
        """Keeps `record`, then prunes past the bounds, in one transaction."""
        with self.db.writing() as session:
            session.add(StoredResponse(id=record.id, model=record.model,
                                       response=record.response,
                                       input_items=record.input_items,
                                       conversation=record.conversation,
                                       created_at=utc_now()))
            session.flush()
            session.execute(delete(StoredResponse).where(
                StoredResponse.created_at < utc_now() - self.max_age))
            count = session.scalar(select(func.count()).select_from(StoredResponse)) or 0
            extra = count - self.max_count
            if extra > 0:
                oldest = select(StoredResponse.id).order_by(
                    StoredResponse.created_at, StoredResponse.id).limit(extra)
                session.execute(delete(StoredResponse).where(StoredResponse.id.in_(oldest)))

    def find(self, response_id: str) -> ResponseRecord | None:
        """The record, unless it is gone or past its age."""
        with self.db.reading() as session:
            row = session.get(StoredResponse, response_id)
            if row is None or _older_than(row.created_at, self.max_age):
                return None
            return ResponseRecord(row.id, row.model, row.response, row.input_items,
                                  row.conversation)

    def delete(self, response_id: str) -> bool:
        with self.db.writing() as session:
            result = session.execute(delete(StoredResponse).where(
                StoredResponse.id == response_id))
            return bool(result.rowcount)  # type: ignore[attr-defined]


def _older_than(when: datetime, age: timedelta) -> bool:
    created = as_utc(when)
    return created is not None and created < utc_now() - age
