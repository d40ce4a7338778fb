"""Alembic migrations of the metadata DB on SQLite and PostgreSQL: a new database, databases made
by releases before migrations (upgraded in place, rows kept), one no release made (refused), two
processes starting at once, and the way back down."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from appliance.db import make_engine, metadata
from appliance.migrations import SchemaMismatch, alembic_config, current, head, migration_lock
from appliance.security.auth import KeyStore
from appliance.security.identity import IdentityStore

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2025, 3, 1, 9, 30, tzinfo=UTC)


def schema_drift(engine: sa.Engine) -> list:
    """What differs between the database and the tables in appliance/db.py (empty: nothing)."""
    with engine.connect() as conn:
        return compare_metadata(MigrationContext.configure(conn), metadata)


def columns(engine: sa.Engine, table: str) -> set[str]:
    return {c["name"] for c in sa.inspect(engine).get_columns(table)}


def revision(engine: sa.Engine) -> str | None:
    with engine.connect() as conn:
        return current(conn)


# -- the schemas of releases before migrations, written out by hand ---------------------------------


def skeleton_tables(meta: sa.MetaData) -> None:
    """The walking skeleton's database: documents and api_keys only, keys without scopes."""
    ts = sa.DateTime(timezone=True)
    sa.Table(
        "documents",
        meta,
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("collection", sa.String(64), nullable=False, index=True),
        sa.Column("source", sa.Text, nullable=False, index=True),
        sa.Column("uri", sa.Text, nullable=False),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("version", sa.Text, nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),  # not indexed yet
        sa.Column("acl", sa.JSON, nullable=False),
        sa.Column("chunk_ids", sa.JSON, nullable=False),
        sa.Column("pending_chunk_ids", sa.JSON, nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("updated_at", ts, nullable=False),
    )
    sa.Table(
        "api_keys",
        meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("prefix", sa.String(16), nullable=False, index=True),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("user", sa.String(128), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("revoked_at", ts, nullable=True),
    )


def old_collections_table(meta: sa.MetaData) -> None:
    """collections as the RAG release made it, before owners."""
    sa.Table(
        "collections",
        meta,
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("default_acl", sa.JSON, nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def fill_old_rows(engine: sa.Engine, tables: Mapping[str, sa.Table]) -> None:
    with engine.begin() as conn:
        conn.execute(
            tables["documents"]
            .insert()
            .values(
                id="doc-1",
                collection="hr",
                source="/kb",
                uri="/kb/leave.md",
                title="Leave",
                version="7",
                content_hash="ab" * 32,
                acl=["group:hr"],
                chunk_ids=["c1", "c2"],
                status="indexed",
                updated_at=T0,
            )
        )
        conn.execute(
            tables["api_keys"]
            .insert()
            .values(prefix="kb-oldkey", key_hash="cd" * 32, user="admin", role="admin", created_at=T0)
        )
        if "collections" in tables:
            conn.execute(
                tables["collections"]
                .insert()
                .values(name="hr", default_acl=["group:hr"], description="HR", created_at=T0)
            )


def assert_old_rows_survived(engine: sa.Engine) -> None:
    with engine.connect() as conn:
        doc = conn.execute(sa.select(metadata.tables["documents"])).one()._mapping
        key = conn.execute(sa.select(metadata.tables["api_keys"])).one()._mapping
    assert (doc["id"], doc["title"], doc["acl"], doc["chunk_ids"]) == (
        "doc-1",
        "Leave",
        ["group:hr"],
        ["c1", "c2"],
    )
    assert doc["updated_at"].replace(tzinfo=UTC) == T0
    assert (key["prefix"], key["key_hash"], key["role"]) == ("kb-oldkey", "cd" * 32, "admin")
    assert (key["collections"], key["routes"], key["expires_at"]) == (None, None, None)


@pytest.fixture()
def migration_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="appliance.migrations")
    return caplog


# -- tests ------------------------------------------------------------------------------------------


def test_a_new_database_gets_every_revision_and_matches_the_tables(db_url: str) -> None:
    engine = make_engine(db_url)
    assert revision(engine) == head() == "0006"
    assert schema_drift(engine) == []
    make_engine(db_url)  # a second start changes nothing
    with engine.connect() as conn:
        assert conn.execute(sa.text("select version_num from alembic_version")).scalars().all() == [head()]


def test_the_skeletons_database_is_upgraded_in_place(
    db_url: str, migration_log: pytest.LogCaptureFixture
) -> None:
    raw = make_engine(db_url, migrate=False)
    old = sa.MetaData()
    skeleton_tables(old)
    old.create_all(raw)
    fill_old_rows(raw, old.tables)
    assert "collections" not in columns(raw, "api_keys")

    engine = make_engine(db_url)
    assert "stamped at revision 0001" in migration_log.text
    assert revision(engine) == head()
    assert {"collections", "routes", "expires_at"} <= columns(engine, "api_keys")
    assert "owners" in columns(engine, "collections")  # created at the baseline, then migrated
    # Nothing left between the tables and the code: the index the skeleton lacked is there too.
    assert schema_drift(engine) == []
    assert_old_rows_survived(engine)
    # The stores work on the upgraded database: a scoped, expiring key.
    IdentityStore(engine).add_user("ann", "employee")
    keys = KeyStore(engine)
    issued = keys.create("ann", "employee", collections=["hr"], expires_days=1)
    assert keys.authenticate(issued.key).collections == ("hr",)


def test_a_database_with_key_scopes_but_no_owners_is_stamped_past_the_scopes(
    db_url: str, migration_log: pytest.LogCaptureFixture
) -> None:
    """A release after key scopes, before collection owners: today's tables but collections.owners."""
    raw = make_engine(db_url, migrate=False)
    old = sa.MetaData()
    old_collections_table(old)
    old.create_all(raw)
    for table in metadata.sorted_tables:
        if table.name != "collections":
            table.create(raw)
    fill_old_rows(raw, {**metadata.tables, **old.tables})

    engine = make_engine(db_url)
    assert "stamped at revision 0002" in migration_log.text
    assert revision(engine) == head()
    assert schema_drift(engine) == []
    assert_old_rows_survived(engine)
    with engine.connect() as conn:
        row = conn.execute(sa.select(metadata.tables["collections"])).one()._mapping
    assert (row["name"], row["default_acl"], row["owners"]) == ("hr", ["group:hr"], None)


def test_owners_added_before_the_key_scopes_are_left_in_place(
    db_url: str, migration_log: pytest.LogCaptureFixture
) -> None:
    """The old per-table column adding could give collections its owners while api_keys still
    lacked scopes (the skeleton's database opened by a later `ingest`): stamped at the baseline,
    the scopes are added and the owners kept."""
    raw = make_engine(db_url, migrate=False)
    old = sa.MetaData()
    skeleton_tables(old)
    old.create_all(raw)
    metadata.tables["collections"].create(raw)
    fill_old_rows(raw, {**old.tables, "collections": metadata.tables["collections"]})
    with raw.begin() as conn:
        conn.execute(metadata.tables["collections"].update().values(owners=["hr-team"]))

    engine = make_engine(db_url)
    assert "stamped at revision 0001" in migration_log.text
    assert revision(engine) == head()
    assert schema_drift(engine) == []
    assert_old_rows_survived(engine)
    with engine.connect() as conn:
        assert conn.execute(sa.select(metadata.tables["collections"].c.owners)).scalar_one() == ["hr-team"]


def test_a_database_no_release_made_is_refused_untouched(db_url: str) -> None:
    raw = make_engine(db_url, migrate=False)
    with raw.begin() as conn:
        conn.execute(sa.text("create table documents (id varchar(36) primary key, uri text not null)"))
    with pytest.raises(SchemaMismatch, match="documents lacks collection, source, .*status"):
        make_engine(db_url)
    assert revision(raw) is None
    assert sa.inspect(raw).get_table_names() == ["documents"]


def test_a_database_a_newer_release_upgraded_is_refused(db_url: str) -> None:
    engine = make_engine(db_url)
    with engine.begin() as conn:
        conn.execute(sa.text("update alembic_version set version_num = '9999'"))
    with pytest.raises(SchemaMismatch, match="revision 9999, which this release does not know"):
        make_engine(db_url)


def test_downgrade_to_nothing_and_back(db_url: str) -> None:
    engine = make_engine(db_url)
    with engine.begin() as conn:
        command.downgrade(alembic_config(conn), "0001")
    assert not {"owners", "bm25_weight"} & columns(engine, "collections")
    assert "expires_at" not in columns(engine, "api_keys")
    with engine.begin() as conn:
        command.downgrade(alembic_config(conn), "base")
    assert set(sa.inspect(engine).get_table_names()) <= {"alembic_version"}
    make_engine(db_url)
    assert revision(engine) == head()
    assert schema_drift(engine) == []


def test_collections_at_0004_gain_a_null_bm25_weight(db_url: str) -> None:
    """v0005: a tuned fusion weight per collection; collections from before keep the global one."""
    engine = make_engine(db_url)
    with engine.begin() as conn:
        command.downgrade(alembic_config(conn), "0004")
    assert "bm25_weight" not in columns(engine, "collections")
    old = sa.MetaData()
    collections = sa.Table("collections", old, autoload_with=engine)
    with engine.begin() as conn:
        conn.execute(
            collections.insert().values(name="hr", default_acl=["group:hr"], description="HR", created_at=T0)
        )

    engine = make_engine(db_url)
    assert revision(engine) == head() == "0006"
    assert schema_drift(engine) == []
    with engine.connect() as conn:
        row = conn.execute(sa.select(metadata.tables["collections"])).one()._mapping
    assert (row["name"], row["default_acl"], row["bm25_weight"]) == ("hr", ["group:hr"], None)
    with engine.begin() as conn:
        conn.execute(metadata.tables["collections"].update().values(bm25_weight=0.5))
        assert conn.execute(sa.select(metadata.tables["collections"].c.bm25_weight)).scalar_one() == 0.5


# -- two processes at once ------------------------------------------------------------------------


def _start_migrating(db_url: str) -> subprocess.Popen[str]:
    code = "import sys; from appliance.db import make_engine; make_engine(sys.argv[1])"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", code, db_url],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _waits_for_the_lock(engine: sa.Engine, proc: subprocess.Popen[str]) -> bool:
    """Whether ``proc`` is queued on the migration lock (not merely slow to start)."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            return bool(
                conn.execute(
                    sa.text("select count(*) from pg_locks where locktype = 'advisory' and not granted")
                ).scalar()
            )
    inode = os.stat(f"{engine.url.database}-migrate.lock").st_ino
    # /proc/locks: a blocked request is a "->" line naming the waiting pid and the file's inode.
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if "->" in fields and str(proc.pid) in fields and any(f.endswith(f":{inode}") for f in fields):
            return True
    return False


def test_a_second_process_waits_for_the_first_ones_migration(db_url: str) -> None:
    engine = make_engine(db_url, migrate=False)
    with migration_lock(engine):  # this test is the first process, mid-migration
        proc = _start_migrating(db_url)
        deadline = time.monotonic() + 120
        while not _waits_for_the_lock(engine, proc):
            assert proc.poll() is None, f"it did not wait for the lock:\n{proc.stdout.read()}"  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "the second process never reached the lock"
            time.sleep(0.1)
        assert revision(engine) is None  # it waits without touching the schema
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert revision(engine) == head()


def test_processes_starting_together_on_a_new_database_all_start(db_url: str) -> None:
    procs = [_start_migrating(db_url) for _ in range(3)]
    for proc in procs:
        out, _ = proc.communicate(timeout=180)
        assert proc.returncode == 0, out
    engine = make_engine(db_url, migrate=False)
    assert revision(engine) == head()
    assert schema_drift(engine) == []
