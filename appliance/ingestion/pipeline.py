"""Ingestion: discover -> fetch -> parse -> chunk -> embed -> upsert, recorded in the ledger.

Write order per document, chosen so a crash at any point converges on re-run:
1. the ledger records the chunk ids about to be written (``pending``);
2. the new chunks are upserted and flushed (readers see old and new, never nothing);
3. chunks of the previous version (and of any crashed attempt) that are not in the new set are
   deleted and flushed;
4. the ledger commits the new version with its chunk ids.
Chunk ids are deterministic, so repeating any step overwrites instead of duplicating. Documents
go through steps 1-2 one by one and through the flushes and step 4 in groups (a flush of the
shard costs ~0.3 s), and the next documents are parsed while the current one is embedded.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np

from appliance.domain import (
    EVERYONE,
    ApplianceError,
    Chunk,
    Connector,
    ParseError,
    SourceItem,
    chunk_id,
    content_hash,
    document_id,
    validate_collection_name,
)
from appliance.embeddings.base import Embedder
from appliance.ingestion.chunking import TextChunk, chunk_elements
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
    reused: int = 0  # documents whose vectors came from an identical document at another URI
    cancelled: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "deleted": self.deleted,
            "failed": self.failed,
            "chunks": self.chunks,
            "reused": self.reused,
            "elapsed_s": round(self.elapsed_s, 3),
        }


@dataclass
class IngestProgress:
    """Live counters of a run, shared with whoever watches it (job API, CLI progress bar).

    ``seen``: items discovered so far; ``done`` and ``failed``: items finished; ``chunks``: chunks
    written. ``listener`` is called after every change with the event name and the item."""

    seen: int = 0
    done: int = 0
    failed: int = 0
    chunks: int = 0
    current: str | None = None
    discovering: bool = True
    started: float = field(default_factory=time.monotonic)
    listener: Callable[[str, SourceItem | None, IngestProgress], None] | None = None

    def emit(self, event: str, item: SourceItem | None = None) -> None:
        if self.listener is not None:
            self.listener(event, item, self)

    def snapshot(self) -> dict[str, Any]:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        finished = self.done + self.failed
        rate = finished / elapsed
        remaining = max(self.seen - finished, 0)
        eta = None if self.discovering or rate == 0 else round(remaining / rate, 1)
        return {
            "seen": self.seen,
            "done": self.done,
            "failed": self.failed,
            "chunks": self.chunks,
            "current": self.current,
            "elapsed_s": round(elapsed, 1),
            "rate_docs_s": round(rate, 3),
            "rate_chunks_s": round(self.chunks / elapsed, 2),
            "eta_s": 0.0 if not self.discovering and remaining == 0 else eta,
        }


# Kept for callers of the skeleton's signature; ``IngestProgress.listener`` is the richer form.
Progress = Callable[[str, SourceItem | None, IngestProgress], None]


@dataclass
class _Ready:
    """A parsed and chunked document waiting for the writer."""

    source: str
    item: SourceItem
    collection: str
    doc_id: str
    acl: list[str]
    old: DocumentRecord | None
    base: DocumentRecord
    digest: str
    title: str
    pieces: list[TextChunk]
    vectors: np.ndarray | None
    reused: bool = False  # vectors came from an identical document, not from the embedder


@dataclass
class _Staged:
    """A document written to the store but not yet flushed and committed."""

    ready: _Ready
    new_ids: list[str]
    outcome: str
    n: int


# Documents written between two flushes of the store: fewer flushes, and a crash in a group
# still converges (every id is announced in the ledger before it is written).
GROUP_DOCS = 16
GROUP_SECONDS = 2.0
# Chunks written between two index builds of the store within one run. Edge builds its HNSW
# index only when asked and holds the GIL meanwhile (~1.1 ms per new vector here; 176 s for a
# 100k bulk load at once): building every 10k keeps each stall of a serving process near 10 s.
OPTIMIZE_EVERY_CHUNKS = 10_000
# Documents prepared ahead of the writer beyond one per parser, so that several can be embedded
# in one call, and the chunk count one call takes from the documents already waiting.
EMBED_AHEAD_DOCS = 3
EMBED_BATCH_CHUNKS = 64
# Chunks whose vectors are kept for identical documents later in a run (~1.5 KiB each at 384-d).
RECENT_VECTOR_CHUNKS = 4096


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
        # Vectors of documents embedded lately, by content (with the document they came from): an
        # identical document at another URI met before its twin is committed (the same file twice
        # in one run) is not embedded twice.
        self._recent: OrderedDict[str, tuple[str, np.ndarray]] = OrderedDict()
        self._recent_chunks = 0
        self._recent_lock = threading.Lock()

    def ingest(
        self,
        connector: Connector,
        collection: str,
        acl: Sequence[str] = (),
        progress: IngestProgress | Progress | None = None,
        cancel: threading.Event | None = None,
        items: Iterable[SourceItem] | None = None,
        force: bool = False,
        default_acl: Sequence[str] = (),
    ) -> IngestReport:
        """Sync ``connector`` into ``collection``. With ``items``, only those are (re)indexed and
        nothing is deleted; ``force`` re-parses even when version and content are unchanged.

        An item's readers: ``acl`` when given (the whole run), else the item's own (source
        metadata), else ``default_acl`` (the collection's), else every signed-in user."""
        validate_collection_name(collection)
        if progress is None or not isinstance(progress, IngestProgress):
            progress = IngestProgress(listener=progress)
        started = time.monotonic()
        # Warm the parser processes while the embedding model loads: the two overlap.
        warm = threading.Thread(target=self._warm_parser, name="appliance-parser-warm", daemon=True)
        warm.start()
        self.embedder.start()
        self.store.ensure_collection(collection, self.embedder.dim)
        report = IngestReport()
        # Discover everything first: a total makes an ETA possible, and only a complete
        # discovery may conclude that a document is gone from the source.
        listed: list[SourceItem] = []
        refused: list[SourceItem] = []  # entries the connector will not read: reported, never fetched
        progress.discovering = True
        for item in items if items is not None else connector.discover():
            (refused if item.refused else listed).append(item)
            progress.seen += 1
            if progress.seen % 100 == 0:
                progress.emit("discovering")
            if cancel is not None and cancel.is_set():
                break
        progress.discovering = False
        progress.emit("discovered")
        seen: set[str] = set()
        item_acl = tuple(acl)
        fallback_acl = tuple(default_acl)
        ahead = ThreadPoolExecutor(max_workers=max(1, self.parser.size), thread_name_prefix="ingest-prepare")
        queued: dict[int, Future[Any]] = {}

        def schedule(index: int) -> None:
            if index < len(listed) and index not in queued:
                it = listed[index]
                queued[index] = ahead.submit(
                    self._prepare,
                    connector,
                    it,
                    collection,
                    document_id(collection, it.uri),
                    item_acl or tuple(it.acl) or fallback_acl,
                    force,
                )

        group: list[tuple[SourceItem, _Staged]] = []
        group_started = 0.0

        def succeeded(item: SourceItem, outcome: str, n: int) -> None:
            if outcome == "reused":
                report.reused += 1
                outcome = "added"
            setattr(report, outcome, getattr(report, outcome) + 1)
            report.chunks += n
            progress.done += 1
            progress.chunks += n
            progress.emit(outcome, item)

        def failed(item: SourceItem, exc: BaseException) -> None:
            if isinstance(exc, ApplianceError):
                reason = exc.message
                log.warning("failed %s: %s", item.uri, reason)
            else:
                reason = f"{type(exc).__name__}: {exc}"[:2000]
                log.error("failed %s", item.uri, exc_info=exc)
            report.failed.append({"uri": item.uri, "error": reason})
            progress.failed += 1
            progress.emit("failed", item)

        for item in refused:
            seen.add(document_id(collection, item.uri))  # an indexed copy stays, as for any failure
            failed(item, ApplianceError(item.refused or "refused by its source"))

        unindexed = 0  # chunks written since the last index build

        def commit_group() -> None:
            nonlocal unindexed
            staged = list(group)
            group.clear()
            try:
                self._finish([s for _, s in staged])
            except Exception as exc:  # the whole group is retried by the next sync
                for item, _ in staged:
                    failed(item, exc)
                return
            for item, s in staged:
                succeeded(item, s.outcome, s.n)
            unindexed += sum(s.n for _, s in staged)
            if unindexed >= OPTIMIZE_EVERY_CHUNKS:
                self.store.optimize(collection)
                unindexed = 0

        try:
            for position, item in enumerate(listed):
                if cancel is not None and cancel.is_set():
                    report.cancelled = True
                    break
                for lookahead in range(position, position + 1 + max(1, self.parser.size) + EMBED_AHEAD_DOCS):
                    schedule(lookahead)
                doc_id = document_id(collection, item.uri)
                seen.add(doc_id)
                progress.current = item.uri
                progress.emit("start", item)
                try:
                    prepared = queued.pop(position).result()
                    if isinstance(prepared, tuple):
                        succeeded(item, *prepared)
                    else:
                        if prepared.vectors is None:
                            parsing = sum(1 for f in queued.values() if not f.done())
                            self._embed([prepared, *self._ready_ahead(queued, position)], parsing)
                        if not group:
                            group_started = time.monotonic()
                        group.append((item, self._stage(prepared)))
                except Exception as exc:  # one bad document must not stop the job
                    failed(item, exc)
                if group and (
                    len(group) >= GROUP_DOCS
                    or time.monotonic() - group_started >= GROUP_SECONDS
                    or position == len(listed) - 1
                ):
                    commit_group()
            commit_group()
        finally:
            for future in queued.values():
                future.cancel()
            ahead.shutdown(wait=True)
        progress.current = None
        if items is None and not report.cancelled:
            for rec in self.ledger.for_source(collection, connector.root):
                if rec.id not in seen:
                    self.remove_document(rec)
                    report.deleted += 1
        if unindexed or report.deleted:
            self.store.optimize(collection)
        report.elapsed_s = time.monotonic() - started
        return report

    def _ready_ahead(self, queued: dict[int, Future[Any]], position: int) -> list[_Ready]:
        """The next documents already parsed and chunked, in order, up to EMBED_BATCH_CHUNKS
        chunks: embedded together with the current one. Never waits for a parse."""
        out: list[_Ready] = []
        chunks = 0
        index = position + 1
        while index in queued and queued[index].done() and chunks < EMBED_BATCH_CHUNKS:
            future = queued[index]
            if future.exception() is not None:
                break
            ready = future.result()
            if isinstance(ready, _Ready) and ready.vectors is None:
                out.append(ready)
                chunks += len(ready.pieces)
            index += 1
        return out

    def _warm_parser(self) -> None:
        try:
            self.parser.start()
        except ApplianceError:
            log.exception("parser workers did not start; parsing will retry")

    def remove_document(self, rec: DocumentRecord) -> None:
        # Shard first, ledger last: a crash in between leaves a ledger row whose source is gone,
        # which the next sync removes again.
        self.store.delete(rec.collection, [rec.id])
        self.store.flush(rec.collection)
        self.ledger.remove(rec.id)

    def _ingest_item(
        self,
        connector: Connector,
        item: SourceItem,
        collection: str,
        doc_id: str,
        acl: tuple[str, ...],
        force: bool = False,
    ) -> tuple[str, int]:
        prepared = self._prepare(connector, item, collection, doc_id, acl, force)
        return prepared if isinstance(prepared, tuple) else self._commit(prepared)

    def _prepare(
        self,
        connector: Connector,
        item: SourceItem,
        collection: str,
        doc_id: str,
        acl: tuple[str, ...],
        force: bool = False,
    ) -> tuple[str, int] | _Ready:
        """Everything before the write: skip checks, fetch, parse, chunk. Runs ahead of the
        writer on another thread, so the next document parses while this one is embedded."""
        acl_list = sorted(acl) if acl else [EVERYONE]
        old = self.ledger.get(doc_id)
        current = bool(old and old.status == "indexed" and old.acl == acl_list and not force)
        if current and old and old.version == item.version:
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
            data = connector.fetch(item)
        except ApplianceError as exc:  # over the size limit, gone, unreadable: a row says why
            self._drop_pending(base)
            self.ledger.mark_failed(base, exc.message)
            raise
        digest = content_hash(data)
        if current and old and old.content_hash == digest:
            self.ledger.touch_version(doc_id, item.version)
            return "unchanged", 0
        reused = None if force else self._twin_chunks(collection, digest, doc_id, filename)
        if reused is not None:
            title, pieces, vectors = reused
        else:
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
                    raise ParseError("no text could be extracted from this document")
            except ApplianceError as exc:
                self._drop_pending(base)
                self.ledger.mark_failed(base, exc.message)
                raise
            title = _title(elements, filename)
            vectors = None
        return _Ready(
            connector.root,
            item,
            collection,
            doc_id,
            acl_list,
            old,
            base,
            digest,
            title,
            pieces,
            vectors,
            reused=vectors is not None,
        )

    def _commit(self, r: _Ready) -> tuple[str, int]:
        staged = self._stage(r)
        self._finish([staged])
        return staged.outcome, staged.n

    def _stage(self, r: _Ready) -> _Staged:
        """Embed a prepared document, announce its chunk ids in the ledger, upsert them. Not yet
        durable: ``_finish`` flushes a whole group at once (one flush costs ~0.3 s)."""
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
        if r.vectors is None:
            self._embed([r], self.parser.size)
        assert r.vectors is not None
        self.ledger.begin_write(r.base, new_ids)
        self.store.upsert(r.collection, chunks, r.vectors)
        outcome = "updated" if r.old and r.old.chunk_ids else "added"
        return _Staged(r, new_ids, "reused" if r.reused else outcome, len(chunks))

    def _embed(self, batch: list[_Ready], parsing: int) -> None:
        """Embed the chunks of several prepared documents in one call: fewer, fuller batches.

        ``parsing``: documents being parsed meanwhile. Each parser process holds a core while it
        works, and torch with as many threads as cores would fight it (measured here: 2 threads
        next to a busy parser embed 52 chunks/s, 1 thread 114): the embedder leaves the busy
        parsers their cores and takes every core once nothing is left to parse."""
        # Identical documents at other URIs (in this batch, or embedded lately) get the vectors
        # already computed for their content instead of being embedded again.
        firsts: dict[str, _Ready] = {}
        todo: list[_Ready] = []
        twins: list[tuple[_Ready, _Ready]] = []
        with self._recent_lock:
            for r in batch:
                key = _twin_key(r)
                known = self._recent.get(key)
                if known is not None and known[0] != r.doc_id:
                    self._recent.move_to_end(key)
                    r.vectors, r.reused = known[1], True
                elif (first := firsts.get(key)) is not None and first.doc_id != r.doc_id:
                    twins.append((r, first))
                else:
                    firsts.setdefault(key, r)
                    todo.append(r)
        texts = [p.text for r in todo for p in r.pieces]
        busy = min(parsing, self.parser.size)
        threads = max(1, int(getattr(self.embedder, "threads", 1)) - busy)
        if texts:
            vectors = self.embedder.embed_documents(texts, threads=threads)
            start = 0
            for r in todo:
                r.vectors = vectors[start : start + len(r.pieces)]
                start += len(r.pieces)
        for r, first in twins:
            r.vectors, r.reused = first.vectors, True
        with self._recent_lock:
            for key, r in firsts.items():
                if key not in self._recent:
                    self._recent_chunks += len(r.pieces)
                self._recent[key] = (r.doc_id, r.vectors)  # type: ignore[assignment]
            while self._recent_chunks > RECENT_VECTOR_CHUNKS and len(self._recent) > 1:
                _, (_, dropped) = self._recent.popitem(last=False)
                self._recent_chunks -= len(dropped)

    def _finish(self, group: list[_Staged]) -> None:
        """Group commit, in the crash-safe order of the module doc: flush the new chunks, delete
        and flush the stale ones, then commit each document in the ledger."""
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

    def _drop_pending(self, rec: DocumentRecord) -> None:
        """A failed attempt must not leave the chunks of an earlier crashed attempt behind."""
        leftover = set(rec.pending_chunk_ids or ()) - set(rec.chunk_ids)
        if leftover:
            self.store.delete_chunks(rec.collection, sorted(leftover))
            self.store.flush(rec.collection)
        rec.pending_chunk_ids = None

    def _twin_chunks(
        self, collection: str, digest: str, doc_id: str, filename: str
    ) -> tuple[str, list[TextChunk], np.ndarray] | None:
        """Identical bytes already indexed at another URI: reuse its chunks and vectors instead
        of parsing and embedding again."""
        get_vectors = getattr(self.store, "get_with_vectors", None)
        if get_vectors is None:
            return None
        twin = self.ledger.find_indexed(collection, digest, exclude=doc_id)
        if twin is None or not twin.chunk_ids:
            return None
        found = get_vectors(collection, twin.chunk_ids)
        if len(found) != len(twin.chunk_ids):
            return None  # the twin is damaged; parse this one from scratch
        found.sort(key=lambda pair: pair[0].index)
        pieces = [TextChunk(c.text, c.page, c.section, c.section_path) for c, _ in found]
        vectors = np.stack([v for _, v in found]).astype(np.float32)
        twin_name = PurePosixPath(unquote(urlparse(twin.uri).path)).name
        title = twin.title.replace(twin_name, filename) if twin_name else twin.title
        return title, pieces, vectors


def _twin_key(r: _Ready) -> str:
    """Identical bytes chunked into identical texts: the same vectors."""
    texts = hashlib.sha256("\x00".join(p.text for p in r.pieces).encode()).hexdigest()
    return f"{r.digest}:{texts}"


def _title(elements: list[dict[str, Any]], filename: str) -> str:
    for element in elements[:3]:
        if element.get("type") == "Title" and element.get("text", "").strip():
            return f"{element['text'].strip()[:120]} ({filename})"
    return filename
