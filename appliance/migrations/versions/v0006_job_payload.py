"""Jobs sent to workers keep their payload, so one whose queue message Redis lost is sent again.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa

from appliance.migrations.ops import add_columns, drop_columns

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None

ADDS = {"jobs": ("payload",)}


def upgrade() -> None:
    # Null for every existing job: jobs queued before this keep relying on their message alone.
    add_columns("jobs", sa.Column("payload", sa.JSON(), nullable=True))


def downgrade() -> None:
    drop_columns("jobs", *ADDS["jobs"])
