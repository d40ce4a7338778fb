"""Ingestion: discover -> fetch -> parse -> chunk -> embed -> upsert, recorded in the ledger.

One ``IngestRun`` per sync of a connector into a collection, through these stages:
1. discover and plan (this module): list the source, report refused entries, and after the run
   delete documents the source no longer has;
2. prepare (``prepare.py``): skip unchanged documents, fetch, parse and chunk, on look-ahead
   threads, or reuse an identical document's chunks and vectors;
3. embed (``embed.py``): several documents' chunks in one call;
4. commit (``commit.py``): write in groups, in the crash-safe order below.

Write order per document, chosen so a crash at any point converges on re-run:
1. the ledger records the chunk ids about to be written (``pending``);
2. the new chunks are upserted and flushed (readers see old and new, never nothing);
3. chunks of the previous version (and of any crashed attempt) that are not in the new set are
   deleted and flushed;
4. the ledger commits the new version with its chunk ids.
Chunk ids are deterministic, so repeating any step overwrites instead of duplicating. Documents
go through steps 1-2 one by one and through the flushes and step 4 in groups (a flush of the
shard is costly), and the next documents are parsed while the current one is embedded.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from appliance.domain import (
    EVERYONE,
    ApplianceError,
    Connector,
    SourceItem,
    document_id,
    validate_collection_name,
)
from appliance.embeddings.base import Embedder
from appliance.ingestion.commit import Staged, Writer
from appliance.ingestion.embed import BatchEmbedder
from appliance.ingestion.parsing import ParserPool
from appliance.ingestion.prepare import Chunking, Prepared, Preparer, Skipped
from appliance.ingestion.progress import IngestProgress, IngestReport, Progress
from appliance.ingestion.state import DocumentRecord, Ledger
from appliance.vectorstore.base import VectorStore

__all__ = ["IngestProgress", "IngestReport", "IngestRun", "IngestionService", "Progress"]

log = logging.getLogger(__name__)

# Documents written between two flushes of the store: fewer flushes, and a crash in a group
# still converges (every id is announced in the ledger before it is written).
GROUP_DOCS = 16
GROUP_SECONDS = 2.0
# Chunks written between two index builds of the store within one run. Edge builds its HNSW
# index only when asked and holds the GIL meanwhile: building every 10k chunks keeps each stall
# of a serving process short instead of one long one at the end of a bulk load.
OPTIMIZE_EVERY_CHUNKS = 10_000
# Documents prepared ahead of the writer beyond one per parser, so that several can be embedded
# in one call, and the chunk count one call takes from the documents already waiting.
EMBED_AHEAD_DOCS = 3
EMBED_BATCH_CHUNKS = 64


class IngestionService:
    """The stages, built once; ``ingest`` runs them over one source."""

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
        self.writer = Writer(store, ledger)
        self.preparer = Preparer(
            ledger, store, parser, embedder, Chunking(chunk_tokens, overlap_tokens), self.writer
        )
        self.embedding = BatchEmbedder(embedder, parser.size)

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

        An item's readers: its own (source metadata) when it has any, else ``acl`` when given (the
        whole run), else ``default_acl`` (the collection's), else every signed-in user. ``acl``
        replaces an item's own rule only to narrow it (``readers``): a run never widens it."""
        validate_collection_name(collection)
        if progress is None or not isinstance(progress, IngestProgress):
            progress = IngestProgress(listener=progress)
        run = IngestRun(self, connector, collection, tuple(acl), tuple(default_acl), force, progress, cancel)
        return run.run(items)

    def remove_document(self, rec: DocumentRecord) -> None:
        self.writer.remove(rec)

    def warm_parser(self) -> None:
        try:
            self.parser.start()
        except ApplianceError:
            log.exception("parser workers did not start; parsing will retry")


def run_readers(run: tuple[str, ...], own: tuple[str, ...], default: tuple[str, ...]) -> tuple[str, ...]:
    """Who may read an item. A source's own rule (S3 ``x-amz-meta-acl``, a SQL ``acl`` column) is
    the owner's word on that item; a run's ``allow`` may narrow it (a subset of its principals, or
    anything when it is ``*``) but not replace it with another, possibly wider, set of readers."""
    if own and run and not ("*" in own or set(run) <= set(own)):
        return own
    return run or own or default


