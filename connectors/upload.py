"""Uploaded documents: one file each, stored under a generated name below the upload folder.

Each upload is its own source, so syncing one never deletes another. URI:
``upload://<collection>/<stored name>/<display name>``; the stored name is generated, the display
name (whatever the client sent, cleaned) only titles the document and is never used as a path.

The upload itself is cut off at the file size limit while it is received; ``max_file_bytes``
applies the limit again when it is (re)read, which matters when the setting was lowered since.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from urllib.parse import quote, unquote, urlparse

from appliance.domain import FileTooLarge, InvalidRequest, SourceItem, read_capped

_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")
_SUFFIX = re.compile(r"^\.[a-z0-9]{1,10}$")
_STORED = re.compile(r"[0-9a-f]{32}(\.[a-z0-9]{1,10})?")
_COLLECTION = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")  # as appliance.domain allows


def safe_filename(name: str | None) -> str:
    """A display name from whatever a client sent: its last path component, no control chars."""
    base = PurePosixPath((name or "").replace("\\", "/")).name
    base = _UNSAFE.sub("", base).strip()[:200]
    return base if base and base not in (".", "..") else "upload"


class UploadConnector:
    """One uploaded document, named by its ``upload://`` URI, read from ``upload_dir``."""

    kind = "upload"

    def __init__(self, uri: str, upload_dir: Path | str, max_file_bytes: int | None = None) -> None:
        parsed = urlparse(uri)
        parts = [p for p in parsed.path.split("/") if p]
        if (
            parsed.scheme != "upload"
            or not _COLLECTION.fullmatch(parsed.netloc)
            or len(parts) != 2
            or not _STORED.fullmatch(parts[0])
        ):
            raise InvalidRequest(f"not an upload URI: {uri}")
        self.upload_dir = Path(upload_dir)
        self.path = self.upload_dir / parsed.netloc / parts[0]
        self.root = uri
        self.filename = unquote(parts[1])
        self.max_file_bytes = max_file_bytes

    @classmethod
    def store(
        cls, upload_dir: Path, collection: str, filename: str | None, max_file_bytes: int | None = None
    ) -> tuple[UploadConnector, Path]:
        """A new, empty place for an upload to ``collection``: the connector and the file to write."""
        display = safe_filename(filename)
        suffix = PurePosixPath(display).suffix.lower()
        stored = uuid.uuid4().hex + (suffix if _SUFFIX.match(suffix) else "")
        (upload_dir / collection).mkdir(parents=True, exist_ok=True)
        connector = cls(f"upload://{collection}/{stored}/{quote(display)}", upload_dir, max_file_bytes)
        return connector, connector.path

    @classmethod
    def from_uri(cls, uri: str, upload_dir: Path, max_file_bytes: int | None = None) -> UploadConnector:
        return cls(uri, upload_dir, max_file_bytes)

    # -- the Connector contract ------------------------------------------------------------------

    def options(self) -> dict[str, object]:
        # upload_dir is the data dir's: it comes from the settings again, never from a stored source.
        return {"uri": self.root}

    def hosts(self) -> list[str]:
        return []

    def local_paths(self) -> list[Path]:
        return [self.path]

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

    def close(self) -> None:
        pass  # nothing held open between calls

    # -- uploads only ----------------------------------------------------------------------------

    def remove(self) -> None:
        """Delete the stored file (the document is gone from the index by then)."""
        self.path.unlink(missing_ok=True)
