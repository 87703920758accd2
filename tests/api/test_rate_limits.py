"""The per-key limiter (fleet.api.rate_limits) on a clock of the test's own, and the metering
middleware's admission around a route that succeeds, fails or is left by its client."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import orjson
import pytest

from fleet.api.auth.keys import DATABASE, Grant
from fleet.api.auth.middleware import GRANT_SCOPE_KEY
from fleet.api.metering import Metered, MeteringMiddleware
from fleet.api.rate_limits import RateLimiter, Refused, duration


class Clock:
    def __init__(self, when: datetime) -> None:
        self.now = when.timestamp()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


NOON = datetime(2026, 3, 14, 12, 0, 0, tzinfo=timezone.utc)


def _grant(key_id: str = "key-1", **limits: int) -> Grant:
    return Grant("app", frozenset({"models:read"}), key_id=key_id, source=DATABASE,
                 limits=limits or None)


def _done(limiter: RateLimiter, grant: Grant, prompt: int = 0, completion: int = 0) -> None:
    limiter.finished(Metered(grant, 0.0, prompt_tokens=prompt, completion_tokens=completion))


def _headers(answer: Refused | list[tuple[bytes, bytes]]) -> dict[str, str]:
    pairs = answer.headers if isinstance(answer, Refused) else answer
    return {name.decode(): value.decode() for name, value in pairs}


def _error(refused: Refused | list) -> dict:
    assert isinstance(refused, Refused), refused
    assert refused.status == 429
    return orjson.loads(refused.body)["error"]


def test_requests_per_minute_counts_a_sliding_minute_with_honest_remaining_and_reset():
    clock = Clock(NOON)
    limiter = RateLimiter(clock=clock)
    grant = _grant(requests_per_minute=3)
    first = _headers(limiter.admit(grant))
    assert first == {"x-ratelimit-limit-requests": "3", "x-ratelimit-remaining-requests": "2",
                     "x-ratelimit-reset-requests": "1m0s"}
    clock.advance(20)
    assert _headers(limiter.admit(grant))["x-ratelimit-remaining-requests"] == "1"
    clock.advance(10)
    third = _headers(limiter.admit(grant))
    assert third["x-ratelimit-remaining-requests"] == "0"
    assert third["x-ratelimit-reset-requests"] == "1m0s"  # empty once the newest leaves
    refused = limiter.admit(grant)
    error = _error(refused)
    assert error["code"] == "rate_limit_exceeded" and error["type"] == "rate_limit_error"
    assert "3 requests per minute" in error["message"]
    headers = _headers(refused)
    assert headers["retry-after"] == "30"  # when the first request leaves the window
    assert headers["x-ratelimit-remaining-requests"] == "0"
    clock.advance(29.5)
    assert isinstance(limiter.admit(grant), Refused)  # refusals are not counted
    clock.advance(0.5)
    assert _headers(limiter.admit(grant))["x-ratelimit-remaining-requests"] == "0"
    clock.advance(60)
    assert _headers(limiter.headers(grant)) == {
        "x-ratelimit-limit-requests": "3", "x-ratelimit-remaining-requests": "3",
        "x-ratelimit-reset-requests": "0s"}


def test_tokens_per_minute_count_what_was_used_and_refuse_at_the_limit():
    clock = Clock(NOON)
    limiter = RateLimiter(clock=clock)
    grant = _grant(tokens_per_minute=100)
    assert _headers(limiter.admit(grant))["x-ratelimit-remaining-tokens"] == "100"
    _done(limiter, grant, prompt=30, completion=30)
    clock.advance(10)
    assert _headers(limiter.admit(grant))["x-ratelimit-remaining-tokens"] == "40"
    _done(limiter, grant, prompt=50, completion=0)  # past the limit: it was admitted below it
    clock.advance(5)
    refused = limiter.admit(grant)
    error = _error(refused)
    assert "100 tokens per minute" in error["message"] and "110 used" in error["message"]
    headers = _headers(refused)
    assert headers["x-ratelimit-remaining-tokens"] == "0"
    assert headers["x-ratelimit-reset-tokens"] == "55s"  # the 50 tokens, 5 s ago
    assert headers["retry-after"] == "45"  # the first 60 leave: 50 < 100
    clock.advance(45)
    assert _headers(limiter.admit(grant))["x-ratelimit-remaining-tokens"] == "50"


def test_concurrency_slots_are_taken_at_admit_and_given_back_at_finish():
    limiter = RateLimiter(clock=Clock(NOON))
    grant = _grant(max_concurrent_requests=2)
    assert limiter.admit(grant) == [] and limiter.admit(grant) == []
    error = _error(limiter.admit(grant))
    assert "2 concurrent requests" in error["message"]
    assert limiter.running("key-1") == 2
    _done(limiter, grant)
    assert limiter.admit(grant) == []
    other = _grant("key-2", max_concurrent_requests=1)
    assert limiter.admit(other) == []  # keys are counted apart


def test_a_daily_budget_is_spent_then_renewed_at_midnight_utc():
    clock = Clock(datetime(2026, 3, 14, 23, 59, 0, tzinfo=timezone.utc))
    limiter = RateLimiter(clock=clock)
    grant = _grant(daily_tokens=1000)
    limiter.admit(grant)
    _done(limiter, grant, prompt=600, completion=400)
    refused = limiter.admit(grant)
    error = _error(refused)
    assert error["code"] == "insufficient_quota" and error["type"] == "insufficient_quota"
    assert "daily budget of 1000 tokens" in error["message"]
    assert _headers(refused)["retry-after"] == "60"  # until 00:00 UTC
    clock.advance(60)
    assert limiter.admit(grant) == []


def test_a_monthly_budget_holds_across_days_and_renews_on_the_first():
    clock = Clock(datetime(2026, 12, 31, 12, 0, 0, tzinfo=timezone.utc))
    limiter = RateLimiter(clock=clock)
    grant = _grant(monthly_tokens=500, daily_tokens=10_000)
    limiter.admit(grant)
    _done(limiter, grant, prompt=500)
    clock.advance(6 * 3600)  # 18:00 on the 31st
    refused = limiter.admit(grant)
    assert "monthly budget of 500 tokens" in _error(refused)["message"]
    assert _headers(refused)["retry-after"] == str(6 * 3600)  # 2027-01-01 00:00 UTC
    clock.advance(6 * 3600)
    assert limiter.admit(grant) == []


def test_budgets_are_seeded_from_the_usage_records_of_the_day_and_month():
    asked: list[datetime] = []

    def seed(since: datetime) -> dict[str, int]:
        asked.append(since)
        return {"key-1": 900} if since.day == 14 else {"key-1": 4900, "key-2": 10}

    clock = Clock(datetime(2026, 3, 14, 18, 30, tzinfo=timezone.utc))
    limiter = RateLimiter(seed=seed, clock=clock)
    assert sorted(asked) == [datetime(2026, 3, 1, tzinfo=timezone.utc),
                             datetime(2026, 3, 14, tzinfo=timezone.utc)]
    daily = _grant(daily_tokens=1000, monthly_tokens=5000)
    limiter.admit(daily)
    _done(limiter, daily, completion=100)  # 1000 today, 5000 this month
    error = _error(limiter.admit(daily))
    assert "monthly budget" in error["message"] and "5000 used" in error["message"]
    clock.advance(86_400)  # the 15th: the day renews, not the month
    assert "monthly budget" in _error(limiter.admit(daily))["message"]


def test_the_seed_does_not_carry_into_the_next_day():
    clock = Clock(datetime(2026, 3, 14, 23, 0, tzinfo=timezone.utc))
    limiter = RateLimiter(seed=lambda since: {"key-1": 1000}, clock=clock)
    clock.advance(3600)  # first seen on the 15th
    assert limiter.admit(_grant(daily_tokens=1000)) == []


def test_a_raised_limit_applies_at_the_next_request():
    limiter = RateLimiter(clock=Clock(NOON))
    limiter.admit(_grant(requests_per_minute=1))
    assert isinstance(limiter.admit(_grant(requests_per_minute=1)), Refused)
    assert _headers(limiter.admit(_grant(requests_per_minute=5)))[
        "x-ratelimit-remaining-requests"] == "3"


def _owned(key_id: str, owner_limits: dict[str, int], **limits: int) -> Grant:
    return Grant("app", frozenset({"models:read"}), key_id=key_id, source=DATABASE,
                 limits=limits or None, owner="team-b", owner_limits=owner_limits)


def test_a_user_s_limits_hold_the_sum_of_its_keys():
    clock = Clock(NOON)
    limiter = RateLimiter(clock=clock)
    team = {"requests_per_minute": 3, "max_concurrent_requests": 2}
    first, second = _owned("key-a", team), _owned("key-b", team, requests_per_minute=10)
    assert _headers(limiter.admit(first))["x-ratelimit-remaining-requests"] == "2"  # the user's
    # The key's own limit is shown where it has one.
    assert _headers(limiter.admit(second))["x-ratelimit-limit-requests"] == "10"
    error = _error(limiter.admit(first))
    assert "user team-b's (all its keys together) limit of 2 concurrent" in error["message"]
    assert limiter.running("key-a") == 1 and limiter.running("key-b") == 1
    _done(limiter, first)
    assert limiter.running("key-a") == 0
    assert _headers(limiter.admit(first))["x-ratelimit-remaining-requests"] == "0"
    _done(limiter, first)
    _done(limiter, second)
    refused = limiter.admit(second)  # key-b has 8 of its own left, the user none
    assert "user team-b's (all its keys together) limit of 3 requests per minute" in \
        _error(refused)["message"]
    assert _headers(refused)["x-ratelimit-limit-requests"] == "10"
    other = _grant("key-c", requests_per_minute=5)  # another user's key is apart
    assert _headers(limiter.admit(other))["x-ratelimit-remaining-requests"] == "4"


def test_a_user_s_budget_counts_every_key_s_tokens_and_is_seeded_by_user():
    clock = Clock(NOON)
    limiter = RateLimiter(seed=lambda since: {}, seed_users=lambda since: {"team-b": 900},
                          clock=clock)
    team = {"daily_tokens": 1000}
    first, second = _owned("key-a", team), _owned("key-b", team)
    assert limiter.admit(first) == []
    _done(limiter, first, prompt=60)
    assert limiter.admit(second) == []
    _done(limiter, second, prompt=40)  # 900 + 60 + 40
    error = _error(limiter.admit(first))
    assert error["code"] == "insufficient_quota" and "1000 used today" in error["message"]


@pytest.mark.parametrize(("seconds", "shown"), [
    (0, "0s"), (0.25, "250ms"), (1, "1s"), (59.5, "59.5s"), (360, "6m0s"),
    (3723.5, "1h2m3.5s"), (0.0001, "1ms")])
def test_durations_are_written_as_openai_writes_them(seconds, shown):
    assert duration(seconds) == shown


# ---- the middleware around a route ----

def _scope(grant: Grant | None, path: str = "/v1/embeddings") -> dict:
    return {"type": "http", "method": "POST", "path": path, "headers": [],
            GRANT_SCOPE_KEY: grant}


async def _call(app, scope: dict) -> list[dict]:
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


async def _ok(scope, receive, send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


async def test_the_middleware_adds_the_headers_and_refuses_with_a_whole_429():
    limiter = RateLimiter(clock=Clock(NOON))
    app = MeteringMiddleware(_ok, limiter, None)
    grant = _grant(requests_per_minute=1)
    sent = await _call(app, _scope(grant))
    assert (b"x-ratelimit-remaining-requests", b"0") in sent[0]["headers"]
    refused = await _call(app, _scope(grant))
    assert refused[0]["status"] == 429
    assert dict(refused[0]["headers"])[b"retry-after"] == b"60"
    assert orjson.loads(refused[1]["body"])["error"]["code"] == "rate_limit_exceeded"
    # A listing does not count, yet carries where the key stands.
    listing = await _call(app, _scope(grant, "/v1/models"))
    assert listing[0]["status"] == 200
    assert (b"x-ratelimit-remaining-requests", b"0") in listing[0]["headers"]
    # A key without limits passes untouched.
    free = await _call(app, _scope(_grant("key-free")))
    assert free[0]["headers"] == []


async def test_a_slot_is_given_back_when_the_route_fails_or_the_client_leaves():
    limiter = RateLimiter(clock=Clock(NOON))
    grant = _grant(max_concurrent_requests=1)

    async def failing(scope, receive, send) -> None:
        raise RuntimeError("the route failed")

    with pytest.raises(RuntimeError):
        await _call(MeteringMiddleware(failing, limiter, None), _scope(grant))
    assert limiter.running("key-1") == 0

    started = asyncio.Event()

    async def streaming(scope, receive, send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        started.set()
        await asyncio.sleep(3600)

    task = asyncio.create_task(_call(MeteringMiddleware(streaming, limiter, None), _scope(grant)))
    await started.wait()
    assert limiter.running("key-1") == 1
    assert _error(limiter.admit(grant))["code"] == "rate_limit_exceeded"
    task.cancel()  # what the server does when the client goes
    with pytest.raises(asyncio.CancelledError):
        await task
    assert limiter.running("key-1") == 0
