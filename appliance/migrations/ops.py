"""Operations the revisions share."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op


def add_columns(table: str, *columns: sa.Column) -> None:  # type: ignore[type-arg]
    """Add the columns the table lacks. Before migrations, ``add_missing_columns`` added new columns
    table by table as each was first opened, so a database from then may hold some already."""
    if context.is_offline_mode():
        have: set[str] = set()
    else:
        have = {c["name"] for c in sa.inspect(op.get_bind()).get_columns(table)}
    with op.batch_alter_table(table) as batch:
        for column in columns:
            if column.name not in have:
                batch.add_column(column)


def drop_columns(table: str, *names: str) -> None:
    with op.batch_alter_table(table) as batch:
        for name in names:
            batch.drop_column(name)
