"""Registered sources (persisted in the metadata DB) and uploaded documents.

A source is what an admin asked to keep in sync: a SOURCE argument as the CLI takes it (a path or
URL) or a connector kind with its options, a collection, access rules and a sync interval.
Uploads are stored under a generated name in the data dir; the client's file name is only ever
used as a title, never as a path.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote, unquote, urlparse

from sqlalchemy import Engine, delete, insert, select, update

from appliance.db import now, sources
from appliance.domain import (
    MAX_FILE_SETTING,
    Connector,
    FileTooLarge,
    InvalidRequest,
    NotFound,
    SourceItem,
    read_capped,
)


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

    @classmethod
    def from_row(cls, row: Any) -> Source:
        m = row._mapping
        return cls(
            m["id"],
            m["kind"],
            m["spec"],
            dict(m["options"] or {}),
            m["collection"],
            list(m["acl"] or []),
            int(m["interval_s"] or 0),
            m["created_at"],
            m["last_sync_at"],
            m["last_job_id"],
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "spec": self.spec,
            "options": self.options,
            "collection": self.collection,
            "allow": self.acl,
            "interval_s": self.interval_s,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "last_sync_at": self.last_sync_at.isoformat() if self.last_sync_at else None,
            "last_job_id": self.last_job_id,
        }


class SourceStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def add(
        self,
        kind: str,
        spec: str | None,
        options: dict[str, Any],
        collection: str,
        acl: Sequence[str],
        interval_s: int,
    ) -> Source:
        source_id = uuid.uuid4().hex[:16]
        with self.engine.begin() as conn:
            conn.execute(
                insert(sources).values(
                    id=source_id,
                    kind=kind,
                    spec=spec,
                    options=options,
                    collection=collection,
                    acl=list(acl),
                    interval_s=interval_s,
                    created_at=now(),
                )
            )
        return self.get(source_id)

    def get(self, source_id: str) -> Source:
        with self.engine.connect() as conn:
            row = conn.execute(select(sources).where(sources.c.id == source_id)).first()
        if row is None:
            raise NotFound(f"no source {source_id!r}")
        return Source.from_row(row)

    def list(self) -> list[Source]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(sources).order_by(sources.c.created_at)).all()
        return [Source.from_row(r) for r in rows]

    def remove(self, source_id: str) -> None:
        with self.engine.begin() as conn:
            if not conn.execute(delete(sources).where(sources.c.id == source_id)).rowcount:
                raise NotFound(f"no source {source_id!r}")

    def mark_synced(self, source_id: str, job_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(sources)
                .where(sources.c.id == source_id)
                .values(last_sync_at=now(), last_job_id=job_id)
            )


def build_connector(settings: Any, kind: str, spec: str | None, options: dict[str, Any]) -> Connector:
    """The connector for a stored source (or a SOURCE argument). Raises InvalidRequest when the
    source cannot be reached or the kind is unknown.

    Every connector gets ``max_file_bytes`` from ``ingestion.max_file_mb``, so an oversized
    document fails before it is read; like the other options that widen what a source may
    reach, it comes only from the settings, never from a request or a stored source."""
    if "max_file_bytes" in options:
        raise InvalidRequest(f"option max_file_bytes can only be set in the settings ({MAX_FILE_SETTING})")
    limit = int(settings.ingestion.max_file_mb * 2**20)
    if kind == "upload" and spec:
        return UploadConnector.from_uri(spec, Path(options["upload_dir"]), max_file_bytes=limit)
    from appliance.ingestion.connect import open_source, rebuild

    options = {**options, "max_file_bytes": limit}
    if spec:
        return open_source(settings, spec, options)
    return rebuild(settings, kind, options)


# --- uploads --------------------------------------------------------------------------------------

_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")
_SUFFIX = re.compile(r"^\.[a-z0-9]{1,10}$")


def safe_filename(name: str | None) -> str:
    """A display name from whatever a client sent: its last path component, no control chars."""
    base = PurePosixPath((name or "").replace("\\", "/")).name
    base = _UNSAFE.sub("", base).strip()[:200]
    return base if base and base not in (".", "..") else "upload"


class UploadConnector:
    """One uploaded document. Each upload is its own source, so syncing one never deletes another.

    URI: ``upload://<collection>/<stored name>/<display name>``; the stored name is generated, the
    display name only titles the document. The upload itself is cut off at ``ingestion.max_file_mb``
    while it is received; ``max_file_bytes`` applies the limit again when it is (re)read, which
    matters when the setting was lowered since."""

    kind = "upload"

    def __init__(self, path: Path, uri: str, filename: str, max_file_bytes: int | None = None) -> None:
        self.path = path
        self.root = uri
        self.filename = filename
        self.max_file_bytes = max_file_bytes

    @classmethod
    def store(cls, upload_dir: Path, collection: str, filename: str | None) -> tuple[UploadConnector, Path]:
        display = safe_filename(filename)
        suffix = PurePosixPath(display).suffix.lower()
        stored = uuid.uuid4().hex + (suffix if _SUFFIX.match(suffix) else "")
        folder = upload_dir / collection
        folder.mkdir(parents=True, exist_ok=True)
        uri = f"upload://{collection}/{stored}/{quote(display)}"
        return cls(folder / stored, uri, display), folder / stored

    @classmethod
    def from_uri(cls, uri: str, upload_dir: Path, max_file_bytes: int | None = None) -> UploadConnector:
        parsed = urlparse(uri)
        parts = [p for p in parsed.path.split("/") if p]
        if (
            parsed.scheme != "upload"
            or len(parts) != 2
            or not re.fullmatch(r"[0-9a-f]{32}(\.[a-z0-9]{1,10})?", parts[0])
        ):
            raise InvalidRequest(f"not an upload URI: {uri}")
        return cls(upload_dir / parsed.netloc / parts[0], uri, unquote(parts[1]), max_file_bytes)

    def discover(self) -> Iterator[SourceItem]:
        try:
            st = self.path.stat()
        except OSError:
            return
        yield SourceItem(
            uri=self.root,
            version=f"{st.st_mtime_ns}-{st.st_size}",
            metadata={"filename": self.filename, "size": st.st_size},
        )

    def fetch(self, item: SourceItem) -> bytes:
        with open(self.path, "rb", buffering=0) as fh:
            size = os.fstat(fh.fileno()).st_size
            if self.max_file_bytes is not None and size > self.max_file_bytes:
                raise FileTooLarge(self.max_file_bytes, size)
            return read_capped(fh.read, self.max_file_bytes)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
