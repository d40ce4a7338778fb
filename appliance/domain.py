"""Domain types shared by every layer. Imports nothing from the rest of the appliance."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    import numpy as np

# Namespace for deterministic ids: the same (collection, uri) is always the same document, and the
# same (document, position, content) is always the same point, so a re-run overwrites.
ID_NAMESPACE = uuid.UUID("6f1c9a52-5a8e-4d0e-9b7e-3f7d2a1c0b11")

EVERYONE = "*"  # ACL token meaning "every signed-in user"


def document_id(collection: str, uri: str) -> str:
    return str(uuid.uuid5(ID_NAMESPACE, f"{collection}\n{uri}"))


def chunk_id(doc_id: str, index: int, content_hash: str) -> str:
    return str(uuid.uuid5(ID_NAMESPACE, f"{doc_id}\n{index}\n{content_hash}"))


def content_hash(data: bytes | str) -> str:
    if isinstance(data, str):
        data = data.encode("utf-8")
    return hashlib.sha256(data).hexdigest()


# --- sources ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceItem:
    """One document a connector can fetch. ``version`` changes whenever the content may have.

    ``refused``: the reason a connector will not read this entry at all (a symlink out of its
    root, a FIFO); the pipeline reports it as failed with that reason and never fetches it."""

    uri: str
    version: str
    acl: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)
    refused: str | None = None


class Connector(Protocol):
    """A source of documents: what every connector does, and all a caller may ask of one.

    - ``kind``: the registry name (filesystem, upload, web, s3, git, sql).
    - ``root``: identifies the source stably across runs (the ledger groups documents by it).
    - ``discover()``: what the source holds now, including entries it refuses to read
      (``SourceItem.refused`` set), so that every entry ends with a reason. ``version`` changes
      whenever the content may have (mtime+size, ETag, blob id, a row's hash).
    - ``fetch(item)``: the bytes of an item that is not refused. A connector built with
      ``max_file_bytes`` checks the size its source declares before reading and reads at most that
      much, raising ``FileTooLarge`` (a web page over it fails with the reason likewise).
    - ``options()``: JSON-serialisable; rebuilds the connector (``ConnectorFactory.rebuild``).
      Secrets (S3 keys) and ``max_file_bytes`` are left out and come from the settings again.
    - ``hosts()``: the network hosts it will connect to (egress is widened for them, or refused).
    - ``local_paths()``: the files or folders of this host it will read (checked before a curator
      may use it, and against the data directory).
    - ``close()``: releases clients and connections; idempotent, and cheap when nothing is open.
    Constructors are cheap: nothing is opened before the first ``discover`` or ``fetch``.
    """

    kind: str
    root: str

    def discover(self) -> Iterator[SourceItem]: ...

    def fetch(self, item: SourceItem) -> bytes: ...

    def options(self) -> dict[str, Any]: ...

    def hosts(self) -> list[str]: ...

    def local_paths(self) -> list[Path]: ...

    def close(self) -> None: ...


# --- documents and chunks -----------------------------------------------------------------------


@dataclass
class Chunk:
    id: str
    document_id: str
    collection: str
    uri: str
    title: str
    text: str
    index: int
    page: int | None = None
    section: str | None = None
    content_hash: str = ""
    version: str = ""
    acl: tuple[str, ...] = (EVERYONE,)
    section_path: tuple[str, ...] = ()  # headings from the outermost down to this chunk's section
    # Where the document came from (the root a connector walked) and when it last changed (epoch
    # seconds), so searches can be narrowed by source and by date.
    source: str = ""
    modified: float | None = None

    def payload(self) -> dict[str, Any]:
        return {
            "document_id": self.document_id,
            "collection": self.collection,
            "uri": self.uri,
            "title": self.title,
            "text": self.text,
            "index": self.index,
            "page": self.page,
            "section": self.section,
            "content_hash": self.content_hash,
            "version": self.version,
            "acl": list(self.acl),
            "section_path": list(self.section_path),
            "source": self.source,
            "modified": self.modified,
        }

    @classmethod
    def from_payload(cls, point_id: str, payload: dict[str, Any]) -> Chunk:
        return cls(
            id=point_id,
            document_id=payload["document_id"],
            collection=payload["collection"],
            uri=payload["uri"],
            title=payload.get("title", ""),
            text=payload.get("text", ""),
            index=int(payload.get("index", 0)),
            page=payload.get("page"),
            section=payload.get("section"),
            content_hash=payload.get("content_hash", ""),
            version=payload.get("version", ""),
            acl=tuple(payload.get("acl", (EVERYONE,))),
            section_path=tuple(payload.get("section_path", ())),
            source=payload.get("source", ""),
            modified=payload.get("modified"),
        )


@dataclass
class ScoredChunk:
    """A search hit. ``vector``: the chunk's stored dense vector, when the search was asked for it
    (``VectorStore.search(..., with_vectors=True)``), so relevance needs no second store call."""

    chunk: Chunk
    score: float
    vector: np.ndarray | None = None


@dataclass
class Citation:
    index: int
    title: str
    uri: str
    page: int | None
    chunk_id: str
    score: float
    text: str
    document_id: str = ""
    section: str | None = None
    snippet: str = ""  # the part of ``text`` that best matches the question (or its opening)

    @classmethod
    def from_hit(cls, index: int, hit: ScoredChunk, snippet: str = "") -> Citation:
        c = hit.chunk
        return cls(
            index,
            c.title,
            c.uri,
            c.page,
            c.id,
            round(hit.score, 6),
            c.text,
            c.document_id,
            c.section,
            snippet or c.text[:240],
        )


# --- who is asking ------------------------------------------------------------------------------

Role = Literal["admin", "curator", "employee", "app"]


@dataclass(frozen=True)
class Principal:
    name: str
    role: Role
    groups: tuple[str, ...] = ()
    # Set when the caller authenticated with an API key: its id (for metering) and its scopes
    # (None: unrestricted). See appliance/security/auth.py.
    key_id: int | None = None
    collections: tuple[str, ...] | None = None
    routes: tuple[str, ...] | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def acl_tokens(self) -> list[str]:
        """The ACL entries that grant this principal access."""
        return [EVERYONE, f"user:{self.name}", *(f"group:{g}" for g in self.groups)]


LOCAL_ADMIN = Principal(name="admin", role="admin")


# --- errors -------------------------------------------------------------------------------------


class ApplianceError(Exception):
    """Base of the typed errors; ``status`` and ``code`` become the JSON error of the API."""

    status = 500
    code = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(ApplianceError):
    status, code = 400, "invalid_request"


class Unauthenticated(ApplianceError):
    status, code = 401, "unauthenticated"


class Forbidden(ApplianceError):
    status, code = 403, "forbidden"


class NotFound(ApplianceError):
    status, code = 404, "not_found"


class Conflict(ApplianceError):
    status, code = 409, "conflict"


class PayloadTooLarge(ApplianceError):
    status, code = 413, "payload_too_large"


MAX_FILE_SETTING = "ingestion.max_file_mb"


class FileTooLarge(PayloadTooLarge):
    """A document over the file size limit, refused before (or while) it is read.

    ``size``: what the source declares, or None when it only showed while reading."""

    def __init__(self, limit: int, size: int | None = None) -> None:
        found = f"is {size / 2**20:.1f} MiB" if size is not None else "grew past the limit while being read"
        super().__init__(
            f"file {found}, over the {round(limit / 2**20, 3):g} MiB limit ({MAX_FILE_SETTING}); not read"
        )
        self.limit = limit
        self.size = size


def read_capped(read: Callable[[int], bytes], limit: int | None, block: int = 2**20) -> bytes:
    """Read a stream to its end with ``read(n)``, but never more than ``limit`` bytes: one byte
    past it raises ``FileTooLarge``. For sources whose declared size may be stale or a lie."""
    parts: list[bytes] = []
    total = 0
    while True:
        want = block if limit is None else min(block, limit + 1 - total)
        part = read(want)
        if not part:
            return b"".join(parts)
        total += len(part)
        if limit is not None and total > limit:
            raise FileTooLarge(limit)
        parts.append(part)


class Overloaded(ApplianceError):
    status, code = 429, "overloaded"

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unavailable(ApplianceError):
    status, code = 503, "unavailable"


class ParseError(ApplianceError):
    """A document could not be parsed; the message is the reason shown to the admin."""

    status, code = 422, "parse_failed"


class ModelNotFound(ApplianceError):
    status, code = 503, "model_not_found"


_COLLECTION_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


def validate_collection_name(name: str) -> str:
    """Collection names become directory names: keep them to a safe alphabet."""
    if not name or len(name) > 64 or not set(name) <= _COLLECTION_CHARS or name[0] in "-_":
        raise InvalidRequest(
            f"invalid collection name {name!r}: use 1-64 letters, digits, '-' or '_', starting with a letter or digit"
        )
    return name
