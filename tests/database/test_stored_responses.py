"""The Responses API's stored responses in the database, on SQLite and PostgreSQL: kept and
read back as they were, deleted once, and bounded by count (the oldest go first) and by age
(past it, a response is neither found nor kept)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from fleet.database.responses import DatabaseResponses, ResponseRecord
from fleet.database.schema import StoredResponse, utc_now


def _record(number: int) -> ResponseRecord:
    item = {"id": f"msg_{number}", "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": f"turn {number}"}]}
    return ResponseRecord(f"resp_{number}", "m", {"id": f"resp_{number}", "output": []},
                          [item], [item])


def _ids(db) -> list[str]:
    with db.reading() as session:
        return sorted(session.scalars(select(StoredResponse.id)).all())


def test_a_response_is_kept_read_back_and_deleted_once(db):
    store = DatabaseResponses(db, max_count=10, max_age=timedelta(days=1))
    store.save(_record(1))
    assert store.find("resp_1") == _record(1)
    assert store.find("resp_2") is None
    assert store.delete("resp_1") is True and store.delete("resp_1") is False
    assert store.find("resp_1") is None


def test_the_oldest_go_past_the_count(db):
    store = DatabaseResponses(db, max_count=3, max_age=timedelta(days=1))
    for number in range(5):
        store.save(_record(number))
    assert _ids(db) == ["resp_2", "resp_3", "resp_4"]


def test_a_response_past_its_age_is_neither_found_nor_kept(db):
    store = DatabaseResponses(db, max_count=10, max_age=timedelta(days=30))
    store.save(_record(1))
    store.save(_record(2))
    with db.writing() as session:
        session.execute(update(StoredResponse).where(StoredResponse.id == "resp_1").values(
            created_at=utc_now() - timedelta(days=31)))
    assert store.find("resp_1") is None and store.find("resp_2") is not None
    store.save(_record(3))  # each write prunes
    assert _ids(db) == ["resp_2", "resp_3"]
