"""The tables of the cluster's state, as this Fleet's newest migration leaves them
(fleet/database/migrations/versions). A change here is a new migration, never an edit of an
old one: a database written by a release must upgrade.

What a user hands Fleet is kept as the JSON it was: a registration is the family as the
catalogue saved it, a launched model its launch request (options, replica count, keep_alive,
autoscaling bounds) as the restore reads it back. Malformed ones are kept unchanged too, so that
an operator can repair them (fleet.cluster.supervisor.restore)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any

from sqlalchemy import JSON, BigInteger, DateTime, Float, ForeignKey, Index, Integer, MetaData, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Constraint names spelt out, the same on SQLite and PostgreSQL, so that a later migration can
# name the one it changes (SQLite's batch mode rebuilds a table by them).
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


# When a row was made, and last changed: filled in by SQLAlchemy, in UTC.
Created = Annotated[datetime, mapped_column(DateTime(timezone=True), default=utc_now)]
Updated = Annotated[datetime, mapped_column(DateTime(timezone=True), default=utc_now,
                                            onupdate=utc_now)]


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Registration(Base):
    """A custom model family (`fleet register`, POST /v1/model_registrations/{type})."""

    __tablename__ = "registrations"

    model_type: Mapped[str] = mapped_column(Text, primary_key=True)  # LLM, embedding, ...
    model_name: Mapped[str] = mapped_column(Text, primary_key=True)
    family: Mapped[Any] = mapped_column(JSON, nullable=False)
    created_at: Mapped[Created]
    updated_at: Mapped[Updated]


class LaunchedModel(Base):
    """A model to bring back at the next start: its uid and the launch request it runs with."""

    __tablename__ = "launched_models"

    uid: Mapped[str] = mapped_column(Text, primary_key=True)
    request: Mapped[Any] = mapped_column(JSON, nullable=True)
    created_at: Mapped[Created]
    updated_at: Mapped[Updated]


class User(Base):
    """Who holds keys (a key's owner): a name, made when a key first names it, and the limits
    that the sum of its keys' requests is held to (PUT /v1/users/{name}/limits)."""

    __tablename__ = "users"

    name: Mapped[str] = mapped_column(Text, primary_key=True)
    created_at: Mapped[Created]
    requests_per_minute: Mapped[int | None] = mapped_column(Integer, nullable=True)
    tokens_per_minute: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    max_concurrent_requests: Mapped[int | None] = mapped_column(Integer, nullable=True)
    daily_tokens: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    monthly_tokens: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class ApiKey(Base):
    """A key made through the API (fleet.database.api_keys): its SHA-256 only, never the key,
    and a short prefix of it, so that a listing tells keys apart. The limits are kept and
    shown; what enforces them reads them from here."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    name: Mapped[str] = mapped_column(Text, nullable=False)
    owner: Mapped[str | None] = mapped_column(ForeignKey("users.name"), nullable=True)
    sha256: Mapped[str] = mapped_column(Text, nullable=False, unique=True)
    prefix: Mapped[str] = mapped_column(Text, nullable=False)
    permissions: Mapped[Any] = mapped_column(JSON, nullable=False)
    models: Mapped[Any] = mapped_column(JSON, nullable=True)  # None: every model
    requests_per_minute: Mapped[int | None] = mapped_column(Integer, nullable=True)
    tokens_per_minute: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    max_concurrent_requests: Mapped[int | None] = mapped_column(Integer, nullable=True)
    daily_tokens: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    monthly_tokens: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[Created]
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class AuditEntry(Base):
    """One management action (fleet.database.audit): who, when, from where, on what."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    time: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now,
                                           index=True)
    actor: Mapped[str] = mapped_column(Text, nullable=False)
    actor_key_id: Mapped[str | None] = mapped_column(Text, nullable=True)
    action: Mapped[str] = mapped_column(Text, nullable=False, index=True)
    target: Mapped[str | None] = mapped_column(Text, nullable=True)
    details: Mapped[Any] = mapped_column(JSON, nullable=True)
    client_address: Mapped[str | None] = mapped_column(Text, nullable=True)


class UsageRecord(Base):
    """One answered request that reached a model (fleet.database.usage): who made it (its key
    and the key's user; None without keys), which model (its uid and catalogue family), what
    kind of request, what it used, and how it ended. Written in batches by the API's recorder
    (fleet.api.usage_recorder), never on a request's path."""

    __tablename__ = "usage_records"
    # By time (the buckets, the retention) and by key then time (one key's usage, budgets).
    __table_args__ = (Index("ix_usage_records_key_id_time", "key_id", "time"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"),
                                    primary_key=True, autoincrement=True)
    time: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, index=True)
    key_id: Mapped[str | None] = mapped_column(Text, nullable=True)
    user_name: Mapped[str | None] = mapped_column(Text, nullable=True)
    model: Mapped[str] = mapped_column(Text, nullable=False)
    family: Mapped[str | None] = mapped_column(Text, nullable=True)
    kind: Mapped[str] = mapped_column(Text, nullable=False)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    completion_tokens: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    images: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    audio_seconds: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    status: Mapped[int] = mapped_column(Integer, nullable=False)
    latency_ms: Mapped[float] = mapped_column(Float, nullable=False)


class StoredResponse(Base):
    """A response of OpenAI's Responses API kept for `previous_response_id` and retrieval
    (fleet.database.responses): the Response as it was answered, the input items of its
    request, and its whole conversation as input items (the earlier turns, its input, its
    output), so that the next turn reads one row."""

    __tablename__ = "responses"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now,
                                                 index=True)
    model: Mapped[str] = mapped_column(Text, nullable=False)
    response: Mapped[Any] = mapped_column(JSON, nullable=False)
    input_items: Mapped[Any] = mapped_column(JSON, nullable=False)
    conversation: Mapped[Any] = mapped_column(JSON, nullable=False)


class Meta(Base):
    """Facts about the database itself (fleet.database.meta): which Fleet upgraded it last,
    whether the models of the last run are known, what was imported from FLEET_HOME."""

    __tablename__ = "fleet_meta"

    key: Mapped[str] = mapped_column(Text, primary_key=True)
    value: Mapped[Any] = mapped_column(JSON, nullable=True)
    updated_at: Mapped[Updated]
