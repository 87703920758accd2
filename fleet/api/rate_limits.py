"""Per-key limits: requests and tokens per minute, concurrent requests, and token budgets per
UTC day and month (the limits of a key made through /v1/keys, fleet.api.auth.key_requests.
KeyLimits; the keys of --api-key and --auth-config have none). A user (a key's owner) may have
the same limits (PUT /v1/users/{name}/limits), held by counters of its own that every request
of its keys feeds: the sum of its keys.

Counted in this process's memory: a cluster has one API process (the supervisor's), so its
counters see every request of every key and are exact, with nothing written or read on the
request path. The metering middleware (fleet.api.metering) calls `admit` as an inference
request arrives (after its key is checked) and `finished` once its answer is complete, whether
it succeeded, failed or its client left, so a concurrent slot is always given back.

How each limit counts:
- requests per minute: the requests admitted in the last 60 s, counted per second (a deque of
  at most 60 (second, count) pairs per key). `remaining` is the limit less that count, exactly;
  the reset is when the window is empty again (OpenAI's "resets to its initial state"), and a
  refusal's Retry-After is when its oldest second leaves the window, i.e. when one more request
  would be admitted. A bucket that refills would give figures that move between requests.
- tokens per minute: the same window, fed at `finished` with the tokens the answer really used
  (prompt and completion, as the engine counted them). A request is refused while the last
  minute's tokens are at or past the limit: what a request will use is not known at its arrival,
  so the last request before the limit may pass it.
- concurrent requests: a slot taken at `admit`, given back at `finished`.
- daily and monthly tokens: the tokens used since the start of the UTC day and month. At start
  they are seeded from the usage records (`seed`: key id -> tokens used since a time;
  `seed_users`: user name -> the same), so a restart does not hand a key a fresh budget;
  they roll over at 00:00 UTC and on the 1st.
  A budget set on a key that had no limits counts that key's tokens from then on until the
  next restart, which seeds it from the records (keys without limits cost the request path
  nothing, so their tokens are not followed here).

Refused requests are not counted. A refusal is a 429 in OpenAI's error shape: code
`rate_limit_exceeded` for the per-minute and concurrency limits (type `rate_limit_error`, as
Fleet's other 429), `insufficient_quota` (type and code, as OpenAI's) for a spent budget, whose
clients should not retry at once. Every answer to a key with a per-minute limit carries OpenAI's
headers for it: `x-ratelimit-limit-requests`, `-remaining-requests`, `-reset-requests` and the
`-tokens` trio (resets in OpenAI's duration format, `1s`, `6m0s`, `250ms`)."""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone

import orjson

from fleet.api.auth.keys import Grant
from fleet.api.errors import error_body
from fleet.api.metering import Metered

WINDOW_S = 60
DAY_S = 86_400
Headers = list[tuple[bytes, bytes]]
# key id -> tokens its requests used since `since` (the usage records).
UsageSeed = Callable[[datetime], dict[str, int]]

RPM, TPM, CONCURRENT = "requests_per_minute", "tokens_per_minute", "max_concurrent_requests"
DAILY, MONTHLY = "daily_tokens", "monthly_tokens"
USER = "user:"  # a user's counters sit beside its keys' (whose ids begin "key-")


class Window:
    """What was counted in each second of the last minute (of a `clock` in seconds)."""

    __slots__ = ("_seconds", "total")

    def __init__(self) -> None:
        self._seconds: deque[list[int]] = deque()  # [second, count], oldest first
        self.total = 0

    def add(self, now: float, amount: int) -> None:
        second = int(now)
        if self._seconds and self._seconds[-1][0] == second:
            self._seconds[-1][1] += amount
        else:
            self._seconds.append([second, amount])
        self.total += amount

    def sum(self, now: float) -> int:
        oldest_kept = int(now) - WINDOW_S + 1
        while self._seconds and self._seconds[0][0] < oldest_kept:
            self.total -= self._seconds.popleft()[1]
        return self.total

    def seconds_until_below(self, limit: int, now: float) -> float:
        """How long until the window's sum falls below `limit` (after `sum(now)`)."""
        left = self.total
        for second, count in self._seconds:
            left -= count
            if left < limit:
                return second + WINDOW_S - now
        return 0.0

    def seconds_until_empty(self, now: float) -> float:
        return self._seconds[-1][0] + WINDOW_S - now if self._seconds else 0.0