def narrows(old: Sequence[str], new: Sequence[str]) -> bool:
    """Whether readers ``new`` leave out someone ``old`` let in (``*``: every signed-in user)."""
    if EVERYONE in new:
        return False
    return EVERYONE in old or not set(old) <= set(new)


@dataclass
class IngestRun:
    """One sync: its options, what discovery listed, the documents being prepared ahead, the
    group waiting for its commit, and the report."""

    service: IngestionService
    connector: Connector
    collection: str
    acl: tuple[str, ...]
    default_acl: tuple[str, ...]
    force: bool
    progress: IngestProgress
    cancel: threading.Event | None
    report: IngestReport = field(default_factory=IngestReport)
    listed: list[SourceItem] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)  # document ids the source still has
    queued: dict[int, Future[Skipped | Prepared]] = field(default_factory=dict)
    group: list[tuple[SourceItem, Staged]] = field(default_factory=list)
    group_started: float = 0.0
    unindexed: int = 0  # chunks written since the last index build

    @property
    def cancelled(self) -> bool:
        return self.cancel is not None and self.cancel.is_set()

    def run(self, items: Iterable[SourceItem] | None) -> IngestReport:
        started = time.monotonic()
        svc = self.service
        # Warm the parser processes while the embedding model loads: the two overlap.
        threading.Thread(target=svc.warm_parser, name="appliance-parser-warm", daemon=True).start()
        svc.embedder.start()
        svc.store.ensure_collection(self.collection, svc.embedder.dim)
        self.discover(items)
        lookahead = max(1, svc.parser.size)
        ahead = ThreadPoolExecutor(max_workers=lookahead, thread_name_prefix="ingest-prepare")
        try:
            for position, item in enumerate(self.listed):
                if self.cancelled:
                    self.report.cancelled = True
                    break
                for index in range(position, position + 1 + lookahead + EMBED_AHEAD_DOCS):
                    self._schedule(ahead, index)
                self._take(position, item)
                if self.group and (
                    len(self.group) >= GROUP_DOCS
                    or time.monotonic() - self.group_started >= GROUP_SECONDS
                    or position == len(self.listed) - 1
                ):
                    self._commit_group()
            self._commit_group()
        finally:
            for future in self.queued.values():
                future.cancel()
            ahead.shutdown(wait=True)
        self.progress.current = None
        if items is None and not self.report.cancelled:
            self._delete_gone()
        if self.unindexed or self.report.deleted:
            svc.store.optimize(self.collection)
        self.report.elapsed_s = time.monotonic() - started
        return self.report

    # -- stage 1: discover and plan ----------------------------------------------------------------

    def discover(self, items: Iterable[SourceItem] | None) -> None:
        """List everything first: a total makes an ETA possible, and only a complete discovery
        may conclude that a document is gone from the source. Refused entries are reported as
        failed and never fetched; their indexed copy stays, as for any failure."""
        refused: list[SourceItem] = []
        self.progress.discovering = True
        for item in items if items is not None else self.connector.discover():
            (refused if item.refused else self.listed).append(item)
            self.progress.seen += 1
            if self.progress.seen % 100 == 0:
                self.progress.emit("discovering")
            if self.cancelled:
                break
        self.progress.discovering = False
        self.progress.emit("discovered")
        for item in refused:
            self.seen.add(document_id(self.collection, item.uri))
            self._failed(item, ApplianceError(item.refused or "refused by its source"))

    def _delete_gone(self) -> None:
        for rec in self.service.ledger.for_source(self.collection, self.connector.root):
            if rec.id not in self.seen:
                self.service.remove_document(rec)
                self.report.deleted += 1

    # -- stage 2: prepare, ahead of the writer ---------------------------------------------------

    def _schedule(self, ahead: ThreadPoolExecutor, index: int) -> None:
        if index < len(self.listed) and index not in self.queued:
            item = self.listed[index]
            readers = run_readers(self.acl, tuple(item.acl), self.default_acl)
            self.queued[index] = ahead.submit(
                self.service.preparer.prepare, self.connector, item, self.collection, readers, self.force
            )

    def _take(self, position: int, item: SourceItem) -> None:
        """The document at ``position``: wait for its preparation, embed it (with the next ones
        already prepared), and stage it in the group."""
        self.seen.add(document_id(self.collection, item.uri))
        self.progress.current = item.uri
        self.progress.emit("start", item)
        try:
            prepared = self.queued.pop(position).result()
            if isinstance(prepared, tuple):
                self._succeeded(item, *prepared)
                return
            # -- stage 3: embed --
            if prepared.vectors is None:
                parsing = sum(1 for f in self.queued.values() if not f.done())
                self.service.embedding.embed([prepared, *self._ready_ahead(position)], parsing)
            # -- stage 4: write (committed with its group) --
            if not self.group:
                self.group_started = time.monotonic()
            self.group.append((item, self.service.writer.stage(prepared)))
        except Exception as exc:  # one bad document must not stop the job
            self._failed(item, exc)

    def _ready_ahead(self, position: int) -> list[Prepared]:
        """The next documents already parsed and chunked, in order, up to EMBED_BATCH_CHUNKS
        chunks: embedded together with the current one. Never waits for a parse."""
        out: list[Prepared] = []
        chunks = 0
        index = position + 1
        while index in self.queued and self.queued[index].done() and chunks < EMBED_BATCH_CHUNKS:
            future = self.queued[index]
            if future.exception() is not None:
                break
            ready = future.result()
            if isinstance(ready, Prepared) and ready.vectors is None:
                out.append(ready)
                chunks += len(ready.pieces)
            index += 1
        return out

    # -- stage 4: commit -------------------------------------------------------------------------

    def _commit_group(self) -> None:
        staged = list(self.group)
        self.group.clear()
        try:
            self.service.writer.commit([s for _, s in staged])
        except Exception as exc:  # the whole group is retried by the next sync
            for item, _ in staged:
                self._failed(item, exc)
            return
        for item, s in staged:
            self._succeeded(item, s.outcome, s.n)
        self.unindexed += sum(s.n for _, s in staged)
        if self.unindexed >= OPTIMIZE_EVERY_CHUNKS:
            self.service.store.optimize(self.collection)
            self.unindexed = 0

    # -- outcomes --------------------------------------------------------------------------------

    def _fail_closed(self, item: SourceItem) -> str:
        """A failed or refused item keeps its indexed copy, unless its source now lets fewer people
        read it than that copy does: then the copy is deleted (chunks and ledger row), since it can
        be neither updated nor left readable under the old, wider rule. Returns what to add to the
        item's error."""
        rec = self.service.ledger.get(document_id(self.collection, item.uri))
        readers = run_readers(self.acl, tuple(item.acl), self.default_acl)
        if rec is None or not narrows(rec.acl, sorted(readers) if readers else [EVERYONE]):
            return ""
        try:
            self.service.remove_document(rec)
        except Exception:  # the store is down too: the copy can't be read through it either
            log.exception("could not remove %s after its readers narrowed", item.uri)
            return "; its readers were narrowed and its indexed copy could not be removed (retried next sync)"
        self.report.deleted += 1
        log.warning("removed the indexed copy of %s: its source narrowed who may read it", item.uri)
        return "; its source narrowed who may read it, so its indexed copy was removed"

    def _succeeded(self, item: SourceItem, outcome: str, n: int) -> None:
        if outcome == "reused":
            self.report.reused += 1
            outcome = "added"
        setattr(self.report, outcome, getattr(self.report, outcome) + 1)
        self.report.chunks += n
        self.progress.done += 1
        self.progress.chunks += n
        self.progress.emit(outcome, item)

    def _failed(self, item: SourceItem, exc: BaseException) -> None:
        if isinstance(exc, ApplianceError):
            reason = exc.message
            log.warning("failed %s: %s", item.uri, reason)
        else:
            reason = f"{type(exc).__name__}: {exc}"[:2000]
            log.error("failed %s", item.uri, exc_info=exc)
        reason += self._fail_closed(item)
        self.report.failed.append({"uri": item.uri, "error": reason})
        self.progress.failed += 1
        self.progress.emit("failed", item)
