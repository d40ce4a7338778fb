"""The commit stage: a prepared, embedded document written to the store and the ledger in the
crash-safe order (see ``pipeline``), a group of documents per flush."""

from __future__ import annotations

from dataclasses import dataclass

from appliance.domain import Chunk, chunk_id, content_hash
from appliance.ingestion.prepare import Prepared
from appliance.ingestion.state import DocumentRecord, Ledger
from appliance.vectorstore.base import VectorStore


@dataclass
class Staged:
    """A document written to the store but not yet flushed and committed."""

    ready: Prepared
    new_ids: list[str]
    outcome: str  # "added", "updated" or "reused" (added with an identical document's vectors)
    n: int


class Writer:
    def __init__(self, store: VectorStore, ledger: Ledger) -> None:
        self.store = store
        self.ledger = ledger

    def stage(self, r: Prepared) -> Staged:
        """Announce the document's chunk ids in the ledger, then upsert them. Not yet durable:
        ``commit`` flushes a whole group at once."""
        if r.vectors is None:
            raise ValueError(f"{r.item.uri} reached the writer without vectors")
        chunks = [
            Chunk(
                id=chunk_id(r.doc_id, i, content_hash(p.text)),
                document_id=r.doc_id,
                collection=r.collection,
                uri=r.item.uri,
                title=r.title,
                text=p.text,
                index=i,
                page=p.page,
                section=p.section,
                content_hash=r.digest,
                version=r.item.version,
                acl=tuple(r.acl),
                section_path=p.section_path,
                source=r.source,
                modified=r.item.metadata.get("modified"),
            )
            for i, p in enumerate(r.pieces)
        ]
        new_ids = [c.id for c in chunks]
        self.ledger.begin_write(r.base, new_ids)
        self.store.upsert(r.collection, chunks, r.vectors)
        outcome = "updated" if r.old and r.old.chunk_ids else "added"
        return Staged(r, new_ids, "reused" if r.reused else outcome, len(chunks))

    def commit(self, group: list[Staged]) -> None:
        """Group commit, in the crash-safe order: flush the new chunks, delete and flush the stale
        ones, then commit each document in the ledger."""
        if not group:
            return
        collection = group[0].ready.collection
        self.store.flush(collection)
        stale: set[str] = set()
        for s in group:
            base = s.ready.base
            stale |= (set(base.chunk_ids) | set(base.pending_chunk_ids or ())) - set(s.new_ids)
        if stale:
            self.store.delete_chunks(collection, sorted(stale))
            self.store.flush(collection)
        for s in group:
            r = s.ready
            self.ledger.commit_write(
                DocumentRecord(
                    r.doc_id,
                    r.collection,
                    r.source,
                    r.item.uri,
                    r.title,
                    r.item.version,
                    r.digest,
                    r.acl,
                    s.new_ids,
                    None,
                    "indexed",
                    None,
                )
            )

    def fail(self, rec: DocumentRecord, error: str) -> None:
        """A document that could not be read or parsed: the chunks of an earlier crashed attempt
        go, the previous good ones stay searchable, and the ledger says why."""
        leftover = set(rec.pending_chunk_ids or ()) - set(rec.chunk_ids)
        if leftover:
            self.store.delete_chunks(rec.collection, sorted(leftover))
            self.store.flush(rec.collection)
        rec.pending_chunk_ids = None
        self.ledger.mark_failed(rec, error)

    def remove(self, rec: DocumentRecord) -> None:
        # Shard first, ledger last: a crash in between leaves a ledger row whose source is gone,
        # which the next sync removes again.
        self.store.delete(rec.collection, [rec.id])
        self.store.flush(rec.collection)
        self.ledger.remove(rec.id)
