"""Usage records: a batch written in one transaction, summed by group and bucket of time the
same on SQLite and PostgreSQL, tokens per key and per user since a time, and pruned."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from fleet.database.usage import UsageQuery, UsageRow, UsageStore

T0 = datetime(2026, 3, 1, 10, 15, tzinfo=timezone.utc)


def _row(minutes: float, key: str | None, model: str = "chat-a", prompt: int = 10,
         completion: int = 5, status: int = 200, **extra) -> UsageRow:
    fields = dict(time=T0 + timedelta(minutes=minutes), key_id=key,
                  user_name=f"user-of-{key}" if key else None, model=model,
                  family="smollm2-instruct", kind="chat", prompt_tokens=prompt,
                  completion_tokens=completion, images=0, audio_seconds=0.0, status=status,
                  latency_ms=20.0)
    fields.update(extra)
    return UsageRow(**fields)


ROWS = [
    _row(0, "k1"), _row(10, "k1", completion=7), _row(50, "k1", status=429),  # hour 10 and 11
    _row(5, "k2", model="embed-b", completion=0, prompt=3),
    _row(60 * 25, "k2", model="embed-b", completion=0, prompt=4),  # the next day
    _row(1, None, images=2, kind="images", prompt=0, completion=0, audio_seconds=1.5),
]


def _store(db) -> UsageStore:
    store = UsageStore(db)
    store.insert(ROWS)
    return store


def test_totals_by_key_and_model_sum_the_records(db):
    store = _store(db)
    rows = store.query(UsageQuery(T0 - timedelta(days=1), T0 + timedelta(days=3),
                                  group_by=("key", "model")))
    by = {(r["key_id"], r["model"]): r for r in rows}
    assert by[("k1", "chat-a")] == {
        "key_id": "k1", "model": "chat-a", "requests": 3, "errors": 1, "prompt_tokens": 30,
        "completion_tokens": 17, "total_tokens": 47, "images": 0, "audio_seconds": 0.0,
        "mean_latency_ms": 20.0}
    assert by[("k2", "embed-b")]["prompt_tokens"] == 7
    assert by[(None, "chat-a")]["images"] == 2 and by[(None, "chat-a")]["audio_seconds"] == 1.5
    assert len(rows) == 3


def test_buckets_are_cut_in_utc_by_hour_day_and_month(db):
    store = _store(db)
    span = (T0 - timedelta(days=1), T0 + timedelta(days=3))
    hours = store.query(UsageQuery(*span, bucket="hour", key_id="k1"))
    assert [(r["bucket"], r["requests"]) for r in hours] == [
        ("2026-03-01T10:00:00Z", 2), ("2026-03-01T11:00:00Z", 1)]
    days = store.query(UsageQuery(*span, group_by=("user",), bucket="day"))
    assert [(r["bucket"], r["user"], r["total_tokens"]) for r in days] == [
        ("2026-03-01T00:00:00Z", None, 0), ("2026-03-01T00:00:00Z", "user-of-k1", 47),
        ("2026-03-01T00:00:00Z", "user-of-k2", 3), ("2026-03-02T00:00:00Z", "user-of-k2", 4)]
    months = store.query(UsageQuery(*span, bucket="month"))
    assert [(r["bucket"], r["requests"]) for r in months] == [("2026-03-01T00:00:00Z", 6)]


def test_the_range_and_filters_hold(db):
    store = _store(db)
    early = store.query(UsageQuery(T0, T0 + timedelta(minutes=10)))  # end excluded
    assert early[0]["requests"] == 3
    assert store.query(UsageQuery(T0 + timedelta(days=5), T0 + timedelta(days=6))) == []
    only = store.query(UsageQuery(T0, T0 + timedelta(days=3), model="embed-b", user="user-of-k2"))
    assert only[0]["requests"] == 2


def test_tokens_since_by_key_and_by_user(db):
    store = _store(db)
    assert store.tokens_by_key_since(T0) == {"k1": 47, "k2": 7}
    assert store.tokens_by_key_since(T0 + timedelta(hours=1)) == {"k2": 4}
    assert store.tokens_by_user_since(T0 + timedelta(minutes=6)) == {"user-of-k1": 32,
                                                                       "user-of-k2": 4}


def test_records_older_than_a_time_are_deleted(db):
    store = _store(db)
    assert store.delete_before(T0 + timedelta(hours=1)) == 5
    left = store.query(UsageQuery(T0 - timedelta(days=1), T0 + timedelta(days=3)))
    assert left[0]["requests"] == 1 and left[0]["prompt_tokens"] == 4
