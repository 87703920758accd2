"""The state that Fleet 0.1 kept in FLEET_HOME's files: custom registrations, launched models,
and the database's own facts.

Revision ID: 0001_state
Revises:
Create Date: 2025-06-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001_state"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def _timestamps(*names: str) -> list[sa.Column]:
    return [sa.Column(name, sa.DateTime(timezone=True), nullable=False) for name in names]


def upgrade() -> None:
    op.create_table(
        "registrations",
        sa.Column("model_type", sa.Text(), nullable=False),
        sa.Column("model_name", sa.Text(), nullable=False),
        sa.Column("family", sa.JSON(), nullable=False),
        *_timestamps("created_at", "updated_at"),
        sa.PrimaryKeyConstraint("model_type", "model_name", name=op.f("pk_registrations")),
    )
    op.create_table(
        "launched_models",
        sa.Column("uid", sa.Text(), nullable=False),
        sa.Column("request", sa.JSON(), nullable=True),
        *_timestamps("created_at", "updated_at"),
        sa.PrimaryKeyConstraint("uid", name=op.f("pk_launched_models")),
    )
    op.create_table(
        "fleet_meta",
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("value", sa.JSON(), nullable=True),
        *_timestamps("updated_at"),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_fleet_meta")),
    )


def downgrade() -> None:
    op.drop_table("fleet_meta")
    op.drop_table("launched_models")
    op.drop_table("registrations")
