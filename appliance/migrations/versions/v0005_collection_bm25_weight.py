"""Collections keep a fusion weight of their own: the BM25 side's, learned from a golden set.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa

from appliance.migrations.ops import add_columns, drop_columns

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None

ADDS = {"collections": ("bm25_weight",)}


def upgrade() -> None:
    # Null for every existing collection: it keeps the appliance-wide retrieval.bm25_weight.
    add_columns("collections", sa.Column("bm25_weight", sa.Float(), nullable=True))


def downgrade() -> None:
    drop_columns("collections", *ADDS["collections"])
