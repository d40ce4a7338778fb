"""Knowledge bases (collections): create with default readers and owners, list, get, update,
delete, and who may see or curate one.

The vector store creates a collection lazily on first ingest; this service also records its
default ACL and its owners (the groups whose curators manage it: its sources, uploads, ingests and
jobs), and deleting one removes its shard directory and its ledger rows together.

Non-admins see a collection only when they may read one of its documents or curate it; any other
collection does not exist for them (404), and where they only read, the counts are of what they
may read. Methods take the acting principal; the default, ``LOCAL_ADMIN``, is for trusted callers
(the CLI, ingestion itself).
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable, Sequence
from types import EllipsisType
from typing import Any

from sqlalchemy import Engine, delete, func, insert, select, update

from appliance.db import collections, documents, groups, now, sources
from appliance.domain import (
    EVERYONE,
    LOCAL_ADMIN,
    Conflict,
    Forbidden,
    InvalidRequest,
    NotFound,
    Principal,
    Unavailable,
    validate_collection_name,
)
from appliance.security.acl import can_curate, can_read, in_collection_scope, is_curator
from appliance.security.identity import validate_name

MAX_BM25_WEIGHT = 10.0
WEIGHT_TTL_S = 5.0


def _unrestricted(principal: Principal) -> bool:
    return principal.is_admin and principal.collections is None


class CollectionService:
    def __init__(self, engine: Engine, store: Any, embedder: Any, ledger: Any) -> None:
        self.engine = engine
        self.store = store
        self.embedder = embedder
        self.ledger = ledger
        self._weights: dict[str, tuple[float | None, float]] = {}

    # -- rows -------------------------------------------------------------------------------------

    def _rows(self) -> dict[str, Any]:
        with self.engine.connect() as conn:
            return {r.name: r._mapping for r in conn.execute(select(collections)).all()}

    def _doc_counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(documents.c.collection, func.count()).group_by(documents.c.collection)
            ).all()
        return {name: int(n) for name, n in rows}

    def _readable(self, principal: Principal, only: str | None = None) -> dict[str, list[int]]:
        """collection -> [documents, chunks] the principal may read (collections with none left out).
        ACLs are JSON lists, which no portable SQL can match against a token set: checked here."""
        query = select(documents.c.collection, documents.c.acl, documents.c.chunk_ids)
        if only is not None:
            query = query.where(documents.c.collection == only)
        out: dict[str, list[int]] = {}
        with self.engine.connect() as conn:
            for name, acl, chunk_ids in conn.execute(query):
                if can_read(principal, name, acl):
                    counts = out.setdefault(name, [0, 0])
                    counts[0] += 1
                    counts[1] += len(chunk_ids or ())
        return out

    @staticmethod
    def _owners_of(row: Any) -> list[str]:
        return list(row["owners"]) if row is not None and row["owners"] else []

    def _describe(self, name: str, row: Any, docs: int, chunks: int | None = None) -> dict[str, Any]:
        error = None
        if chunks is None:
            try:
                chunks = self.store.count(name)
            except Unavailable as exc:  # a damaged shard fails its own collection, not the list
                chunks, error = 0, exc.message
        return {
            "name": name,
            "default_acl": list(row["default_acl"]) if row and row["default_acl"] else [EVERYONE],
            "owners": self._owners_of(row),
            "description": row["description"] if row else "",
            "bm25_weight": row["bm25_weight"] if row else None,
            "created_at": row["created_at"].isoformat() if row else None,
            "documents": docs,
            "chunks": chunks,
            "error": error,
        }

    def _existing_groups(self, names: Sequence[str]) -> list[str]:
        wanted = sorted({validate_name(g, "group name") for g in names})
        if not wanted:
            return []
        with self.engine.connect() as conn:
            found = {r.name for r in conn.execute(select(groups.c.name).where(groups.c.name.in_(wanted)))}
        missing = [g for g in wanted if g not in found]
        if missing:
            raise NotFound(f"no group {missing[0]!r}; create it with `appliance groups add`")
        return wanted

    # -- who may see and curate -------------------------------------------------------------------

    def names(self) -> list[str]:
        return sorted(set(self.store.collections()) | set(self._rows()))

    def owners(self, name: str) -> list[str]:
        return self._owners_of(self._rows().get(name))

    def curates(self, principal: Principal, name: str) -> bool:
        return can_curate(principal, self.owners(name), name)

    def curates_any(self, principal: Principal) -> Callable[[str], bool]:
        """``curates`` for many names at one read of the owners (to filter lists of sources, jobs)."""
        rows = self._rows()
        return lambda name: can_curate(principal, self._owners_of(rows.get(name)), name)

    def curated(self, principal: Principal) -> set[str]:
        """The existing collections this principal manages."""
        curates = self.curates_any(principal)
        return {n for n in self.names() if curates(n)}

    def visible_names(self, principal: Principal) -> list[str]:
        """Collections this principal may know of: where it reads a document, or that it curates."""
        if _unrestricted(principal):
            return self.names()
        seen = set(self._readable(principal)) | self.curated(principal)
        return [n for n in self.names() if n in seen]

    def visible(self, principal: Principal, name: str) -> bool:
        """Does ``name`` exist as far as this principal may know? False both for a collection it
        may not see and for one that does not exist, so callers answer the two alike."""
        return name in self.names() and self._visible(principal, name)

    def _visible(self, principal: Principal, name: str) -> bool:
        return (
            _unrestricted(principal) or self.curates(principal, name) or bool(self._readable(principal, name))
        )

    def require_curator(self, principal: Principal, name: str) -> None:
        """Let through admins and the curators of ``name``'s owner groups. Others: 403 for a role or
        key scope that may not curate, or a collection they see but do not curate; 404 for one they
        cannot see at all (whether it exists stays unsaid)."""
        if not is_curator(principal):
            raise Forbidden("this operation needs the curator or admin role")
        if not in_collection_scope(principal, name):
            raise Forbidden(f"this API key may not use collection {name!r}")
        if self.curates(principal, name):
            return
        if self._visible(principal, name):
            raise Forbidden(f"collection {name!r} is not owned by a group of yours")
        raise NotFound(f"collection {name!r} not found")

    # -- features ---------------------------------------------------------------------------------

    def create(
        self,
        name: str,
        default_acl: list[str],
        description: str = "",
        owners: Sequence[str] = (),
        *,
        principal: Principal = LOCAL_ADMIN,
    ) -> dict[str, Any]:
        validate_collection_name(name)
        if not is_curator(principal):
            raise Forbidden("creating a collection needs the curator or admin role")
        if not in_collection_scope(principal, name):
            raise Forbidden(f"this API key may not use collection {name!r}")
        owner_groups = self._existing_groups(owners)
        if not principal.is_admin:
            # A curator creates only what it will itself curate: in its own groups.
            if not owner_groups:
                raise InvalidRequest("give `owners`: one or more of your groups, whose curators manage it")
            foreign = [g for g in owner_groups if g not in principal.groups]
            if foreign:
                raise Forbidden(
                    f"a curator may only create collections owned by its groups; not yours: {foreign[0]!r}"
                )
        if name in self.names():
            # The same answer whether or not the caller may see the collection holding the name:
            # what it holds, who owns or reads it, stays unsaid.
            raise Conflict(f"the collection name {name!r} is not available")
        self.embedder.start()
        self.store.ensure_collection(name, self.embedder.dim)
        with self.engine.begin() as conn:
            conn.execute(
                insert(collections).values(
                    name=name,
                    default_acl=sorted(set(default_acl)),
                    description=description,
                    created_at=now(),
                    owners=owner_groups or None,
                )
            )
        return self.get(name, principal)

    def update(
        self,
        name: str,
        owners: Sequence[str] | None = None,
        description: str | None = None,
        *,
        bm25_weight: float | None | EllipsisType = ...,
        principal: Principal = LOCAL_ADMIN,
    ) -> dict[str, Any]:
        """Admins hand a collection to curators (its owners), describe it or set its fusion weight
        (``bm25_weight``: the BM25 side's, e.g. from ``appliance eval --tune``; None: back to
        ``retrieval.bm25_weight``; ``...``: unchanged). A collection an ingest created has no row
        yet: this gives it one, with every signed-in user as default readers."""
        if not principal.is_admin:
            raise Forbidden("changing a collection's owners or settings needs the admin role")
        self.get(name, principal)
        values: dict[str, Any] = {}
        if owners is not None:
            values["owners"] = self._existing_groups(owners) or None
        if description is not None:
            values["description"] = description
        if not isinstance(bm25_weight, EllipsisType):
            if bm25_weight is not None and not 0 <= bm25_weight <= MAX_BM25_WEIGHT:
                raise InvalidRequest(f"bm25_weight must be between 0 and {MAX_BM25_WEIGHT}")
            values["bm25_weight"] = bm25_weight
        with self.engine.begin() as conn:
            if conn.execute(select(collections.c.name).where(collections.c.name == name)).first() is None:
                conn.execute(
                    insert(collections).values(
                        name=name, default_acl=[], description="", created_at=now(), owners=None
                    )
                )
            if values:
                conn.execute(update(collections).where(collections.c.name == name).values(**values))
        self._weights.clear()
        return self.get(name, principal)

    def bm25_weight(self, name: str) -> float | None:
        """The collection's own BM25 fusion weight, None when it has none (the retriever then uses
        ``retrieval.bm25_weight``). Read once per ``WEIGHT_TTL_S`` per process: a search should not
        pay a database round trip, and a weight set by another process applies within seconds."""
        cached = self._weights.get(name)
        if cached is not None and time.monotonic() - cached[1] < WEIGHT_TTL_S:
            return cached[0]
        with self.engine.connect() as conn:
            weight = conn.execute(
                select(collections.c.bm25_weight).where(collections.c.name == name)
            ).scalar_one_or_none()
        self._weights[name] = (weight, time.monotonic())
        return weight

    def list(
        self, limit: int = 50, offset: int = 0, principal: Principal = LOCAL_ADMIN
    ) -> tuple[list[dict[str, Any]], int]:
        rows, names = self._rows(), self.names()
        if _unrestricted(principal):
            counts = self._doc_counts()
            page = names[offset : offset + limit]
            return [self._describe(n, rows.get(n), counts.get(n, 0)) for n in page], len(names)
        readable = self._readable(principal)
        curates = self.curates_any(principal)
        curated = {n for n in names if curates(n)}
        visible = [n for n in names if n in readable or n in curated]
        totals = self._doc_counts() if curated else {}
        items = []
        for n in visible[offset : offset + limit]:
            if n in curated:
                items.append(self._describe(n, rows.get(n), totals.get(n, 0)))
            else:
                docs, chunks = readable[n]
                items.append(self._describe(n, rows.get(n), docs, chunks))
        return items, len(visible)

    def get(self, name: str, principal: Principal = LOCAL_ADMIN) -> dict[str, Any]:
        validate_collection_name(name)
        if name not in self.names():
            raise NotFound(f"collection {name!r} not found")
        row = self._rows().get(name)
        if _unrestricted(principal) or can_curate(principal, self._owners_of(row), name):
            return self._describe(name, row, self._doc_counts().get(name, 0))
        readable = self._readable(principal, name).get(name)
        if readable is None:
            raise NotFound(f"collection {name!r} not found")
        return self._describe(name, row, readable[0], readable[1])

    def default_acl(self, name: str) -> builtins.list[str]:
        row = self._rows().get(name)
        return list(row["default_acl"]) if row and row["default_acl"] else []

    def delete(self, name: str, principal: Principal = LOCAL_ADMIN) -> dict[str, Any]:
        validate_collection_name(name)
        self.require_curator(principal, name)
        described = self.get(name, principal)
        if name in self.store.collections():
            self.store.drop_collection(name)
        with self.engine.begin() as conn:
            conn.execute(delete(documents).where(documents.c.collection == name))
            # Its sources go too: a scheduled sync would otherwise create the collection again,
            # with no row and so no default readers (everyone) and no owners.
            conn.execute(delete(sources).where(sources.c.collection == name))
            conn.execute(delete(collections).where(collections.c.name == name))
        self._weights.pop(name, None)
        return described
