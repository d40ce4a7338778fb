"""Collections gain owners: the groups whose curators manage them.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa

from appliance.migrations.ops import add_columns, drop_columns

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

ADDS = {"collections": ("owners",)}


def upgrade() -> None:
    add_columns("collections", sa.Column("owners", sa.JSON, nullable=True))


def downgrade() -> None:
    drop_columns("collections", *ADDS["collections"])