@dataclass(slots=True)
class KeyUse:
    """One key's counters."""

    requests: Window = field(default_factory=Window)
    tokens: Window = field(default_factory=Window)
    running: int = 0
    day: int = -1  # days since the epoch (UTC) that day_tokens counts
    day_tokens: int = 0
    month: tuple[int, int] = (0, 0)  # (year, month) that month_tokens counts
    month_tokens: int = 0
    month_ends: float = 0.0  # the clock's time at which the month rolls over


@dataclass(frozen=True, slots=True)
class Refused:
    """A 429 ready to send (fleet.api.metering.Refusal)."""

    status: int
    headers: Headers
    body: bytes


def duration(seconds: float) -> str:
    """OpenAI's (Go's) duration format: `250ms`, `1s`, `6m0s`, `1h2m3.5s`."""
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        return f"{max(1, round(seconds * 1000))}ms"
    whole_ms = round(seconds * 1000)
    hours, rest = divmod(whole_ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def _month_start(when: datetime) -> datetime:
    return when.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _next_month(when: datetime) -> datetime:
    start = _month_start(when)
    return start.replace(year=start.year + 1, month=1) if start.month == 12 \
        else start.replace(month=start.month + 1)


class RateLimiter:
    """The per-key counters of this API process (see the top). `clock`: Unix time in seconds
    (a test's own); `seed`: the tokens each key used since a time, read once, here."""

    def __init__(self, seed: UsageSeed | None = None, seed_users: UsageSeed | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._keys: dict[str, KeyUse] = {}  # by key id, and by USER + name for users
        now = datetime.fromtimestamp(clock(), timezone.utc)
        day_start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        self._seed_day = int(now.timestamp() // DAY_S)
        self._seed_month = (now.year, now.month)
        self._seeded_daily = _seeded(seed, seed_users, day_start)
        self._seeded_monthly = _seeded(seed, seed_users, _month_start(now))

    # ---- the middleware's calls ----

    def admit(self, grant: Grant) -> Refused | Headers:
        """Takes the request's place (a request of the minute, a concurrent slot) for its key
        and its owner, and gives the headers of its answer; or refuses it."""
        now = self._clock()
        use = self._use(grant.key_id, now)
        owner_use = self._use(USER + str(grant.owner), now) if grant.owner_limits else None
        refusal = self._refusal(grant.limits or {}, use, now, "this API key's")
        if refusal is None and owner_use is not None:
            refusal = self._refusal(grant.owner_limits or {}, owner_use, now,
                                    f"the user {grant.owner}'s (all its keys together)")
        if refusal is not None:
            return _refused(*refusal, self._headers_of(grant, use, owner_use, now))
        for taken in (use, owner_use):
            if taken is not None:
                taken.requests.add(now, 1)
                taken.running += 1
        return self._headers_of(grant, use, owner_use, now)

    def finished(self, metered: Metered) -> None:
        """The request's slots given back and the tokens it used counted."""
        grant = metered.grant
        if grant is None:
            return
        now = self._clock()
        uses = [self._use(grant.key_id, now)]
        if grant.owner_limits:
            uses.append(self._use(USER + str(grant.owner), now))
        tokens = metered.tokens
        for use in uses:
            use.running = max(0, use.running - 1)
            if tokens:
                use.tokens.add(now, tokens)
                use.day_tokens += tokens
                use.month_tokens += tokens

    def headers(self, grant: Grant) -> Headers:
        """The headers of an answer that does not count (a listing, management): where the
        key stands, with nothing taken."""
        now = self._clock()
        owner_use = self._use(USER + str(grant.owner), now) if grant.owner_limits else None
        return self._headers_of(grant, self._use(grant.key_id, now), owner_use, now)

    def running(self, key_id: str) -> int:
        use = self._keys.get(key_id)
        return use.running if use is not None else 0

    # ---- the counts ----

    def _use(self, key_id: str | None, now: float) -> KeyUse:
        key = key_id or ""
        use = self._keys.get(key)
        if use is None:
            use = self._keys[key] = KeyUse()
        day = int(now // DAY_S)
        if day != use.day:  # a new UTC day (or the key's first request): roll the budgets
            self._roll(key, use, day, now)
        return use

    def _roll(self, key: str, use: KeyUse, day: int, now: float) -> None:
        when = datetime.fromtimestamp(now, timezone.utc)
        month = (when.year, when.month)
        first_sight = use.day == -1
        use.day = day
        use.day_tokens = self._seeded_daily.get(key, 0) \
            if first_sight and day == self._seed_day else 0
        if month != use.month:
            use.month = month
            use.month_tokens = self._seeded_monthly.get(key, 0) \
                if first_sight and month == self._seed_month else 0
            use.month_ends = _next_month(when).timestamp()

    @staticmethod
    def _refusal(limits: dict[str, int], use: KeyUse, now: float,
                 whose: str) -> tuple[str, str, float] | None:
        """(message, code, seconds to wait) of the first limit the request is past."""
        monthly = limits.get(MONTHLY)
        if monthly is not None and use.month_tokens >= monthly:
            return (f"{whose} monthly budget of {monthly} tokens is spent "
                    f"({use.month_tokens} used this month, UTC); it renews on the 1st at "
                    "00:00 UTC", "insufficient_quota", use.month_ends - now)
        daily = limits.get(DAILY)
        if daily is not None and use.day_tokens >= daily:
            return (f"{whose} daily budget of {daily} tokens is spent ({use.day_tokens} "
                    "used today, UTC); it renews at 00:00 UTC", "insufficient_quota",
                    (use.day + 1) * DAY_S - now)
        tpm = limits.get(TPM)
        if tpm is not None and use.tokens.sum(now) >= tpm:
            return (f"{whose} limit of {tpm} tokens per minute is reached "
                    f"({use.tokens.total} used in the last minute)", "rate_limit_exceeded",
                    use.tokens.seconds_until_below(tpm, now))
        rpm = limits.get(RPM)
        if rpm is not None and use.requests.sum(now) >= rpm:
            return (f"{whose} limit of {rpm} requests per minute is reached",
                    "rate_limit_exceeded", use.requests.seconds_until_below(rpm, now))
        concurrent = limits.get(CONCURRENT)
        if concurrent is not None and use.running >= concurrent:
            return (f"{whose} limit of {concurrent} concurrent requests is reached "
                    "(other requests are still being answered)", "rate_limit_exceeded", 1.0)
        return None

    def _headers_of(self, grant: Grant, use: KeyUse, owner_use: KeyUse | None,
                    now: float) -> Headers:
        """The key's headers; for a per-minute limit the key has not, its owner's."""
        headers = self._headers(grant.limits or {}, use, now)
        if owner_use is not None:
            given = {name for name, _ in headers}
            headers += [header for header in self._headers(grant.owner_limits or {}, owner_use,
                                                           now) if header[0] not in given]
        return headers

    def _headers(self, limits: dict[str, int], use: KeyUse, now: float) -> Headers:
        headers: Headers = []
        for name, window, unit in ((RPM, use.requests, b"requests"), (TPM, use.tokens, b"tokens")):
            limit = limits.get(name)
            if limit is None:
                continue
            remaining = max(0, limit - window.sum(now))
            headers += [(b"x-ratelimit-limit-" + unit, str(limit).encode()),
                        (b"x-ratelimit-remaining-" + unit, str(remaining).encode()),
                        (b"x-ratelimit-reset-" + unit,
                         duration(window.seconds_until_empty(now)).encode())]
        return headers


def _refused(message: str, code: str, retry_after: float, headers: Headers) -> Refused:
    error_type = "insufficient_quota" if code == "insufficient_quota" else "rate_limit_error"
    wait = max(1, math.ceil(retry_after))
    body = orjson.dumps(error_body(f"{message}; retry in {wait} s", error_type, code))
    return Refused(429, [(b"content-type", b"application/json"),
                         (b"content-length", str(len(body)).encode()),
                         (b"retry-after", str(wait).encode()), *headers], body)


def _seeded(seed: UsageSeed | None, seed_users: UsageSeed | None,
            since: datetime) -> dict[str, int]:
    """The tokens used since `since`, by key id and by USER + user name."""
    seeded = dict(seed(since)) if seed is not None else {}
    if seed_users is not None:
        seeded.update({USER + name: tokens for name, tokens in seed_users(since).items()})
    return seeded
