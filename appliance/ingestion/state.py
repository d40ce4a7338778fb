"""The ingestion ledger: source -> document -> version -> content hash -> chunk ids -> status."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy import Engine, String, cast, delete, func, insert, or_, select, update
from sqlalchemy.sql.elements import ColumnElement

from appliance.db import documents, now
from appliance.domain import EVERYONE


@dataclass
class DocumentRecord:
    id: str
    collection: str
    source: str
    uri: str
    title: str
    version: str
    content_hash: str
    acl: list[str]
    chunk_ids: list[str]
    pending_chunk_ids: list[str] | None
    status: str
    error: str | None
    updated_at: Any = None

    @classmethod
    def from_row(cls, row: Any) -> DocumentRecord:
        m = row._mapping
        return cls(
            m["id"],
            m["collection"],
            m["source"],
            m["uri"],
            m["title"],
            m["version"],
            m["content_hash"],
            list(m["acl"] or []),
            list(m["chunk_ids"] or []),
            list(m["pending_chunk_ids"]) if m["pending_chunk_ids"] is not None else None,
            m["status"],
            m["error"],
            m["updated_at"],
        )


class Ledger:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def get(self, doc_id: str) -> DocumentRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(documents).where(documents.c.id == doc_id)).first()
        return DocumentRecord.from_row(row) if row else None

    def for_source(self, collection: str, source: str) -> list[DocumentRecord]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(documents).where(documents.c.collection == collection, documents.c.source == source)
            ).all()
        return [DocumentRecord.from_row(r) for r in rows]

    def upload_uris(self) -> set[str]:
        """The URIs of every uploaded document, in any collection."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(documents.c.uri).where(documents.c.uri.startswith("upload://")))
            return {r.uri for r in rows}

    def with_uri(self, uri: str) -> builtins.list[DocumentRecord]:
        """Every collection's record of ``uri`` (an upload's copies, made before they were refused)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(documents).where(documents.c.uri == uri)).all()
        return [DocumentRecord.from_row(r) for r in rows]

    def list(self, collection: str | None = None) -> list[DocumentRecord]:
        query = select(documents).order_by(documents.c.uri)
        if collection:
            query = query.where(documents.c.collection == collection)
        with self.engine.connect() as conn:
            return [DocumentRecord.from_row(r) for r in conn.execute(query).all()]

    def page(
        self,
        collection: str | None,
        readers: Sequence[str] | None,
        scope: Sequence[str] | None,
        limit: int,
        offset: int,
    ) -> tuple[builtins.list[DocumentRecord], int]:
        """One page of documents (by URI) and how many there are, in SQL: those of ``collection``
        (None: every one) within ``scope`` (a key's collections; None: all) that one of ``readers``
        (ACL tokens; None: no ACL filter) may read. An empty ACL reads as every signed-in user."""
        where = []
        if collection:
            where.append(documents.c.collection == collection)
        if scope is not None:
            where.append(documents.c.collection.in_(list(scope)))
        if readers is not None:
            where.append(_readable_by(readers))
        count = select(func.count()).select_from(documents).where(*where)
        query = select(documents).where(*where).order_by(documents.c.uri, documents.c.id)
        with self.engine.connect() as conn:
            total = int(conn.execute(count).scalar_one())
            rows = conn.execute(query.limit(limit).offset(offset)).all()
        return [DocumentRecord.from_row(r) for r in rows], total

    def find_indexed(self, collection: str, digest: str, exclude: str) -> DocumentRecord | None:
        """An indexed document of ``collection`` with these exact bytes, other than ``exclude``."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(documents)
                .where(
                    documents.c.collection == collection,
                    documents.c.content_hash == digest,
                    documents.c.status == "indexed",
                    documents.c.id != exclude,
                )
                .limit(1)
            ).first()
        return DocumentRecord.from_row(row) if row else None

    def collections(self) -> builtins.list[str]:
        with self.engine.connect() as conn:
            return sorted(r[0] for r in conn.execute(select(documents.c.collection).distinct()).all())

    def _save(self, doc_id: str, **values: Any) -> None:
        values["updated_at"] = now()
        with self.engine.begin() as conn:
            changed = conn.execute(
                update(documents).where(documents.c.id == doc_id).values(**values)
            ).rowcount
            if not changed:
                conn.execute(insert(documents).values(id=doc_id, **values))

    def _save_record(self, rec: DocumentRecord, **changes: Any) -> None:
        """Write ``rec`` whole, with ``changes`` over its fields (the row's time is set anew)."""
        values = {f.name: getattr(rec, f.name) for f in fields(rec) if f.name not in ("id", "updated_at")}
        self._save(rec.id, **{**values, **changes})

    def begin_write(self, rec: DocumentRecord, pending: builtins.list[str]) -> None:
        """Record the ids about to be written, before writing them (crash recovery needs them).
        ``rec`` is the document's last committed state (status "pending" when it has none).

        Ids an earlier crashed attempt announced stay announced: that attempt may have written
        them, and when the content changed since, the new ids differ and would not overwrite them.
        Forgetting them here would leave orphans if this attempt crashes too."""
        announced = list(dict.fromkeys([*(rec.pending_chunk_ids or ()), *pending]))
        self._save_record(rec, pending_chunk_ids=announced)

    def commit_write(self, rec: DocumentRecord) -> None:
        self._save_record(rec, pending_chunk_ids=None, status="indexed", error=None)

    def mark_failed(self, rec: DocumentRecord, error: str) -> None:
        # A failed re-parse keeps the previous good chunks searchable; version is cleared so the
        # next run tries again.
        self._save_record(rec, version="", status="failed", error=error[:2000])

    def touch_version(self, doc_id: str, version: str) -> None:
        self._save(doc_id, version=version)

    def invalidate(self, doc_id: str) -> None:
        """Make the next sync parse this document again whatever its version says."""
        self._save(doc_id, version="", content_hash="")

    def remove(self, doc_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(documents).where(documents.c.id == doc_id))


def _readable_by(readers: Sequence[str]) -> ColumnElement[bool]:
    """ACLs (JSON lists of strings) that name one of ``readers``, or none at all (every signed-in
    user). Matched on the JSON text, which works the same on SQLite and PostgreSQL: every entry is
    a quoted string there, and names hold no quote or backslash (callers re-check each row)."""
    text = cast(documents.c.acl, String)
    wanted = [r for r in readers if r != EVERYONE] + [EVERYONE]
    escaped = [r.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") for r in wanted]
    return or_(
        documents.c.acl.is_(None),
        text.in_(["[]", "null"]),
        *(text.like(f'%"{e}"%', escape="\\") for e in escaped),
    )
