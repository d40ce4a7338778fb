"""Sources remember who registered them: a sync runs with that user's reach, checked again then.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa

from appliance.migrations.ops import add_columns, drop_columns

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None

ADDS = {"sources": ("created_by",)}


def upgrade() -> None:
    # Null for sources registered before: they keep syncing as an admin's, as they did.
    add_columns("sources", sa.Column("created_by", sa.String(64), nullable=True))


def downgrade() -> None:
    drop_columns("sources", *ADDS["sources"])
