"""Ingestion: discover -> fetch -> parse -> chunk -> embed -> upsert, recorded in the ledger.

Write order per document, chosen so a crash at any point converges on re-run:
1. the ledger records the chunk ids about to be written (``pending``);
2. the new chunks are upserted and flushed (readers see old and new, never nothing);
3. chunks of the previous version (and of any crashed attempt) that are not in the new set are
   deleted and flushed;
4. the ledger commits the new version with its chunk ids.
Chunk ids are deterministic, so repeating any step overwrites instead of duplicating.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import unquote, urlparse

from appliance.domain import (
    EVERYONE,
    ApplianceError,
    Chunk,
    Connector,
    SourceItem,
    chunk_id,
    content_hash,
    document_id,
    validate_collection_name,
)
from appliance.embeddings.base import Embedder
from appliance.ingestion.chunking import chunk_elements
from appliance.ingestion.parsing import ParserPool
from appliance.ingestion.state import DocumentRecord, Ledger
from appliance.vectorstore.base import VectorStore

log = logging.getLogger(__name__)


@dataclass
class IngestReport:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    failed: list[dict[str, str]] = field(default_factory=list)
    chunks: int = 0
    elapsed_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "deleted": self.deleted,
            "failed": self.failed,
            "chunks": self.chunks,
            "elapsed_s": round(self.elapsed_s, 3),
        }


Progress = Callable[[str, SourceItem], None]


class IngestionService:
    def __init__(
        self,
        embedder: Embedder,
        store: VectorStore,
        ledger: Ledger,
        parser: ParserPool,
        chunk_tokens: int,
        overlap_tokens: int,
    ) -> None:
        self.embedder = embedder
        self.store = store
        self.ledger = ledger
        self.parser = parser
        self.chunk_tokens = chunk_tokens
        self.overlap_tokens = overlap_tokens

    def ingest(
        self,
        connector: Connector,
        collection: str,
        acl: Sequence[str] = (),
        progress: Progress | None = None,
    ) -> IngestReport:
        validate_collection_name(collection)
        started = time.monotonic()
        self.embedder.start()
        self.store.ensure_collection(collection, self.embedder.dim)
        report = IngestReport()
        seen: set[str] = set()
        for item in connector.discover():
            doc_id = document_id(collection, item.uri)
            seen.add(doc_id)
            if progress:
                progress("start", item)
            try:
                outcome, n = self._ingest_item(connector, item, collection, doc_id, tuple(acl) or item.acl)
            except ApplianceError as exc:
                report.failed.append({"uri": item.uri, "error": exc.message})
                log.warning("failed %s: %s", item.uri, exc.message)
                if progress:
                    progress("failed", item)
                continue
            except Exception as exc:  # one bad document must not stop the job
                log.exception("failed %s", item.uri)
                report.failed.append({"uri": item.uri, "error": f"{type(exc).__name__}: {exc}"})
                if progress:
                    progress("failed", item)
                continue
            setattr(report, outcome, getattr(report, outcome) + 1)
            report.chunks += n
            if progress:
                progress(outcome, item)
        # Only a complete discovery may conclude that a document is gone from the source.
        for rec in self.ledger.for_source(collection, connector.root):
            if rec.id not in seen:
                self.store.delete(collection, [rec.id])
                self.store.flush(collection)
                self.ledger.remove(rec.id)
                report.deleted += 1
        report.elapsed_s = time.monotonic() - started
        return report

    def _ingest_item(
        self, connector: Connector, item: SourceItem, collection: str, doc_id: str, acl: tuple[str, ...]
    ) -> tuple[str, int]:
        acl_list = sorted(acl) if acl else [EVERYONE]
        old = self.ledger.get(doc_id)
        if old and old.status == "indexed" and old.version == item.version and old.acl == acl_list:
            return "unchanged", 0
        data = connector.fetch(item)
        digest = content_hash(data)
        if old and old.status == "indexed" and old.content_hash == digest and old.acl == acl_list:
            self.ledger.touch_version(doc_id, item.version)
            return "unchanged", 0

        filename = item.metadata.get("filename") or PurePosixPath(unquote(urlparse(item.uri).path)).name
        base = old or DocumentRecord(
            doc_id,
            collection,
            connector.root,
            item.uri,
            filename,
            "",
            "",
            acl_list,
            [],
            None,
            "pending",
            None,
        )
        try:
            elements = self.parser.parse(data, filename)
            pieces = chunk_elements(
                elements,
                self.embedder.count_tokens,
                self.chunk_tokens,
                self.embedder.max_tokens,
                self.overlap_tokens,
            )
            if not pieces:
                raise ApplianceError("no text could be extracted from this document")
        except ApplianceError as exc:
            self.ledger.mark_failed(base, exc.message)
            raise
        title = _title(elements, filename)
        chunks = [
            Chunk(
                id=chunk_id(doc_id, i, content_hash(p.text)),
                document_id=doc_id,
                collection=collection,
                uri=item.uri,
                title=title,
                text=p.text,
                index=i,
                page=p.page,
                section=p.section,
                content_hash=digest,
                version=item.version,
                acl=tuple(acl_list),
                source=connector.root,
                modified=item.metadata.get("modified"),
            )
            for i, p in enumerate(pieces)
        ]
        new_ids = [c.id for c in chunks]
        vectors = self.embedder.embed_documents([c.text for c in chunks])

        self.ledger.begin_write(base, new_ids)
        self.store.upsert(collection, chunks, vectors)
        self.store.flush(collection)
        stale = (set(base.chunk_ids) | set(base.pending_chunk_ids or ())) - set(new_ids)
        if stale:
            self.store.delete_chunks(collection, sorted(stale))
            self.store.flush(collection)
        committed = DocumentRecord(
            doc_id,
            collection,
            connector.root,
            item.uri,
            title,
            item.version,
            digest,
            acl_list,
            new_ids,
            None,
            "indexed",
            None,
        )
        self.ledger.commit_write(committed)
        return ("updated" if old and old.chunk_ids else "added"), len(chunks)


def _title(elements: list[dict[str, Any]], filename: str) -> str:
    for element in elements[:3]:
        if element.get("type") == "Title" and element.get("text", "").strip():
            return f"{element['text'].strip()[:120]} ({filename})"
    return filename
