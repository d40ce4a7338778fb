"""Knowledge bases (collections): create with default readers, list, get, delete.

The vector store creates a collection lazily on first ingest; this service also records a default
ACL for it, and deleting one removes its shard directory and its ledger rows together.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, delete, func, insert, select

from appliance.db import collections, documents, now
from appliance.domain import EVERYONE, Conflict, NotFound, validate_collection_name


class CollectionService:
    def __init__(self, engine: Engine, store: Any, embedder: Any, ledger: Any) -> None:
        self.engine = engine
        self.store = store
        self.embedder = embedder
        self.ledger = ledger

    def _rows(self) -> dict[str, Any]:
        with self.engine.connect() as conn:
            return {r.name: r._mapping for r in conn.execute(select(collections)).all()}

    def _doc_counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(documents.c.collection, func.count()).group_by(documents.c.collection)
            ).all()
        return {name: int(n) for name, n in rows}

    def _describe(self, name: str, row: Any, docs: int) -> dict[str, Any]:
        return {
            "name": name,
            "default_acl": list(row["default_acl"]) if row and row["default_acl"] else [EVERYONE],
            "description": row["description"] if row else "",
            "created_at": row["created_at"].isoformat() if row else None,
            "documents": docs,
            "chunks": self.store.count(name),
        }

    def names(self) -> list[str]:
        return sorted(set(self.store.collections()) | set(self._rows()))

    def create(self, name: str, default_acl: list[str], description: str = "") -> dict[str, Any]:
        validate_collection_name(name)
        if name in self.names():
            raise Conflict(f"collection {name!r} already exists")
        self.embedder.start()
        self.store.ensure_collection(name, self.embedder.dim)
        with self.engine.begin() as conn:
            conn.execute(
                insert(collections).values(
                    name=name, default_acl=sorted(set(default_acl)), description=description, created_at=now()
                )
            )
        return self.get(name)

    def list(self, limit: int = 50, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
        rows, counts, names = self._rows(), self._doc_counts(), self.names()
        page = names[offset : offset + limit]
        return [self._describe(n, rows.get(n), counts.get(n, 0)) for n in page], len(names)

    def get(self, name: str) -> dict[str, Any]:
        validate_collection_name(name)
        if name not in self.names():
            raise NotFound(f"collection {name!r} not found")
        return self._describe(name, self._rows().get(name), self._doc_counts().get(name, 0))

    def default_acl(self, name: str) -> list[str]:
        row = self._rows().get(name)
        return list(row["default_acl"]) if row and row["default_acl"] else []

    def delete(self, name: str) -> dict[str, Any]:
        described = self.get(name)
        if name in self.store.collections():
            self.store.drop_collection(name)
        with self.engine.begin() as conn:
            conn.execute(delete(documents).where(documents.c.collection == name))
            conn.execute(delete(collections).where(collections.c.name == name))
        return described
