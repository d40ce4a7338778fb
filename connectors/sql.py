"""SQL databases through SQLAlchemy: one document per row of a query.

Columns are found by name (configurable): ``id`` (required, stable), ``title``, ``body``,
``updated_at`` (optional: the version when present, else a hash of title and body) and ``acl``
(optional: ``group:x,user:y`` per row). A row becomes a Markdown document ``# title`` + body,
so the parser finds its title; ``fmt="txt"`` gives plain text instead.

The root is the database URL with the password hidden, plus a hash of the query: a different query
is a different source. ``fetch`` takes the body read during discovery (up to ``CACHE_BYTES``) or
re-reads the one row with ``SELECT * FROM (query) WHERE id = :id``. A row's document over
``max_file_bytes`` fails in ``fetch`` (the driver has already read the row; it is not kept).

Sources only read, twice over: the query must parse (sqlglot) as one SELECT with no data-changing
or locking part, and every connection is read-only (PostgreSQL ``default_transaction_read_only``
and a read-only transaction, SQLite ``query_only``, MySQL ``TRANSACTION READ ONLY``), which also
stops what a parser can't see (``nextval()``, functions that write). A server's host is resolved
and checked like a web host (``connectors._reach``) and libpq is handed the checked address
(``hostaddr``); connection failures are reported without the driver's text, which names addresses.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from appliance.domain import ApplianceError, FileTooLarge, InvalidRequest, SourceItem
from connectors._reach import Reach

CACHE_BYTES = 64 * 2**20
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")


class SqlError(ApplianceError):
    status, code = 502, "sql_error"


# The sqlglot dialect of each driver a source may use, and so the drivers with a read-only mode.
_DIALECTS = {"sqlite": "sqlite", "postgresql": "postgres", "mysql": "mysql", "mariadb": "mysql"}
# URL query parameters a server source may carry. Others (libpq's host, hostaddr, service,
# options, passfile; MySQL's init_command, read_default_file, unix_socket) would redirect the
# connection, run statements or read local files, so they are refused.
_SERVER_PARAMS = frozenset(
    {"sslmode", "connect_timeout", "application_name", "target_session_attrs", "charset", "ssl_mode"}
)
_DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "mariadb": 3306}


def check_select(query: str, dialect: str) -> None:
    """Refuse a query that is not one plain SELECT (a UNION of them, a CTE): no statement that
    writes, no ``SELECT ... INTO``, no row locks, nothing after a ``;``."""
    import sqlglot
    from sqlglot import exp

    try:
        statements = [s for s in sqlglot.parse(query, read=dialect) if s is not None]
    except sqlglot.errors.SqlglotError as exc:
        raise InvalidRequest(f"the query of a sql source does not parse: {str(exc).splitlines()[0]}") from exc
    if len(statements) != 1:
        raise InvalidRequest("a sql source runs one SELECT statement, not several")
    (statement,) = statements
    if not isinstance(statement, exp.Query):
        raise InvalidRequest(f"a sql source runs SELECT statements only, not {statement.key.upper()}")
    writes = (exp.Insert, exp.Update, exp.Delete, exp.Merge, exp.Create, exp.Drop, exp.Alter, exp.Command)
    for node in statement.walk():
        if isinstance(node, writes):
            raise InvalidRequest(f"a sql source only reads: the query contains {node.key.upper()}")
        if isinstance(node, exp.Into):
            raise InvalidRequest("a sql source only reads: SELECT ... INTO writes a table")
        if isinstance(node, exp.Lock):
            raise InvalidRequest("a sql source only reads: the query locks rows (FOR UPDATE/SHARE)")


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
        allow_private: Sequence[str] = (),
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
        backend = self._url.get_backend_name()
        if backend not in _DIALECTS:
            raise InvalidRequest(
                f"{backend} sources are not supported: sources are read over a read-only connection, "
                f"which the appliance opens for {', '.join(sorted(_DIALECTS))}"
            )
        check_select(query, _DIALECTS[backend])
        if backend != "sqlite":
            if self._url.host and "," in self._url.host:
                raise InvalidRequest("a sql source names one database host")
            refused = sorted(set(self._url.query) - _SERVER_PARAMS)
            if refused:
                raise InvalidRequest(
                    f"a sql source URL may not set {', '.join(refused)}; it may set "
                    f"{', '.join(sorted(_SERVER_PARAMS))}"
                )
        self.reach = Reach(allow_private)
        self.allow_private = list(allow_private)
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
            "allow_private": self.allow_private,
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
            from sqlalchemy import create_engine, event

            url, connect_args = self._url, {}
            backend = url.get_backend_name()
            if backend != "sqlite" and url.host:
                port = url.port or _DEFAULT_PORTS.get(backend, 0)
                address = self.reach.address(url.host, port, f"the database host of {self.root}")
                if backend == "postgresql":
                    # libpq connects to hostaddr and keeps host for TLS and the password file.
                    url = url.update_query_dict({"hostaddr": address})
                    connect_args["options"] = "-c default_transaction_read_only=on"
                else:
                    url = url.set(host=address)
            try:
                engine = create_engine(url, pool_pre_ping=True, connect_args=connect_args)
            except Exception as exc:  # a missing driver is an ImportError wrapped or raw
                raise SqlError(f"cannot open {self.root}: {type(exc).__name__}: {exc}") from exc
            event.listen(engine, "connect", _read_only_on_connect(backend))
            self._engine = engine
        return self._engine

    def _rows(self, sql: str, params: Mapping[str, Any] | None = None) -> Iterator[Mapping[str, Any]]:
        from sqlalchemy import text
        from sqlalchemy.exc import SQLAlchemyError

        engine = self.engine
        try:
            with self.reach.active():  # connecting is what the address rules are about
                conn = engine.connect()
        except SQLAlchemyError as exc:
            # The driver's text names the address it tried and the server's answer.
            raise SqlError(
                f"cannot connect to the database of {self.root} (refused, unreachable or the login failed)"
            ) from exc
        try:
            with conn:
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


def _read_only_on_connect(backend: str) -> Any:
    """A connect hook that makes every new DBAPI connection refuse writes."""

    def hook(dbapi_connection: Any, _record: Any) -> None:
        if backend == "postgresql":
            dbapi_connection.read_only = True  # psycopg: every transaction is BEGIN READ ONLY
        elif backend == "sqlite":
            dbapi_connection.execute("PRAGMA query_only = ON")
        else:
            cursor = dbapi_connection.cursor()
            cursor.execute("SET SESSION TRANSACTION READ ONLY")
            cursor.close()

    return hook
