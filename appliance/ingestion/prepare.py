"""The stages before the write, for one document: plan (is it unchanged?), fetch, parse and
chunk, or take the chunks and vectors of an identical document already indexed at another URI.
They run ahead of the writer on other threads, so the next documents parse while one is embedded."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

import numpy as np

from appliance.domain import (
    EVERYONE,
    ApplianceError,
    Connector,
    ParseError,
    SourceItem,
    content_hash,
    document_id,
)
from appliance.embeddings.base import Embedder
from appliance.ingestion.chunking import TextChunk, chunk_elements
from appliance.ingestion.parsing import ParserPool
from appliance.ingestion.state import DocumentRecord, Ledger
from appliance.vectorstore.base import VectorStore

if TYPE_CHECKING:
    from appliance.ingestion.commit import Writer

# An item that needs no write: (outcome, chunks), e.g. ("unchanged", 0).
Skipped = tuple[str, int]


@dataclass
class Prepared:
    """A parsed and chunked document waiting for its vectors and the writer."""

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


@dataclass(frozen=True)
class Chunking:
    tokens: int
    overlap_tokens: int


class Preparer:
    def __init__(
        self,
        ledger: Ledger,
        store: VectorStore,
        parser: ParserPool,
        embedder: Embedder,
        chunking: Chunking,
        writer: Writer,
    ) -> None:
        self.ledger = ledger
        self.store = store
        self.parser = parser
        self.embedder = embedder
        self.chunking = chunking
        self.writer = writer

    def prepare(
        self,
        connector: Connector,
        item: SourceItem,
        collection: str,
        acl: tuple[str, ...],
        force: bool = False,
    ) -> Skipped | Prepared:
        """Everything before the write: skip checks, fetch, parse, chunk."""
        doc_id = document_id(collection, item.uri)
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
            self.writer.fail(base, exc.message)
            raise
        digest = content_hash(data)
        if current and old and old.content_hash == digest:
            self.ledger.touch_version(doc_id, item.version)
            return "unchanged", 0
        twin = None if force else self._twin_chunks(collection, digest, doc_id, filename)
        vectors: np.ndarray | None = None
        if twin is not None:
            title, pieces, vectors = twin
        else:
            try:
                title, pieces = self._parse(data, filename)
            except ApplianceError as exc:
                self.writer.fail(base, exc.message)
                raise
            # The store's keyword vectors now, on this look-ahead thread, while the embedder works
            # on earlier documents.
            self.store.encode_ahead(collection, [p.text for p in pieces])
        return Prepared(
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

    def _parse(self, data: bytes, filename: str) -> tuple[str, list[TextChunk]]:
        elements = self.parser.parse(data, filename)
        pieces = chunk_elements(
            elements,
            self.embedder.count_tokens,
            self.chunking.tokens,
            self.embedder.max_tokens,
            self.chunking.overlap_tokens,
        )
        if not pieces:
            raise ParseError("no text could be extracted from this document")
        return _title(elements, filename), pieces

    def _twin_chunks(
        self, collection: str, digest: str, doc_id: str, filename: str
    ) -> tuple[str, list[TextChunk], np.ndarray] | None:
        """Identical bytes already indexed at another URI: reuse its chunks and vectors instead
        of parsing and embedding again."""
        twin = self.ledger.find_indexed(collection, digest, exclude=doc_id)
        if twin is None or not twin.chunk_ids:
            return None
        found = self.store.get_with_vectors(collection, twin.chunk_ids)
        if len(found) != len(twin.chunk_ids):
            return None  # the twin is damaged; parse this one from scratch
        found.sort(key=lambda pair: pair[0].index)
        pieces = [TextChunk(c.text, c.page, c.section, c.section_path) for c, _ in found]
        vectors = np.stack([v for _, v in found]).astype(np.float32)
        twin_name = PurePosixPath(unquote(urlparse(twin.uri).path)).name
        title = twin.title.replace(twin_name, filename) if twin_name else twin.title
        return title, pieces, vectors


def _title(elements: list[dict[str, Any]], filename: str) -> str:
    for element in elements[:3]:
        if element.get("type") == "Title" and element.get("text", "").strip():
            return f"{element['text'].strip()[:120]} ({filename})"
    return filename
