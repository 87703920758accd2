"""API keys made while the cluster runs (POST /v1/keys, `fleet keys`): one row per key, holding
its SHA-256 and a short prefix of it, never the key itself.

Each change writes a new random token under `keys_changed` in fleet_meta, in the change's own
transaction: every API process polls that one row (fleet.api.auth.live_keys) and reads the keys
again when it differs. A token, not a counter: two processes that bumped a counter at once could
both write n+1, and a poller that read the first would miss the second.

Revoking keeps the row (revoked_at), so that the audit log and usage keep naming the key, and
so that a cluster whose keys were all revoked stays closed: the API requires a key as soon as
this table holds any row (docs/security.md)."""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, TypeVar

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

import fleet.database.meta as meta
from fleet.database.engine import Database
from fleet.database.schema import ApiKey, User, utc_now

LIMIT_FIELDS = ("requests_per_minute", "tokens_per_minute", "max_concurrent_requests",
                "daily_tokens", "monthly_tokens")
# What PATCH may change (the limits are LIMIT_FIELDS, given one by one).
CHANGEABLE = ("name", "owner", "permissions", "models", "expires_at", *LIMIT_FIELDS)
_T = TypeVar("_T")


def as_utc(when: datetime | None) -> datetime | None:
    """SQLite gives times back without their zone; they were written in UTC."""
    if when is None or when.tzinfo is not None:
        return when
    return when.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class StoredKey:
    id: str
    name: str
    owner: str | None
    sha256: str
    prefix: str
    permissions: list[str]
    models: list[str] | None
    limits: dict[str, int | None]
    expires_at: datetime | None
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None

    @classmethod
    def of(cls, row: ApiKey) -> StoredKey:
        return cls(id=row.id, name=row.name, owner=row.owner, sha256=row.sha256,
                   prefix=row.prefix, permissions=list(row.permissions),
                   models=list(row.models) if row.models is not None else None,
                   limits={field: getattr(row, field) for field in LIMIT_FIELDS},
                   expires_at=as_utc(row.expires_at), created_at=as_utc(row.created_at) or row.created_at,
                   revoked_at=as_utc(row.revoked_at), last_used_at=as_utc(row.last_used_at))


@dataclass(frozen=True)
class KeySnapshot:
    """What an API process needs to check keys: the change token it was read at, whether any
    key was ever made (auth on), and the keys not revoked."""

    token: str | None
    any_key: bool
    active: list[StoredKey]
    # The limits of the users that have any: user name -> {limit: value} (only those set).
    user_limits: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class StoredUser:
    name: str
    limits: dict[str, int | None]
    created_at: datetime

    @classmethod
    def of(cls, row: User) -> StoredUser:
        return cls(name=row.name, limits={field: getattr(row, field) for field in LIMIT_FIELDS},
                   created_at=as_utc(row.created_at) or row.created_at)


def new_key_id() -> str:
    return f"key-{secrets.token_hex(6)}"


class DatabaseKeys:
    def __init__(self, db: Database):
        self.db = db

    # ---- reads ----

    def token(self) -> str | None:
        with self.db.reading() as session:
            return meta.get(session, meta.KEYS_CHANGED)

    def snapshot(self) -> KeySnapshot:
        with self.db.reading() as session:
            token = meta.get(session, meta.KEYS_CHANGED)  # first: the rows are at least as new
            any_key = bool(session.scalar(select(exists().where(ApiKey.id.is_not(None)))))
            rows = session.scalars(select(ApiKey).where(ApiKey.revoked_at.is_(None))).all()
            users = [StoredUser.of(user) for user in session.scalars(select(User)).all()]
            user_limits = {user.name: set_limits for user in users
                           if (set_limits := _set(user.limits))}
            return KeySnapshot(token, any_key, [StoredKey.of(row) for row in rows], user_limits)

    def users(self) -> list[StoredUser]:
        with self.db.reading() as session:
            return [StoredUser.of(row)
                    for row in session.scalars(select(User).order_by(User.name)).all()]

    def all(self) -> list[StoredKey]:
        with self.db.reading() as session:
            rows = session.scalars(select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)).all()
            return [StoredKey.of(row) for row in rows]

    def get(self, key_id: str) -> StoredKey | None:
        with self.db.reading() as session:
            row = session.get(ApiKey, key_id)
            return StoredKey.of(row) if row is not None else None

    # ---- writes: each one transaction that also says the keys changed ----

    def create(self, *, sha256: str, prefix: str, name: str, owner: str | None,
               permissions: list[str], models: list[str] | None,
               limits: dict[str, int | None], expires_at: datetime | None) -> StoredKey:
        def change(session: Session) -> StoredKey:
            _ensure_user(session, owner)
            row = ApiKey(id=new_key_id(), name=name, owner=owner, sha256=sha256, prefix=prefix,
                         permissions=permissions, models=models, expires_at=expires_at,
                         created_at=utc_now(), **limits)
            session.add(row)
            session.flush()
            return StoredKey.of(row)

        return self._write(f"create the key {name!r}", change)

    def update(self, key_id: str, changes: dict[str, Any]) -> StoredKey | None:
        unknown = set(changes) - set(CHANGEABLE)
        if unknown:
            raise ValueError(f"not changeable: {sorted(unknown)}")

        def change(session: Session) -> StoredKey | None:
            row = session.get(ApiKey, key_id)
            if row is None:
                return None
            if "owner" in changes:
                _ensure_user(session, changes["owner"])
            for field, value in changes.items():
                setattr(row, field, value)
            session.flush()
            return StoredKey.of(row)

        return self._write(f"update the key {key_id}", change)

    def revoke(self, key_id: str) -> StoredKey | None:
        def change(session: Session) -> StoredKey | None:
            row = session.get(ApiKey, key_id)
            if row is None:
                return None
            if row.revoked_at is None:
                row.revoked_at = utc_now()
                session.flush()
            return StoredKey.of(row)

        return self._write(f"revoke the key {key_id}", change)

    def set_user_limits(self, name: str, limits: dict[str, int | None]) -> StoredUser:
        """The user's limits, all of them (None: none), the user made if new; the keys' change
        token moves with them, so that every API process reads them within a second."""
        def change(session: Session) -> StoredUser:
            row = session.get(User, name)
            if row is None:
                row = User(name=name, created_at=utc_now())
                session.add(row)
            for field in LIMIT_FIELDS:
                setattr(row, field, limits.get(field))
            session.flush()
            return StoredUser.of(row)

        return self._write(f"set the limits of the user {name!r}", change)

    def mark_used(self, used: dict[str, datetime]) -> None:
        """When keys were last used, written in one batch off the request path. Not a key
        change: no new token (the keys' rights are the same)."""
        with self.db.writing() as session:
            for key_id, when in used.items():
                row = session.get(ApiKey, key_id)
                if row is not None:
                    row.last_used_at = when

    def _write(self, what: str, change: Callable[[Session], _T]) -> _T:
        with self.db.saving(f"{what} in {self.db.shown}") as session:
            result = change(session)
            if result is not None:
                meta.put(session, meta.KEYS_CHANGED, secrets.token_hex(8))
            return result


def _set(limits: dict[str, int | None]) -> dict[str, int]:
    return {name: value for name, value in limits.items() if value is not None}


def _ensure_user(session: Session, name: str | None) -> None:
    if name is not None and session.get(User, name) is None:
        session.add(User(name=name, created_at=utc_now()))
        session.flush()
