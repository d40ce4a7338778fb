"""The metadata DB's two backends as the appliance opens them: SQLite in the data dir (private to
its owner) by default, PostgreSQL by `database.url`; and the stores that keep the ledger, sources
and collections working the same on both."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import sqlalchemy as sa

from appliance.db import make_engine
from appliance.domain import NotFound
from appliance.migrations import current, head
from appliance.settings import load_settings, redacted
from tests.conftest import Postgres, base_env, cli_json

pytestmark = pytest.mark.usefixtures("clean_env")


def test_the_default_database_is_sqlite_private_to_its_owner(tmp_path: Path) -> None:
    from appliance.container import Container

    container = Container(load_settings(data_dir=tmp_path / "data"))
    try:
        container.identity.add_user("ann", "employee")  # a write, so the WAL files exist too
        assert container.engine.dialect.name == "sqlite"
        files = [p for p in (tmp_path / "data").iterdir() if p.name.startswith("appliance.db")]
        assert {p.name for p in files} >= {"appliance.db", "appliance.db-wal", "appliance.db-shm"}
        for path in files:
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name
    finally:
        container.close()


@pytest.mark.services
def test_database_url_puts_the_metadata_on_postgresql(
    postgres: Postgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from appliance.container import Container

    url = postgres.create_database()
    # A plain postgresql:// URL (psycopg 3 is picked), with a password that must never be shown.
    plain = url.replace("postgresql+psycopg://kb@", "postgresql://kb:pg-s3cret@")
    monkeypatch.setenv("APPLIANCE_DATABASE__URL", plain)
    settings = load_settings(data_dir=tmp_path / "data")
    assert "pg-s3cret" not in repr(redacted(settings)) and "pg-s3cret" not in repr(settings)
    container = Container(settings)
    try:
        container.identity.add_user("ann", "employee")
        engine = container.engine
        assert engine.dialect.name == "postgresql"
        with engine.connect() as conn:
            assert current(conn) == head()
            assert conn.execute(sa.text("select name from users")).scalars().all() == ["ann"]
        assert not (tmp_path / "data" / "appliance.db").exists()
    finally:
        container.close()


@pytest.mark.services
def test_the_cli_keeps_users_and_keys_on_postgresql(postgres: Postgres, tmp_path: Path) -> None:
    url = postgres.create_database()
    env = base_env(tmp_path / "data", APPLIANCE_DATABASE__URL=url)
    user = cli_json(["users", "add", "bob", "--role", "curator"], env)
    assert user["role"] == "curator"
    issued = cli_json(["keys", "create", "--user", "bob", "--collection", "hr"], env)
    assert issued["key"].startswith("kb-") and issued["collections"] == ["hr"]
    with make_engine(url).connect() as conn:
        assert conn.execute(sa.text("select role from users where name = 'bob'")).scalar_one() == "curator"
        keys = conn.execute(sa.text('select "user", collections from api_keys')).all()
    assert [(k[0], k[1]) for k in keys] == [("bob", ["hr"])]
    assert not (tmp_path / "data" / "appliance.db").exists()


# -- the stores on both backends -----------------------------------------------------------------


def test_ledger_records_a_write_and_its_recovery_state(db_url: str) -> None:
    from appliance.ingestion.state import DocumentRecord, Ledger

    ledger = Ledger(make_engine(db_url))
    rec = DocumentRecord(
        "d1", "hr", "/kb", "/kb/a.md", "A", "v1", "h" * 64, ["group:hr"], [], None, "pending", None
    )
    ledger.begin_write(rec, ["c1", "c2"])
    assert ledger.get("d1").pending_chunk_ids == ["c1", "c2"]  # type: ignore[union-attr]
    rec.chunk_ids = ["c1", "c2"]
    ledger.commit_write(rec)
    done = ledger.get("d1")
    assert done is not None and (done.status, done.chunk_ids, done.pending_chunk_ids) == (
        "indexed",
        ["c1", "c2"],
        None,
    )
    assert done.acl == ["group:hr"] and done.updated_at is not None
    twin = ledger.find_indexed("hr", "h" * 64, exclude="d2")
    assert twin is not None and twin.id == "d1"
    assert ledger.find_indexed("hr", "h" * 64, exclude="d1") is None
    ledger.mark_failed(done, "x" * 3000)
    failed = ledger.get("d1")
    assert failed is not None and (failed.status, failed.version, len(failed.error or "")) == (
        "failed",
        "",
        2000,
    )
    assert ledger.collections() == ["hr"] and [r.id for r in ledger.for_source("hr", "/kb")] == ["d1"]
    ledger.remove("d1")
    assert ledger.get("d1") is None and ledger.list() == []


def test_sources_are_stored_listed_synced_and_removed(db_url: str) -> None:
    from appliance.ingestion.sources import SourceStore

    store = SourceStore(make_engine(db_url))
    first = store.add("filesystem", "/srv/kb", {"include": ["*.md"]}, "hr", ["group:hr"], 3600)
    second = store.add("web", None, {"url": "https://intranet.example/"}, "it", [], 0)
    assert [s.id for s in store.list()] == [first.id, second.id]
    got = store.get(first.id)
    assert (got.kind, got.spec, got.options, got.acl, got.interval_s) == (
        "filesystem",
        "/srv/kb",
        {"include": ["*.md"]},
        ["group:hr"],
        3600,
    )
    store.mark_synced(first.id, "job-1")
    synced = store.get(first.id)
    assert synced.last_job_id == "job-1" and synced.last_sync_at is not None
    store.remove(second.id)
    with pytest.raises(NotFound):
        store.get(second.id)
    with pytest.raises(NotFound):
        store.remove(second.id)


@pytest.fixture(scope="module")
def embedder(minilm_dir: Path):  # type: ignore[no-untyped-def]
    from appliance.embeddings.sentence_transformers import SentenceTransformerEmbedder

    emb = SentenceTransformerEmbedder("all-minilm-l6-v2", minilm_dir, threads=2, dtype="float32")
    yield emb
    emb.close()


def test_collections_keep_readers_and_owners(db_url: str, tmp_path: Path, embedder) -> None:  # type: ignore[no-untyped-def]
    from appliance.collections import CollectionService
    from appliance.ingestion.state import Ledger
    from appliance.security.identity import IdentityStore
    from appliance.vectorstore.edge import EdgeVectorStore

    engine = make_engine(db_url)
    IdentityStore(engine).add_group("hr")
    store = EdgeVectorStore(tmp_path / "qdrant")
    try:
        service = CollectionService(engine, store, embedder, Ledger(engine))
        made = service.create("handbook", ["group:hr"], "HR handbook", owners=["hr"])
        assert (made["default_acl"], made["owners"], made["description"]) == (
            ["group:hr"],
            ["hr"],
            "HR handbook",
        )
        assert service.update("handbook", owners=[])["owners"] == []
        items, total = service.list()
        assert total == 1 and items[0]["name"] == "handbook" and items[0]["default_acl"] == ["group:hr"]
        service.delete("handbook")
        with pytest.raises(NotFound):
            service.get("handbook")
    finally:
        store.close()
