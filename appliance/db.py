"""Metadata database: the ingestion ledger and API keys (SQLite by default).

Qdrant is not the source of truth; this ledger is. Tables are created on start; schema
migrations will move to Alembic when the schema first changes after release.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Engine,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    inspect,
)

metadata = MetaData()

documents = Table(
    "documents",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("collection", String(64), nullable=False, index=True),
    Column("source", Text, nullable=False, index=True),
    Column("uri", Text, nullable=False),
    Column("title", Text, nullable=False, default=""),
    Column("version", Text, nullable=False, default=""),
    Column("content_hash", String(64), nullable=False, default="", index=True),
    Column("acl", JSON, nullable=False, default=list),
    Column("chunk_ids", JSON, nullable=False, default=list),
    # Ids being written by a run that has not committed yet: after a crash they are cleaned up.
    Column("pending_chunk_ids", JSON, nullable=True),
    Column("status", String(16), nullable=False),  # indexed | failed
    Column("error", Text, nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("prefix", String(16), nullable=False, index=True),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("user", String(128), nullable=False),
    Column("role", String(16), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    # Scopes (None: unrestricted) and expiry; see appliance/security/auth.py.
    Column("collections", JSON, nullable=True),
    Column("routes", JSON, nullable=True),
    Column("expires_at", DateTime(timezone=True), nullable=True),
)

# Conversations belong to one user; every answer (in a conversation or not) is kept so feedback can
# point at it and a conversation can be resumed.
conversations = Table(
    "conversations",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("user", String(128), nullable=False, index=True),
    Column("title", Text, nullable=False, default=""),
    Column("collection", String(64), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, index=True),
)

answers = Table(
    "answers",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("conversation_id", String(32), nullable=True, index=True),
    Column("user", String(128), nullable=False, index=True),
    Column("collection", String(64), nullable=True),
    Column("question", Text, nullable=False),
    Column("query", Text, nullable=False),  # what was searched (the condensed question)
    Column("answer", Text, nullable=False),
    Column("citations", JSON, nullable=False, default=list),
    Column("support", Float, nullable=True),
    Column("mode", String(16), nullable=False),
    Column("fallback", Boolean, nullable=False, default=False),
    Column("model", String(128), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, index=True),
)

feedback = Table(
    "feedback",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("answer_id", String(32), nullable=False, index=True),
    Column("user", String(128), nullable=False),
    Column("rating", String(8), nullable=False),  # up | down
    Column("comment", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# A collection's default readers, used for documents ingested without --allow, and its owners:
# the groups whose curators manage it (None or empty: admins only). Owners are kept apart from
# the readers on purpose: who may read a knowledge base and who may change it differ.
collections = Table(
    "collections",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("default_acl", JSON, nullable=False, default=list),
    Column("description", Text, nullable=False, default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("owners", JSON, nullable=True),
)


def now() -> datetime:
    return datetime.now(UTC)


def make_engine(url_or_path: str | Path) -> Engine:
    url = str(url_or_path)
    if "://" not in url:
        url = f"sqlite:///{url}"
    engine = create_engine(url, future=True)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA busy_timeout=10000")
            cur.close()

    metadata.create_all(engine)
    add_missing_columns(engine, collections)
    return engine


def add_missing_columns(engine: Engine, table: Table) -> None:
    """``create_all`` never alters an existing table: add the nullable columns that data dirs made
    by an older version lack, until migrations move to Alembic."""
    have = {c["name"] for c in inspect(engine).get_columns(table.name)}
    missing = [c for c in table.columns if c.name not in have]
    if not missing:
        return
    with engine.begin() as conn:
        for column in missing:
            if not column.nullable:
                raise RuntimeError(f"cannot add NOT NULL column {table.name}.{column.name} in place")
            kind = column.type.compile(dialect=engine.dialect)
            conn.exec_driver_sql(f"ALTER TABLE {table.name} ADD COLUMN {column.name} {kind}")


# Sources an admin registered (synced on request or on a schedule inside `serve`).
sources = Table(
    "sources",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("spec", Text, nullable=True),  # a SOURCE argument as the CLI takes it, or None
    Column("options", JSON, nullable=False, default=dict),
    Column("collection", String(64), nullable=False),
    Column("acl", JSON, nullable=False, default=list),
    Column("interval_s", Integer, nullable=False, default=0),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("last_sync_at", DateTime(timezone=True), nullable=True),
    Column("last_job_id", String(32), nullable=True),
)

# Ingestion jobs: live progress is in memory; this keeps their outcome across restarts.
jobs = Table(
    "jobs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("status", String(16), nullable=False, index=True),
    Column("actor", String(128), nullable=False),
    Column("collection", String(64), nullable=False),
    Column("source_id", String(32), nullable=True, index=True),
    Column("detail", JSON, nullable=False, default=dict),  # what it ingests
    Column("progress", JSON, nullable=False, default=dict),
    Column("result", JSON, nullable=True),
    Column("error", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=True),
    Column("finished_at", DateTime(timezone=True), nullable=True),
)

# -- identity, metering (issue #7) ---------------------------------------------------------------

users = Table(
    "users",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("role", String(16), nullable=False),
    Column("password_hash", Text, nullable=True),
    Column("disabled", Boolean, nullable=False, default=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

groups = Table(
    "groups",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# Membership edges: a member is a user or a group (departments nest), so resolving a user's groups
# walks this table transitively.
group_members = Table(
    "group_members",
    metadata,
    Column("group", String(128), primary_key=True),
    Column("member_kind", String(8), primary_key=True),  # user | group
    Column("member", String(128), primary_key=True, index=True),
)

# One row per (day, subject) where subject is user:NAME, group:NAME or key:ID; counters only grow.
usage = Table(
    "usage",
    metadata,
    Column("day", String(10), primary_key=True),
    Column("subject", String(160), primary_key=True),
    Column("requests", Integer, nullable=False, default=0),
    Column("prompt_tokens", Integer, nullable=False, default=0),
    Column("completion_tokens", Integer, nullable=False, default=0),
)

quotas = Table(
    "quotas",
    metadata,
    Column("subject", String(160), primary_key=True),  # user:NAME | group:NAME
    Column("tokens_per_day", Integer, nullable=True),
    Column("requests_per_minute", Integer, nullable=True),
)
