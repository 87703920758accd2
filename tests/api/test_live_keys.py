"""The keys an API process holds in memory (fleet.api.auth.live_keys), on SQLite and
PostgreSQL: a key made or revoked by one API process holds on another within a second through
the change token it polls; an expired key is refused at its second without any change; a
cluster without command-line keys is open until its first key is made, and stays closed once
every key is revoked."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone

from fleet.api.auth.keys import ADMIN, FLAG, Grant, hash_key
from fleet.api.auth.live_keys import LiveKeys
from fleet.database.api_keys import LIMIT_FIELDS, DatabaseKeys

KEY = "sk-fleet-live-key-for-tests-0001"


def _make(keys: DatabaseKeys, key: str = KEY, expires_at: datetime | None = None,
          permissions: list[str] | None = None):
    return keys.create(sha256=hash_key(key), prefix=key[:14], name="app", owner=None,
                       permissions=permissions or [ADMIN], models=None,
                       limits=dict.fromkeys(LIMIT_FIELDS), expires_at=expires_at)


async def _until(condition, within_s: float) -> float:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < within_s, "not within the time allowed"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


def test_a_change_on_one_api_process_holds_on_another_within_a_second(db):
    async def scenario() -> None:
        here, there = LiveKeys({}, DatabaseKeys(db)), LiveKeys({}, DatabaseKeys(db))
        here.load()
        there.load()
        assert here.open and there.open and here.find(KEY.encode()) is None
        following = asyncio.create_task(there.follow())
        try:
            made = await asyncio.to_thread(_make, here.keys)
            await here.reload()  # what the process that made it does before answering
            assert here.find(KEY.encode()).key_id == made.id and not here.open
            await _until(lambda: there.find(KEY.encode()) is not None, 1.0)
            assert not there.open
            await asyncio.to_thread(here.keys.revoke, made.id)
            await here.reload()
            assert here.find(KEY.encode()) is None
            await _until(lambda: there.find(KEY.encode()) is None, 1.0)
            assert not there.open  # every key revoked: still closed
        finally:
            following.cancel()

    asyncio.run(scenario())


def test_an_expired_key_is_refused_at_its_time_without_a_change(db):
    live = LiveKeys({}, DatabaseKeys(db))
    _make(live.keys, expires_at=datetime.now(timezone.utc) + timedelta(seconds=0.6))
    live.load()
    assert live.find(KEY.encode()) is not None
    time.sleep(0.7)
    assert live.find(KEY.encode()) is None
    assert live.find(b"sk-fleet-some-other-key") is None


def test_command_line_keys_close_the_cluster_and_win_over_a_copy(db):
    flag = Grant("admin key", frozenset({ADMIN}), key_id="flag-x", source=FLAG)
    live = LiveKeys({hash_key(KEY): flag}, DatabaseKeys(db))
    live.load()
    assert not live.open and live.find(KEY.encode()) is flag
    _make(live.keys, permissions=["models:list"])  # the same key in the database
    live.load()
    assert live.find(KEY.encode()) is flag


def test_the_last_use_of_a_key_is_written_in_a_batch(db):
    live = LiveKeys({}, DatabaseKeys(db))
    made = _make(live.keys)
    live.load()
    before = datetime.now(timezone.utc)
    asyncio.run(live.flush_used())  # nothing used yet: nothing written
    assert live.keys.get(made.id).last_used_at is None
    assert live.find(KEY.encode()) is not None
    asyncio.run(live.flush_used())
    assert live.keys.get(made.id).last_used_at >= before


def test_a_key_s_grant_holds_only_the_limits_it_has_and_follows_their_change(db):
    live = LiveKeys({}, DatabaseKeys(db))
    made = _make(live.keys)
    live.load()
    unlimited = live.find(KEY.encode())
    assert unlimited.limits is None and not unlimited.limited  # the hot path's one test
    live.keys.update(made.id, {"requests_per_minute": 5, "daily_tokens": 1000})
    live.load()
    limited = live.find(KEY.encode())
    assert limited.limits == {"requests_per_minute": 5, "daily_tokens": 1000} and limited.limited


def test_a_key_s_grant_carries_its_owner_s_limits_once_set_and_none_once_cleared(db):
    live = LiveKeys({}, DatabaseKeys(db))
    live.keys.create(sha256=hash_key(KEY), prefix=KEY[:14], name="app", owner="team-b",
                     permissions=["models:read"], models=None,
                     limits=dict.fromkeys(LIMIT_FIELDS), expires_at=None)
    live.load()
    assert not live.find(KEY.encode()).limited
    stored = live.keys.set_user_limits("team-b", {"requests_per_minute": 3})
    assert stored.limits == {**dict.fromkeys(LIMIT_FIELDS), "requests_per_minute": 3}
    assert [user.name for user in live.keys.users()] == ["team-b"]
    live.load()
    grant = live.find(KEY.encode())
    assert grant.owner == "team-b" and grant.owner_limits == {"requests_per_minute": 3}
    assert grant.limits is None and grant.limited
    live.keys.set_user_limits("team-b", {})
    live.load()
    assert live.find(KEY.encode()).owner_limits is None and not live.find(KEY.encode()).limited
