"""A document's original file and a text preview of it, for its readers only.

A document the caller may not read does not exist for them (404, the same answer as for an id
nobody has). The original is read again from where the appliance keeps or found it, through the
connector that ingested it, so the same checks apply as at ingestion: a folder's file must still
be a regular file inside its source root (no symlink swapped in), an upload must still be in the
upload folder, and neither may have grown past ``ingestion.max_file_mb``. Documents of other
sources (web, S3, git, SQL) are not kept by the appliance: 404 with that reason.

The preview is the document as the index holds it: its chunks in order, as text, with the
overlap between neighbouring chunks shown once. It never carries the document's own markup.
"""

from __future__ import annotations

import mimetypes
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import unquote, urlparse

from appliance.domain import InvalidRequest, NotFound, Principal, SourceItem
from appliance.ingestion.connect import ConnectorFactory
from appliance.ingestion.state import DocumentRecord
from appliance.security.acl import can_read

# Shown in the browser as they are; everything else is downloaded (an HTML or SVG original
# opened inline would run its scripts as this site).
INLINE_TYPES = frozenset({"application/pdf", "text/plain"})
TEXT_SUFFIXES = frozenset({".txt", ".md", ".markdown", ".csv", ".tsv", ".log", ".json", ".yaml", ".yml"})
MIN_OVERLAP = 16  # characters a chunk must repeat of the previous one to count as overlap


@dataclass(frozen=True)
class OriginalFile:
    filename: str
    media_type: str
    data: bytes
    inline: bool
    version: str


@dataclass(frozen=True)
class PreviewPart:
    chunk_id: str
    text: str
    page: int | None
    section: str | None


@dataclass(frozen=True)
class Preview:
    document_id: str
    title: str
    version: str
    updated_at: str | None
    parts: list[PreviewPart]


class Originals:
    def __init__(self, connectors: ConnectorFactory, ledger: Any, store: Any) -> None:
        self.connectors = connectors
        self.ledger = ledger
        self.store = store

    def readable(self, principal: Principal, doc_id: str) -> DocumentRecord:
        rec = self.ledger.get(doc_id)
        if rec is None or not can_read(principal, rec.collection, rec.acl):
            raise NotFound(f"no document {doc_id!r}")
        return rec  # type: ignore[no-any-return]

    def original(self, principal: Principal, doc_id: str) -> OriginalFile:
        rec = self.readable(principal, doc_id)
        scheme = urlparse(rec.uri).scheme
        fetch: Callable[[SourceItem], bytes]
        if scheme == "upload":
            try:
                upload = self.connectors.upload(rec.uri)
            except InvalidRequest:
                raise NotFound(f"the original of document {doc_id!r} is not kept by the appliance") from None
            fetch, filename = upload.fetch, upload.filename
        elif scheme == "file":
            if not rec.source.startswith("file://"):
                raise NotFound(f"the original of document {doc_id!r} is not kept by the appliance")
            try:
                fetch = self.connectors.for_source(rec.source).fetch
            except InvalidRequest:
                raise NotFound(f"the source folder of document {doc_id!r} is gone") from None
            filename = PurePosixPath(unquote(urlparse(rec.uri).path)).name
        else:
            raise NotFound(
                f"the original of document {doc_id!r} is not kept by the appliance "
                f"({scheme or 'unknown'} source): open it at its source"
            )
        try:
            data = fetch(SourceItem(uri=rec.uri, version=rec.version))
        except FileNotFoundError:
            raise NotFound(f"the original file of document {doc_id!r} is gone") from None
        except (InvalidRequest, OSError) as exc:
            raise NotFound(f"the original file of document {doc_id!r} cannot be read: {exc}") from None
        media_type = _media_type(filename)
        return OriginalFile(filename, media_type, data, media_type in INLINE_TYPES, rec.version)

    def preview(self, principal: Principal, doc_id: str) -> Preview:
        rec = self.readable(principal, doc_id)
        chunks = sorted(self.store.get(rec.collection, rec.chunk_ids), key=lambda c: c.index)
        parts: list[PreviewPart] = []
        previous = ""
        for chunk in chunks:
            text = chunk.text[overlap(previous, chunk.text) :]
            parts.append(PreviewPart(chunk.id, text, chunk.page, chunk.section))
            previous = chunk.text
        return Preview(
            rec.id,
            rec.title,
            rec.version,
            rec.updated_at.isoformat() if rec.updated_at else None,
            parts,
        )


def version_label(version: str) -> str:
    """A document version for people: a file's ``<mtime ns>-<size>`` as its modification time,
    anything else (a commit id, an ETag) shortened."""
    found = re.fullmatch(r"(\d{12,})-(\d+)", version or "")
    if found:
        stamp = datetime.fromtimestamp(int(found.group(1)) / 1e9, tz=UTC)
        return stamp.strftime("%Y-%m-%d %H:%M UTC")
    version = " ".join((version or "").split())
    return version if len(version) <= 16 else version[:15] + "…"


def _media_type(filename: str) -> str:
    suffix = PurePosixPath(filename).suffix.lower()
    if suffix in TEXT_SUFFIXES:
        return "text/plain"  # shown as text, never interpreted (Markdown included)
    return mimetypes.guess_type(filename)[0] or "application/octet-stream"


def overlap(previous: str, text: str) -> int:
    """How many leading characters of ``text`` repeat the end of ``previous`` (chunking carries
    the last sentences of a piece into the next one); 0 when fewer than ``MIN_OVERLAP``."""
    longest = min(len(previous), len(text))
    for size in range(longest, MIN_OVERLAP - 1, -1):
        if previous.endswith(text[:size]):
            return size
    return 0
