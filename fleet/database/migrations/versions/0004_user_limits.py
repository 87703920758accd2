"""Limits per user: what the sum of a user's keys may use (PUT /v1/users/{name}/limits).

Revision ID: 0004_user_limits
Revises: 0003_usage
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004_user_limits"
down_revision: str | None = "0003_usage"
branch_labels: str | None = None
depends_on: str | None = None

_LIMITS = (("requests_per_minute", sa.Integer()), ("tokens_per_minute", sa.BigInteger()),
           ("max_concurrent_requests", sa.Integer()), ("daily_tokens", sa.BigInteger()),
           ("monthly_tokens", sa.BigInteger()))


def upgrade() -> None:
    # batch: SQLite alters a table by copying it, which Alembic does in batch mode.
    with op.batch_alter_table("users") as users:
        for name, kind in _LIMITS:
            users.add_column(sa.Column(name, kind, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users") as users:
        for name, _ in reversed(_LIMITS):
            users.drop_column(name)
