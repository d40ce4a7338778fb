"""Alembic environment. The appliance runs migrations on a connection it hands over
(``appliance.migrations.upgrade``); the ``alembic`` command line, for writing new revisions, names a
database with ``-x url=...`` (see docs/scaling.md)."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from appliance.db import database_url, make_engine, metadata

config = context.config


def run(connection: Connection) -> None:
    # Batch mode: SQLite alters most things only by copying the table; on PostgreSQL the same
    # operations run as plain ALTERs, so one revision serves both.
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def command_line_url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("name the database: alembic -x url=sqlite:///dev.db <command>")
    return url


if context.is_offline_mode():
    # `alembic -x url=postgresql://... upgrade head --sql`: the DDL as a script, for a DBA to review.
    context.configure(
        url=database_url(command_line_url()),
        target_metadata=metadata,
        render_as_batch=True,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()
elif (given := config.attributes.get("connection")) is not None:
    run(given)
else:
    with make_engine(command_line_url(), migrate=False).begin() as connection:
        run(connection)
