"""The bodies of POST and PATCH /v1/keys: a key's name, owner, permissions (Xinference's names,
fleet.api.auth.keys.PERMISSIONS), models, expiry and limits. A body that fails them is a 400
that names the field (fleet.api.errors)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fleet.api.auth.keys import ADMIN, expand_permissions
from fleet.api.protocol.fields import integer

MAX_TOKENS = 10**15  # within a BIGINT, and far beyond any budget
Name = Annotated[str, Field(min_length=1, max_length=200)]
# Whole numbers however JSON spells them (5 or 5.0), as the document's "integer" allows.
Count = integer(ge=1, le=10**9)
Tokens = integer(ge=1, le=MAX_TOKENS)
# What a key may use without naming its permissions: list the models and call them.
DEFAULT_PERMISSIONS = ["models:list", "models:read"]


class KeyLimits(BaseModel):
    """Limits kept with the key (null: none). Enforced by the rate limiter, not here."""

    model_config = ConfigDict(extra="forbid")

    requests_per_minute: Count | None = None
    tokens_per_minute: Tokens | None = None
    max_concurrent_requests: Count | None = None
    daily_tokens: Tokens | None = None
    monthly_tokens: Tokens | None = None


def _known_permissions(value: list[str] | None) -> list[str] | None:
    if value is not None:
        expand_permissions(value)  # ValueError naming the unknown one and the known ones
    return value


def _in_the_future(value: datetime | None) -> datetime | None:
    """In UTC (a time without a zone is read as UTC); refused when already past."""
    if value is None:
        return None
    value = value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value
    try:
        in_utc = value.astimezone(timezone.utc)
    except OverflowError:  # year 1 east of Greenwich, year 9999 west of it
        raise ValueError("expires_at is out of range in UTC") from None
    if in_utc <= datetime.now(timezone.utc):
        raise ValueError("expires_at is in the past: give a time to come")
    return in_utc


class _KeyFields(BaseModel):
    model_config = ConfigDict(extra="forbid")

    owner: Name | None = None
    models: list[Name] | None = Field(default=None, max_length=10_000)
    expires_at: datetime | None = None
    limits: KeyLimits | None = None

    @field_validator("expires_at")
    @classmethod
    def _future(cls, value: datetime | None) -> datetime | None:
        return _in_the_future(value)

    @field_validator("permissions", check_fields=False)
    @classmethod
    def _known(cls, value: list[str] | None) -> list[str] | None:
        return _known_permissions(value)

    def _check_admin_models(self, permissions: list[str] | None) -> None:
        if permissions and ADMIN in permissions and self.models is not None:
            raise ValueError("an admin key cannot be limited to models")


class CreateKeyRequest(_KeyFields):
    name: Name
    permissions: list[str] = Field(default_factory=lambda: list(DEFAULT_PERMISSIONS),
                                   max_length=64)

    @model_validator(mode="after")
    def _consistent(self) -> CreateKeyRequest:
        self._check_admin_models(self.permissions)
        return self


class UpdateKeyRequest(_KeyFields):
    """The fields given change (null clears owner, models, expires_at or one limit); the others
    keep their value."""

    name: Name | None = None
    permissions: list[str] | None = Field(default=None, max_length=64)

    @model_validator(mode="after")
    def _consistent(self) -> UpdateKeyRequest:
        for field in ("name", "permissions"):
            if field in self.model_fields_set and getattr(self, field) is None:
                raise ValueError(f"{field} cannot be null")
        self._check_admin_models(self.permissions)
        return self
