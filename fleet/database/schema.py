"""The tables of the cluster's state, as this Fleet's newest migration leaves them
(fleet/database/migrations/versions). A change here is a new migration, never an edit of an
old one: a database written by a release must upgrade.

What a user hands Fleet is kept as the JSON it was: a registration is the family as the
catalogue saved it, a launched model its launch request (options, replica count, keep_alive,
autoscaling bounds) as the restore reads it back. Malformed ones are kept unchanged too, so that
an operator can repair them (fleet.cluster.supervisor.restore)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import JSON, DateTime, MetaData, Text
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


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Registration(Base):
    """A custom model family (`fleet register`, POST /v1/model_registrations/{type})."""

    __tablename__ = "registrations"

    model_type: Mapped[str] = mapped_column(Text, primary_key=True)  # LLM, embedding, ...
    model_name: Mapped[str] = mapped_column(Text, primary_key=True)
    family: Mapped[Any] = mapped_column(JSON, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now,
                                                 onupdate=utc_now)


class LaunchedModel(Base):
    """A model to bring back at the next start: its uid and the launch request it runs with."""

    __tablename__ = "launched_models"

    uid: Mapped[str] = mapped_column(Text, primary_key=True)
    request: Mapped[Any] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now,
                                                 onupdate=utc_now)


class Meta(Base):
    """Facts about the database itself (fleet.database.meta): which Fleet upgraded it last,
    whether the models of the last run are known, what was imported from FLEET_HOME."""

    __tablename__ = "fleet_meta"

    key: Mapped[str] = mapped_column(Text, primary_key=True)
    value: Mapped[Any] = mapped_column(JSON, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now,
                                                 onupdate=utc_now)
