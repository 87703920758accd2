"""The usage recorder: requests added are written in batches (by time, and sooner at
FLUSH_ROWS), what is left is written at stop, a write the database refuses is kept and written
at the next flush (within a bound), and records past the retention are deleted."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone

from sqlalchemy import text

from fleet.api import usage_recorder
from fleet.api.auth.keys import Grant
from fleet.api.metering import Metered
from fleet.api.usage_recorder import UsageRecorder
from fleet.database.launched_models import ModelStore
from fleet.database.usage import UsageQuery, UsageRow, UsageStore

ALICE = Grant("alice's app", frozenset({"models:read"}), key_id="k-alice", owner="alice")
FILE_USER = Grant("bob", frozenset({"models:read"}), key_id="file-123")
SPAN = (datetime.now(timezone.utc) - timedelta(hours=1),
        datetime.now(timezone.utc) + timedelta(hours=1))


def _metered(grant: Grant | None, prompt: int = 3, completion: int = 4,
             endpoint: str = "chat_completions", status: int = 200) -> Metered:
    return Metered(grant, time.perf_counter(), model="smol", endpoint=endpoint,
                   prompt_tokens=prompt, completion_tokens=completion, status=status,
                   latency_s=0.25)


def _records(store: UsageStore, **query) -> list[dict]:
    return store.query(UsageQuery(*SPAN, group_by=("key", "user"), **query))


def test_a_flush_writes_what_was_added_with_who_and_what(db):
    store = UsageStore(db)
    recorder = UsageRecorder(store)
    recorder.add(_metered(ALICE))
    recorder.add(_metered(ALICE, prompt=5, status=500))
    recorder.add(_metered(FILE_USER, endpoint="speech"))
    recorder.add(_metered(None, endpoint="embeddings"))
    assert _records(store) == []  # adding wrote nothing
    asyncio.run(recorder.flush())
    rows = {r["key_id"]: r for r in _records(store)}
    assert rows["k-alice"]["user"] == "alice" and rows["k-alice"]["requests"] == 2
    assert rows["k-alice"]["prompt_tokens"] == 8 and rows["k-alice"]["errors"] == 1
    assert rows["k-alice"]["mean_latency_ms"] == 250.0
    assert rows["file-123"]["user"] == "bob"  # a file key: its user is its holder
    assert rows[None]["user"] is None and rows[None]["total_tokens"] == 7
    with db.reading() as session:
        kinds = sorted(session.execute(text("SELECT kind FROM usage_records")).scalars())
    assert kinds == ["audio", "chat", "chat", "embeddings"]


def test_the_task_writes_every_second_and_sooner_when_full(db, monkeypatch):
    monkeypatch.setattr(usage_recorder, "FLUSH_S", 0.5)
    monkeypatch.setattr(usage_recorder, "FLUSH_ROWS", 50)
    store = UsageStore(db)

    async def scenario() -> tuple[int, int]:
        recorder = UsageRecorder(store)
        task = asyncio.create_task(recorder.run())
        await asyncio.sleep(0.1)  # its first prune done: waiting
        recorder.add(_metered(ALICE))
        await asyncio.sleep(1.0)
        by_time = sum(r["requests"] for r in _records(store))
        started = time.monotonic()
        for _ in range(50):
            recorder.add(_metered(ALICE))
        while sum(r["requests"] for r in _records(store)) < 51:
            await asyncio.sleep(0.02)
        task.cancel()
        return by_time, time.monotonic() - started

    by_time, full_after = asyncio.run(scenario())
    assert by_time == 1
    assert full_after < 0.4  # well before the next tick


def test_what_is_left_is_written_at_stop_with_the_models_family(db):
    """The family is the catalogue name the supervisor saved the model's launch with: read
    from the database, so that the requests of the last second before a stop have it too."""
    ModelStore(db).write({"smol": {"model_name": "smollm2-instruct", "replica": 1}})
    store = UsageStore(db)
    recorder = UsageRecorder(store)
    for _ in range(3):
        recorder.add(_metered(ALICE))
    recorder.add(Metered(None, time.perf_counter(), model="gone", endpoint="embeddings"))
    recorder.close()
    rows = store.query(UsageQuery(*SPAN, group_by=("model", "family")))
    assert [(r["model"], r["family"], r["requests"]) for r in rows] == [
        ("gone", None, 1), ("smol", "smollm2-instruct", 3)]


def _hide_table(db, hidden: bool) -> None:
    names = ("usage_records", "usage_hidden") if hidden else ("usage_hidden", "usage_records")
    with db.writing() as session:
        session.execute(text(f"ALTER TABLE {names[0]} RENAME TO {names[1]}"))


def test_a_refused_write_is_kept_for_the_next_flush_within_a_bound(db, monkeypatch, caplog):
    store = UsageStore(db)
    recorder = UsageRecorder(store)
    recorder.add(_metered(ALICE, prompt=1))
    _hide_table(db, True)  # the database refuses the write: no such table
    asyncio.run(recorder.flush())
    assert "could not write 1 records" in caplog.text
    recorder.add(_metered(ALICE, prompt=2))
    _hide_table(db, False)
    asyncio.run(recorder.flush())
    assert _records(store)[0]["prompt_tokens"] == 3  # both, once each

    monkeypatch.setattr(usage_recorder, "MAX_KEPT", 2)
    _hide_table(db, True)
    for prompt in (10, 20, 30):
        recorder.add(_metered(ALICE, prompt=prompt))
    asyncio.run(recorder.flush())
    assert "dropped the 1 oldest" in caplog.text
    _hide_table(db, False)
    asyncio.run(recorder.flush())
    assert _records(store)[0]["prompt_tokens"] == 3 + 20 + 30


def _aged(store: UsageStore, days: float) -> None:
    store.insert([UsageRow(time=datetime.now(timezone.utc) - timedelta(days=days),
                           key_id="k-old", user_name=None, model="smol", family=None,
                           kind="chat", prompt_tokens=1, completion_tokens=1, images=0,
                           audio_seconds=0.0, status=200, latency_ms=1.0)])


def test_records_past_the_retention_are_deleted_and_zero_keeps_them(db):
    store = UsageStore(db)
    for days in (40, 20, 0):
        _aged(store, days)
    assert asyncio.run(UsageRecorder(store, retention_days=0).prune()) == 0
    assert asyncio.run(UsageRecorder(store, retention_days=30).prune()) == 1
    left = store.tokens_by_key_since(datetime.now(timezone.utc) - timedelta(days=90))
    assert left == {"k-old": 4}


def test_per_key_series_exist_only_when_asked_and_count_what_is_recorded(db):
    from prometheus_client import generate_latest

    from fleet.api.metrics import FleetMetrics

    metrics = FleetMetrics()
    recorder = UsageRecorder(UsageStore(db))
    recorder.add(_metered(ALICE))
    asyncio.run(recorder.flush())
    assert b"fleet_key_" not in generate_latest(metrics.registry)  # off by default
    recorder.count_keys_in(metrics)
    recorder.add(_metered(ALICE, prompt=5, completion=6))
    recorder.add(_metered(None))
    asyncio.run(recorder.flush())
    text = generate_latest(metrics.registry).decode()
    assert 'fleet_key_requests_total{key_id="k-alice",model="smol"} 1.0' in text
    assert 'fleet_key_tokens_total{key_id="k-alice",kind="completion",model="smol"} 6.0' in text
    assert 'fleet_key_requests_total{key_id="",model="smol"} 1.0' in text
