"""API keys gain scopes (collections, route prefixes) and an expiry.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa

from appliance.migrations.ops import add_columns, drop_columns

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

# What this revision adds, by table: how a database from before migrations is placed (see
# appliance/migrations/__init__.py).
ADDS = {"api_keys": ("collections", "routes", "expires_at")}


def upgrade() -> None:
    add_columns(
        "api_keys",
        sa.Column("collections", sa.JSON, nullable=True),
        sa.Column("routes", sa.JSON, nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    drop_columns("api_keys", *ADDS["api_keys"])
