"""Usage records (the `usage_records` table): written in batches by the API's recorder
(fleet.api.usage_recorder), read grouped by key, user, model or family over buckets of time
(GET /v1/usage, `fleet usage`), summed per key or user since a time (the per-key budgets read
them at start), and pruned past the retention.

Buckets are cut by the database itself, in UTC, so a query of months of records returns its
few rows rather than every record: SQLite's strftime, PostgreSQL's date_trunc. Both give the
bucket's start as the same ISO text."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, case, delete, func, insert, select

from fleet.database.engine import Database
from fleet.database.schema import LaunchedModel, UsageRecord

# What GET /v1/usage groups by, and the column each names.
GROUPS: dict[str, Any] = {"key": UsageRecord.key_id, "user": UsageRecord.user_name,
                          "model": UsageRecord.model, "family": UsageRecord.family}
# The field each group takes in the answer.
GROUP_FIELDS = {"key": "key_id", "user": "user", "model": "model", "family": "family"}
BUCKETS = ("hour", "day", "month")
_SQLITE_BUCKETS = {"hour": "%Y-%m-%dT%H:00:00", "day": "%Y-%m-%dT00:00:00",
                   "month": "%Y-%m-01T00:00:00"}


@dataclass(frozen=True, slots=True)
class UsageRow:
    """One request's record, as the recorder hands it over: `time` in UTC."""

    time: datetime
    key_id: str | None
    user_name: str | None
    model: str
    family: str | None
    kind: str
    prompt_tokens: int
    completion_tokens: int
    images: int
    audio_seconds: float
    status: int
    latency_ms: float


@dataclass(frozen=True, slots=True)
class UsageQuery:
    """What to sum: records with start <= time < end (UTC), of one key, user or model if
    given, grouped by `group_by` (names of GROUPS) and cut into `bucket`s (None: totals)."""

    start: datetime
    end: datetime
    group_by: tuple[str, ...] = ()
    bucket: str | None = None
    key_id: str | None = None
    user: str | None = None
    model: str | None = None


class UsageStore:
    def __init__(self, db: Database):
        self.db = db

    def insert(self, rows: Sequence[UsageRow]) -> None:
        """All of `rows` in one transaction (one executemany), or none of them."""
        if not rows:
            return
        with self.db.writing() as session:
            session.execute(insert(UsageRecord), [asdict(row) for row in rows])

    def delete_before(self, when: datetime) -> int:
        """Removes the records older than `when`; how many."""
        with self.db.writing() as session:
            # A DELETE's result is a cursor's, which counts the rows (the annotation says less).
            result = cast(CursorResult[Any], session.execute(
                delete(UsageRecord).where(UsageRecord.time < _utc(when))))
            return int(result.rowcount or 0)

    def query(self, query: UsageQuery) -> list[dict[str, Any]]:
        """One row per bucket and group, ordered by bucket then group: requests, errors
        (HTTP status >= 400), tokens, images, audio seconds and mean latency."""
        groups = [(GROUP_FIELDS[name], GROUPS[name]) for name in query.group_by]
        keys: list[Any] = [column for _, column in groups]
        if query.bucket is not None:
            keys.insert(0, self._bucket(query.bucket))
        prompt = func.coalesce(func.sum(UsageRecord.prompt_tokens), 0)
        completion = func.coalesce(func.sum(UsageRecord.completion_tokens), 0)
        statement = select(
            *keys, func.count(), func.sum(case((UsageRecord.status >= 400, 1), else_=0)),
            prompt, completion, func.coalesce(func.sum(UsageRecord.images), 0),
            func.coalesce(func.sum(UsageRecord.audio_seconds), 0.0),
            func.avg(UsageRecord.latency_ms),
        ).where(*_filters(query))
        if keys:
            # NULLs (requests without a key) first on both databases, which differ by default.
            statement = statement.group_by(*keys).order_by(*(k.nulls_first() for k in keys))
        with self.db.reading() as session:
            rows = session.execute(statement).all()
        return [self._row(row, query.bucket is not None, [f for f, _ in groups])
                for row in rows if row[len(keys)]]  # totals of no record: no row

    def families_of(self, models: Iterable[str]) -> dict[str, str | None]:
        """The catalogue name each model uid was launched with, as the supervisor saved its
        launch (launched_models); None for a uid it no longer keeps."""
        uids = list(models)
        statement = select(LaunchedModel.uid, LaunchedModel.request).where(
            LaunchedModel.uid.in_(uids))
        with self.db.reading() as session:
            found = {uid: request.get("model_name") if isinstance(request, dict) else None
                     for uid, request in session.execute(statement)}
        return {uid: found.get(uid) for uid in uids}

    def tokens_by_key_since(self, since: datetime) -> dict[str, int]:
        """Tokens (prompt + completion) each key used since `since`; keys without any absent."""
        return self._tokens_by(UsageRecord.key_id, since)

    def tokens_by_user_since(self, since: datetime) -> dict[str, int]:
        """The same, by the keys' user."""
        return self._tokens_by(UsageRecord.user_name, since)

    def _tokens_by(self, column: Any, since: datetime) -> dict[str, int]:
        total = func.sum(UsageRecord.prompt_tokens + UsageRecord.completion_tokens)
        statement = (select(column, total).where(UsageRecord.time >= _utc(since),
                                                 column.is_not(None)).group_by(column))
        with self.db.reading() as session:
            return {name: int(tokens or 0) for name, tokens in session.execute(statement)}

    def _bucket(self, bucket: str) -> ColumnElement[str]:
        """The start of each record's bucket, as ISO text without a zone (UTC)."""
        if self.db.url.get_backend_name() == "sqlite":
            return func.strftime(_SQLITE_BUCKETS[bucket], UsageRecord.time)
        return func.to_char(func.date_trunc(bucket, func.timezone("UTC", UsageRecord.time)),
                            'YYYY-MM-DD"T"HH24:MI:SS')

    @staticmethod
    def _row(row: Any, bucketed: bool, fields: list[str]) -> dict[str, Any]:
        values = list(row)
        out: dict[str, Any] = {}
        if bucketed:
            out["bucket"] = f"{values.pop(0)}Z"
        for field in fields:
            out[field] = values.pop(0)
        requests, errors, prompt, completion, images, seconds, latency = values
        out.update(requests=int(requests), errors=int(errors or 0), prompt_tokens=int(prompt),
                   completion_tokens=int(completion), total_tokens=int(prompt) + int(completion),
                   images=int(images), audio_seconds=round(float(seconds), 3),
                   mean_latency_ms=round(float(latency or 0.0), 3))
        return out


def _filters(query: UsageQuery) -> Iterable[ColumnElement[bool]]:
    yield UsageRecord.time >= _utc(query.start)
    yield UsageRecord.time < _utc(query.end)
    if query.key_id is not None:
        yield UsageRecord.key_id == query.key_id
    if query.user is not None:
        yield UsageRecord.user_name == query.user
    if query.model is not None:
        yield UsageRecord.model == query.model


def _utc(when: datetime) -> datetime:
    """In UTC, as the records are written (SQLite keeps no zone: its text compares as is)."""
    if when.tzinfo is None:
        return when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc)
