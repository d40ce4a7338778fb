"""Alembic migrations of the metadata DB, applied by ``appliance.db.make_engine`` on every open.

``upgrade(engine)`` is idempotent and safe with several processes starting at once: on PostgreSQL
they queue on a transaction-level advisory lock (released by the commit, or by the server if the
process dies), on SQLite on an exclusive file lock beside the database. The first one upgrades;
the others find the schema at head.

A database made before migrations existed (our tables, no ``alembic_version``) is adopted: its
tables must hold the baseline's columns, the tables its release did not have yet are created, and
it is stamped at the newest revision whose added columns it already has before the upgrade runs.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from types import ModuleType

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, Engine, MetaData, Table, func, inspect, select

log = logging.getLogger(__name__)
# Alembic logs its context at INFO on every check of the revision; this module logs the upgrades.
if logging.getLogger("alembic").level == logging.NOTSET:
    logging.getLogger("alembic").setLevel(logging.WARNING)

SCRIPT_LOCATION = "appliance:migrations"
BASELINE = "0001"
# Advisory lock id, any bigint: this one is "kbapp-db" in ASCII, unlikely to meet another user's.
PG_LOCK_KEY = 0x6B62_6170_702D_6462


class SchemaMismatch(RuntimeError):
    """The database holds the appliance's tables in a shape no release made."""


def alembic_config(connection: Connection | None = None) -> Config:
    """The Alembic configuration, built in code (no alembic.ini ships with the package)."""
    cfg = Config()
    cfg.set_main_option("script_location", SCRIPT_LOCATION)
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


@lru_cache(maxsize=1)
def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head() -> str:
    """The newest revision."""
    rev = _scripts().get_current_head()
    assert rev is not None, "no revisions under appliance/migrations/versions"
    return rev


def current(connection: Connection) -> str | None:
    """The revision the database is at; None before migrations (empty, or made by an old release)."""
    return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine) -> None:
    """Bring the schema to head (a no-op, without taking the lock, when it is there already)."""
    with engine.connect() as conn:
        if current(conn) == head():
            return
    with migration_lock(engine) as conn:
        cfg = alembic_config(conn)
        found = current(conn)
        if found is not None and not _known(found):
            raise SchemaMismatch(
                f"the metadata DB is at revision {found}, which this release does not know (its newest "
                f"is {head()}): a newer release upgraded it; run that one, or restore a backup"
            )
        if found is None and (start := _adopt(conn)) is not None:
            log.info("metadata DB from before migrations: stamped at revision %s", start)
            command.stamp(cfg, start)
            found = start
        if found == head():
            return
        if found is None:
            log.debug("metadata DB: creating the schema (revision %s)", head())
        else:
            log.info("metadata DB: upgrading from revision %s to %s", found, head())
        command.upgrade(cfg, "head")


def _known(rev: str) -> bool:
    try:
        return _scripts().get_revision(rev) is not None
    except CommandError:
        return False


@contextmanager
def migration_lock(engine: Engine) -> Iterator[Connection]:
    """One connection in one transaction, held by one process at a time."""
    match engine.dialect.name:
        case "postgresql":
            with engine.begin() as conn:
                conn.execute(select(func.pg_advisory_xact_lock(PG_LOCK_KEY)))
                yield conn
        case "sqlite":
            database = engine.url.database
            if not database or database == ":memory:" or engine.url.query.get("uri"):
                with engine.begin() as conn:  # private to this process, or read-only
                    yield conn
                return
            # A file of its own: opening and closing the database file itself would drop the
            # POSIX locks SQLite holds on it in this process.
            fd = os.open(Path(f"{database}-migrate.lock"), os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                with engine.begin() as conn:
                    yield conn
            finally:
                os.close(fd)  # releases the lock
        case other:
            raise RuntimeError(f"unsupported metadata database {other!r}: use SQLite or PostgreSQL")


def _revision_module(rev: str) -> ModuleType:
    script = _scripts().get_revision(rev)
    assert script is not None, rev
    return script.module


def _adopt(conn: Connection) -> str | None:
    """Check and complete a database made before migrations; the revision it is at, or None when
    it holds none of the appliance's tables (an empty database: the baseline creates them)."""
    baseline = MetaData()
    for name, items in _revision_module(BASELINE).tables().items():
        Table(name, baseline, *items)
    have = set(inspect(conn).get_table_names())
    present = [t for t in baseline.sorted_tables if t.name in have]
    if not present:
        return None
    problems = []
    for table in present:
        columns = {c["name"] for c in inspect(conn).get_columns(table.name)}
        if lacking := [c.name for c in table.columns if c.name not in columns]:
            problems.append(f"{table.name} lacks {', '.join(lacking)}")
    if problems:
        raise SchemaMismatch(
            "the metadata DB was made by no known release (" + "; ".join(problems) + "): restore it "
            "from a backup, or move it aside to start empty"
        )
    # Tables and indexes an older release did not have yet (create_all never altered a table).
    baseline.create_all(conn, checkfirst=True)
    for table in present:
        for index in table.indexes:
            index.create(conn, checkfirst=True)
    columns_now = inspect(conn)
    at = BASELINE
    for script in reversed(list(_scripts().walk_revisions(BASELINE, "head"))):
        if script.revision == BASELINE:
            continue
        adds: dict[str, tuple[str, ...]] | None = getattr(script.module, "ADDS", None)
        if adds is None:
            break  # a change made after migrations existed: no old database can have it
        if not all(
            set(cols) <= {c["name"] for c in columns_now.get_columns(table)} for table, cols in adds.items()
        ):
            break
        at = script.revision
    return at
