"""Baseline: the schema of the releases before migrations, without the columns later revisions add.

Revision ID: 0001
Revises:
Create Date: 2026-12-02

Frozen: a change to the schema is a new revision, never an edit here. ``tables()`` is also what
``appliance.migrations`` checks a database from before migrations against.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy import JSON, Boolean, Column, DateTime, Float, Integer, String, Text

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def tables() -> dict[str, list[sa.schema.SchemaItem]]:
    """Each table's columns and constraints, built fresh on every call (a Column joins one table)."""
    ts = DateTime(timezone=True)
    return {
        "documents": [
            Column("id", String(36), primary_key=True),
            Column("collection", String(64), nullable=False, index=True),
            Column("source", Text, nullable=False, index=True),
            Column("uri", Text, nullable=False),
            Column("title", Text, nullable=False),
            Column("version", Text, nullable=False),
            Column("content_hash", String(64), nullable=False, index=True),
            Column("acl", JSON, nullable=False),
            Column("chunk_ids", JSON, nullable=False),
            Column("pending_chunk_ids", JSON, nullable=True),
            Column("status", String(16), nullable=False),
            Column("error", Text, nullable=True),
            Column("updated_at", ts, nullable=False),
        ],
        "api_keys": [
            Column("id", Integer, primary_key=True, autoincrement=True),
            Column("prefix", String(16), nullable=False, index=True),
            Column("key_hash", String(64), nullable=False, unique=True),
            Column("user", String(128), nullable=False),
            Column("role", String(16), nullable=False),
            Column("created_at", ts, nullable=False),
            Column("revoked_at", ts, nullable=True),
        ],
        "conversations": [
            Column("id", String(32), primary_key=True),
            Column("user", String(128), nullable=False, index=True),
            Column("title", Text, nullable=False),
            Column("collection", String(64), nullable=True),
            Column("created_at", ts, nullable=False),
            Column("updated_at", ts, nullable=False, index=True),
        ],
        "answers": [
            Column("id", String(32), primary_key=True),
            Column("conversation_id", String(32), nullable=True, index=True),
            Column("user", String(128), nullable=False, index=True),
            Column("collection", String(64), nullable=True),
            Column("question", Text, nullable=False),
            Column("query", Text, nullable=False),
            Column("answer", Text, nullable=False),
            Column("citations", JSON, nullable=False),
            Column("support", Float, nullable=True),
            Column("mode", String(16), nullable=False),
            Column("fallback", Boolean, nullable=False),
            Column("model", String(128), nullable=False),
            Column("created_at", ts, nullable=False, index=True),
        ],
        "feedback": [
            Column("id", Integer, primary_key=True, autoincrement=True),
            Column("answer_id", String(32), nullable=False, index=True),
            Column("user", String(128), nullable=False),
            Column("rating", String(8), nullable=False),
            Column("comment", Text, nullable=True),
            Column("created_at", ts, nullable=False),
        ],
        "collections": [
            Column("name", String(64), primary_key=True),
            Column("default_acl", JSON, nullable=False),
            Column("description", Text, nullable=False),
            Column("created_at", ts, nullable=False),
        ],
        "sources": [
            Column("id", String(32), primary_key=True),
            Column("kind", String(32), nullable=False),
            Column("spec", Text, nullable=True),
            Column("options", JSON, nullable=False),
            Column("collection", String(64), nullable=False),
            Column("acl", JSON, nullable=False),
            Column("interval_s", Integer, nullable=False),
            Column("created_at", ts, nullable=False),
            Column("last_sync_at", ts, nullable=True),
            Column("last_job_id", String(32), nullable=True),
        ],
        "jobs": [
            Column("id", String(32), primary_key=True),
            Column("kind", String(16), nullable=False),
            Column("status", String(16), nullable=False, index=True),
            Column("actor", String(128), nullable=False),
            Column("collection", String(64), nullable=False),
            Column("source_id", String(32), nullable=True, index=True),
            Column("detail", JSON, nullable=False),
            Column("progress", JSON, nullable=False),
            Column("result", JSON, nullable=True),
            Column("error", Text, nullable=True),
            Column("created_at", ts, nullable=False),
            Column("started_at", ts, nullable=True),
            Column("finished_at", ts, nullable=True),
        ],
        "users": [
            Column("name", String(128), primary_key=True),
            Column("role", String(16), nullable=False),
            Column("password_hash", Text, nullable=True),
            Column("disabled", Boolean, nullable=False),
            Column("created_at", ts, nullable=False),
        ],
        "groups": [
            Column("name", String(128), primary_key=True),
            Column("created_at", ts, nullable=False),
        ],
        "group_members": [
            Column("group", String(128), primary_key=True),
            Column("member_kind", String(8), primary_key=True),
            Column("member", String(128), primary_key=True, index=True),
        ],
        "usage": [
            Column("day", String(10), primary_key=True),
            Column("subject", String(160), primary_key=True),
            Column("requests", Integer, nullable=False),
            Column("prompt_tokens", Integer, nullable=False),
            Column("completion_tokens", Integer, nullable=False),
        ],
        "quotas": [
            Column("subject", String(160), primary_key=True),
            Column("tokens_per_day", Integer, nullable=True),
            Column("requests_per_minute", Integer, nullable=True),
        ],
    }


def upgrade() -> None:
    for name, items in tables().items():
        op.create_table(name, *items)


def downgrade() -> None:
    for name in reversed(tables()):
        op.drop_table(name)
