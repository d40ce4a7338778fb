"""SQL databases through SQLAlchemy: one document per row of a query.

Columns are found by name (configurable): ``id`` (required, stable), ``title``, ``body``,
``updated_at`` (optional: the version when present, else a hash of title and body) and ``acl``
(optional: ``group:x,user:y`` per row). A row becomes a Markdown document ``# title`` + body,
so the parser finds its title; ``fmt="txt"`` gives plain text instead.

The root is the database URL with the password hidden, plus a hash of the query: a different query
is a different source. ``fetch`` takes the body read during discovery (up to ``CACHE_BYTES``) or
re-reads the one row with ``SELECT * FROM (query) WHERE id = :id``. A row's document over
``max_file_bytes`` fails in ``fetch`` (the driver has already read the row; it is not kept).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from appliance.domain import ApplianceError, FileTooLarge, InvalidRequest, SourceItem

CACHE_BYTES = 64 * 2**20
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")


class SqlError(ApplianceError):
    status, code = 502, "sql_error"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")[:60].lower()


class SqlConnector:
    kind = "sql"

    def __init__(
        self,
        url: str,
        query: str = "",
        table: str = "",
        id_column: str = "id",
        title_column: str = "title",
        body_column: str = "body",
        updated_at_column: str = "updated_at",
        acl_column: str = "acl",
        fmt: str = "md",
        acl: Sequence[str] = (),
        max_file_bytes: int | None = None,
    ) -> None:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            self._url = make_url(url)
        except ArgumentError as exc:
            raise InvalidRequest(f"not a SQLAlchemy database URL: {exc}") from exc
        if not query:
            if not table or not _IDENT.match(table):
                raise InvalidRequest(
                    "a sql source needs a query (--option query='SELECT id, title, body FROM ...') "
                    "or a table name (URL#TABLE)"
                )
            query = f"SELECT * FROM {table}"
        if not _IDENT.match(id_column):
            raise InvalidRequest(f"invalid id column name {id_column!r}")
        if fmt not in ("md", "txt"):
            raise InvalidRequest("fmt must be md or txt")
        self.url = url
        self.query = query
        self.table = table
        self.columns = {
            "id": id_column,
            "title": title_column,
            "body": body_column,
            "updated_at": updated_at_column,
            "acl": acl_column,
        }
        self.fmt = fmt
        self.acl = tuple(acl)
        self.max_file_bytes = max_file_bytes
        shown = self._url.render_as_string(hide_password=True)
        if self._url.drivername == "postgresql":
            # SQLAlchemy's default PostgreSQL driver is psycopg2; the appliance ships psycopg 3.
            self._url = self._url.set(drivername="postgresql+psycopg")
        self.root = f"{shown}?query={hashlib.sha256(query.encode()).hexdigest()[:12]}"
        self._engine: Any = None
        self._cache: dict[str, bytes] = {}

    def options(self) -> dict[str, object]:
        # The URL may hold a password; it is needed to rebuild the connector, so callers that
        # persist options must treat them as secret (or keep the password in the environment).
        return {
            "url": self.url,
            "query": self.query,
            "id_column": self.columns["id"],
            "title_column": self.columns["title"],
            "body_column": self.columns["body"],
            "updated_at_column": self.columns["updated_at"],
            "acl_column": self.columns["acl"],
            "fmt": self.fmt,
            "acl": list(self.acl),
        }

    def hosts(self) -> list[str]:
        return [self._url.host] if self._url.host else []

    def local_paths(self) -> list[Path]:
        """The database file of a SQLite source (none for a server or an in-memory database)."""
        database = self._url.database or ""
        if not self._url.drivername.startswith("sqlite") or database in ("", ":memory:"):
            return []
        if database.startswith("file:"):  # SQLite URI filename (?uri=true): file:/path?mode=ro
            database = unquote(urlsplit(database).path)
        return [Path(database).expanduser().resolve()]

    def close(self) -> None:
        """Close the pooled connections and forget the rows read ahead; a later call reconnects."""
        self._cache.clear()
        engine, self._engine = self._engine, None
        if engine is not None:
            engine.dispose()

    @property
    def engine(self) -> Any:
        if self._engine is None:
            from sqlalchemy import create_engine

            try:
                self._engine = create_engine(self._url, pool_pre_ping=True)
            except Exception as exc:  # a missing driver is an ImportError wrapped or raw
                raise SqlError(f"cannot open {self.root}: {type(exc).__name__}: {exc}") from exc
        return self._engine

    def _rows(self, sql: str, params: Mapping[str, Any] | None = None) -> Iterator[Mapping[str, Any]]:
        from sqlalchemy import text
        from sqlalchemy.exc import SQLAlchemyError

        try:
            with self.engine.connect() as conn:
                result = conn.execution_options(stream_results=True).execute(text(sql), params or {})
                yield from result.mappings()
        except SQLAlchemyError as exc:
            raise SqlError(f"query on {self.root} failed: {str(exc).splitlines()[0]}") from exc

    def _document(self, row: Mapping[str, Any]) -> tuple[str, bytes, str]:
        title = row.get(self.columns["title"])
        body = row.get(self.columns["body"])
        title = "" if title is None else str(title).strip()
        body = "" if body is None else str(body)
        if self.fmt == "md":
            text = f"# {title}\n\n{body}\n" if title else f"{body}\n"
        else:
            text = f"{title}\n\n{body}\n" if title else f"{body}\n"
        return title, text.encode("utf-8"), hashlib.sha256(f"{title}\0{body}".encode()).hexdigest()

    def discover(self) -> Iterator[SourceItem]:
        # Rows are read to the end before the first item is handed out: the pipeline takes
        # minutes per batch, and a cursor held open that long pins a snapshot on the server.
        yield from list(self._scan())

    def _scan(self) -> Iterator[SourceItem]:
        self._cache.clear()
        cached = 0
        id_col = self.columns["id"]
        for row in self._rows(self.query):
            if id_col not in row:
                raise SqlError(f"the query returns no {id_col!r} column (connectors.sql.id_column)")
            if self.columns["body"] not in row:
                raise SqlError(
                    f"the query returns no {self.columns['body']!r} column (connectors.sql.body_column)"
                )
            row_id = str(row[id_col])
            title, data, digest = self._document(row)
            updated = row.get(self.columns["updated_at"])
            version = f"updated:{updated}" if updated is not None else f"sha256:{digest}"
            acl = self.acl
            if raw_acl := row.get(self.columns["acl"]):
                acl = tuple(sorted({p.strip() for p in str(raw_acl).split(",") if p.strip()}))
            uri = f"{self.root}#{row_id}"
            if cached + len(data) <= CACHE_BYTES and not self._too_large(data):
                self._cache[uri] = data
                cached += len(data)
            name = _slug(title) or _slug(row_id) or "row"
            yield SourceItem(
                uri=uri,
                version=version,
                acl=acl,
                metadata={"filename": f"{name}.{self.fmt}", "title": title, "row_id": row[id_col]},
            )

    def _too_large(self, data: bytes) -> bool:
        return self.max_file_bytes is not None and len(data) > self.max_file_bytes

    def fetch(self, item: SourceItem) -> bytes:
        if (data := self._cache.pop(item.uri, None)) is not None:
            return data
        id_col = self.columns["id"]
        row_id = item.metadata.get("row_id", item.uri.rsplit("#", 1)[-1])
        sql = f"SELECT * FROM ({self.query}) AS kb_source WHERE kb_source.{id_col} = :row_id"
        for row in self._rows(sql, {"row_id": row_id}):
            data = self._document(row)[1]
            if self._too_large(data):
                raise FileTooLarge(self.max_file_bytes or 0, len(data))
            return data
        raise SqlError(f"row {row_id} is no longer returned by the query")
