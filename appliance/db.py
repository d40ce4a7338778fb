"""Metadata database: the ingestion ledger, identity, keys, jobs, conversations (SQLite by default,
PostgreSQL by URL).

Qdrant is not the source of truth; this ledger is. The schema is Alembic's (appliance/migrations/):
a change to a table here needs a new revision there, and a test compares the two.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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
    make_url,
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
    # The BM25 side's weight in fusion for this collection (`appliance eval --tune --apply`);
    # null: the appliance-wide retrieval.bm25_weight.
    Column("bm25_weight", Float, nullable=True),
)


def now() -> datetime:
    return datetime.now(UTC)


def make_engine(
    url_or_path: str | Path, *, pool_size: int = 5, max_overflow: int = 10, migrate: bool = True
) -> Engine:
    """An engine on the metadata DB, its schema upgraded to the newest migration.

    ``url_or_path``: a SQLAlchemy URL (``postgresql://`` means psycopg 3, the driver shipped) or the
    path of a SQLite file, created private to its owner. ``pool_size``/``max_overflow`` bound the
    connections one process opens to a server. ``migrate=False`` leaves the schema alone (the
    migration tests drive Alembic themselves)."""
    url = make_url(database_url(url_or_path))
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:" and not url.query.get("uri"):
            _create_private(Path(url.database))
        engine = create_engine(url)
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        # pre_ping: a server restart or failover leaves dead connections in the pool.
        engine = create_engine(url, pool_size=pool_size, max_overflow=max_overflow, pool_pre_ping=True)
    if migrate:
        from appliance.migrations import upgrade

        upgrade(engine)
    return engine


def database_url(url_or_path: str | Path) -> str:
    """A SQLAlchemy URL for a URL or a SQLite path; plain ``postgresql://`` gets psycopg 3 (psycopg2,
    SQLAlchemy's default driver for that scheme, is not installed)."""
    url = str(url_or_path)
    if "://" not in url:
        return f"sqlite:///{url}"
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            return "postgresql+psycopg://" + url[len(plain) :]
    return url


def _create_private(path: Path) -> None:
    # Key and password hashes live here: 0600 from the start (SQLite gives its -wal and -shm files
    # the database file's mode).
    path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


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
    # Who registered it: a sync runs with that user's reach, re-checked at sync time. Null: an
    # admin's (the CLI's local administrator, or registered before this was recorded).
    Column("created_by", String(64), nullable=True),
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
    # Scale mode: what a worker rebuilds the job from (passwords in it sealed), kept while the job
    # is active so a job whose queue message Redis lost is sent again (``JobManager.requeue_lost``).
    Column("payload", JSON, nullable=True),
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
