"""Registered sources, persisted in the metadata DB.

A source is what an admin or curator asked to keep in sync: a SOURCE argument as the CLI takes it
(a path or URL) or a connector kind with its options, a collection, access rules, a sync interval
and who registered it. Its connector is built by ``ConnectorFactory``
(``appliance.ingestion.connect``) with the reach of that user as it is at sync time.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, delete, insert, select, update

from appliance.db import now, sources
from appliance.domain import NotFound
from appliance.security.secrets import SecretBox, redact


@dataclass
class Source:
    id: str
    kind: str
    spec: str | None
    options: dict[str, Any]
    collection: str
    acl: list[str]
    interval_s: int
    created_at: datetime
    last_sync_at: datetime | None
    last_job_id: str | None
    created_by: str | None = None  # the user whose reach its syncs have; None: an admin's

    @classmethod
    def from_row(cls, row: Any, box: SecretBox | None = None) -> Source:
        m = row._mapping
        spec, options = m["spec"], dict(m["options"] or {})
        if box is not None:
            spec = box.unseal(spec) if spec else spec
            options = box.unseal_options(options)
        return cls(
            m["id"],
            m["kind"],
            spec,
            options,
            m["collection"],
            list(m["acl"] or []),
            int(m["interval_s"] or 0),
            m["created_at"],
            m["last_sync_at"],
            m["last_job_id"],
            m.get("created_by"),
        )

    def as_dict(self) -> dict[str, Any]:
        """As shown (API answers, job details): passwords in the spec or options masked."""
        return {
            "id": self.id,
            "kind": self.kind,
            "spec": redact(self.spec),
            "options": redact(self.options),
            "collection": self.collection,
            "allow": self.acl,
            "interval_s": self.interval_s,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "last_sync_at": self.last_sync_at.isoformat() if self.last_sync_at else None,
            "last_job_id": self.last_job_id,
            "registered_by": self.created_by,
        }


class SourceStore:
    """With a ``SecretBox``, specs and options that hold a password are stored encrypted."""

    def __init__(self, engine: Engine, box: SecretBox | None = None) -> None:
        self.engine = engine
        self.box = box

    def add(
        self,
        kind: str,
        spec: str | None,
        options: dict[str, Any],
        collection: str,
        acl: Sequence[str],
        interval_s: int,
        created_by: str | None = None,
    ) -> Source:
        source_id = uuid.uuid4().hex[:16]
        values = self._values(kind, spec, options, collection, acl, interval_s, created_by)
        with self.engine.begin() as conn:
            conn.execute(insert(sources).values(id=source_id, created_at=now(), **values))
        return self.get(source_id)

    def _values(
        self,
        kind: str,
        spec: str | None,
        options: dict[str, Any],
        collection: str,
        acl: Sequence[str],
        interval_s: int,
        created_by: str | None,
    ) -> dict[str, Any]:
        """A source's columns as stored: a spec or options holding a password sealed."""
        return {
            "kind": kind,
            "spec": self.box.seal_spec(spec) if self.box else spec,
            "options": self.box.seal_options(options) if self.box else options,
            "collection": collection,
            "acl": list(acl),
            "interval_s": interval_s,
            "created_by": created_by,
        }

    def get(self, source_id: str) -> Source:
        with self.engine.connect() as conn:
            row = conn.execute(select(sources).where(sources.c.id == source_id)).first()
        if row is None:
            raise NotFound(f"no source {source_id!r}")
        return Source.from_row(row, self.box)

    def list(self) -> list[Source]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(sources).order_by(sources.c.created_at)).all()
        return [Source.from_row(r, self.box) for r in rows]

    def update(
        self,
        source_id: str,
        kind: str,
        spec: str | None,
        options: dict[str, Any],
        collection: str,
        acl: Sequence[str],
        interval_s: int,
        created_by: str | None,
    ) -> Source:
        """Change a source in place: its id, creation time, last sync and job history stay."""
        values = self._values(kind, spec, options, collection, acl, interval_s, created_by)
        with self.engine.begin() as conn:
            changed = conn.execute(update(sources).where(sources.c.id == source_id).values(**values)).rowcount
        if not changed:
            raise NotFound(f"no source {source_id!r}")
        return self.get(source_id)

    def remove(self, source_id: str) -> None:
        with self.engine.begin() as conn:
            if not conn.execute(delete(sources).where(sources.c.id == source_id)).rowcount:
                raise NotFound(f"no source {source_id!r}")

    def claim_sync(self, source: Source) -> bool:
        """Mark ``source`` (as read) synced now, unless another process did so since it was read:
        a compare-and-set on ``last_sync_at``, so of schedulers ticking at once exactly one wins."""
        unchanged = (
            sources.c.last_sync_at.is_(None)
            if source.last_sync_at is None
            else sources.c.last_sync_at == source.last_sync_at
        )
        with self.engine.begin() as conn:
            won = conn.execute(
                update(sources).where(sources.c.id == source.id, unchanged).values(last_sync_at=now())
            ).rowcount
        return bool(won)

    def mark_synced(self, source_id: str, job_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(sources)
                .where(sources.c.id == source_id)
                .values(last_sync_at=now(), last_job_id=job_id)
            )
