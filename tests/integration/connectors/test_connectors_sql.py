"""SQL connector on SQLite and on a real PostgreSQL server (Debian's, started by the fixture)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import connectors
from connectors.sql import SqlConnector, SqlError
from tests.integration.connectors.conftest import Postgres, make_sqlite

ROWS = [
    (1, "Vacation policy", "Employees get 30 vacation days.", "2026-01-01", None),
    (2, "Payroll", "Salaries are paid monthly.", "2026-01-02", "group:finance,user:alice"),
    (3, "Empty title", "Body only.", None, None),
]


def check_source(url: str, engine: sa.Engine, table: str, **options: Any) -> None:
    c = connectors.for_source(f"{url}#{table}", acl=["group:staff"], **options)
    assert isinstance(c, SqlConnector) and c.kind == "sql"
    assert "secret" not in c.root
    items = {i.metadata["row_id"]: i for i in c.discover()}
    assert set(items) == {1, 2, 3}
    assert items[1].version == "updated:2026-01-01"
    assert items[3].version.startswith("sha256:"), "no updated_at: a hash of the row"
    assert items[1].acl == ("group:staff",) and items[2].acl == ("group:finance", "user:alice")
    assert items[1].metadata["filename"] == "vacation-policy.md"
    assert items[1].metadata["title"] == "Vacation policy"
    assert c.fetch(items[1]) == b"# Vacation policy\n\nEmployees get 30 vacation days.\n"

    with engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE {table} SET body = 'Body changed.' WHERE id = 3"))
        conn.execute(
            sa.text(f"UPDATE {table} SET body = 'Weekly now.', updated_at = '2026-02-01' WHERE id = 2")
        )
        conn.execute(sa.text(f"DELETE FROM {table} WHERE id = 1"))
    again = {i.metadata["row_id"]: i for i in c.discover()}
    assert set(again) == {2, 3}
    assert again[2].version == "updated:2026-02-01"
    assert again[3].version != items[3].version
    # A fetch without the discovery cache re-reads that one row.
    fresh = connectors.build("sql", **c.options())
    assert fresh.root == c.root
    assert fresh.fetch(again[2]) == b"# Payroll\n\nWeekly now.\n"


def test_sqlite_rows_versions_acl_and_refetch(tmp_path: Path) -> None:
    db = make_sqlite(tmp_path / "kb.db", ROWS)
    url = f"sqlite:///{db}"
    check_source(url, sa.create_engine(url), "articles")


def test_query_option_columns_and_errors(tmp_path: Path) -> None:
    db = make_sqlite(tmp_path / "kb.db", ROWS)
    c = connectors.for_source(
        f"sql+sqlite:///{db}",
        query="SELECT id AS doc, title AS name, body AS text FROM articles WHERE id < 3",
        id_column="doc",
        title_column="name",
        body_column="text",
        fmt="txt",
    )
    items = list(c.discover())
    assert [i.metadata["row_id"] for i in items] == [1, 2]
    assert all(i.version.startswith("sha256:") for i in items)
    assert c.fetch(items[0]) == b"Vacation policy\n\nEmployees get 30 vacation days.\n"
    other_query = connectors.for_source(f"sqlite:///{db}", query="SELECT * FROM articles")
    assert other_query.root != c.root, "a different query is a different source"

    with pytest.raises(SqlError, match="no 'id' column"):
        list(connectors.for_source(f"sqlite:///{db}", query="SELECT title, body FROM articles").discover())
    with pytest.raises(SqlError, match="failed"):
        list(connectors.for_source(f"sqlite:///{db}#nosuchtable").discover())
    from appliance.domain import InvalidRequest

    with pytest.raises(InvalidRequest, match="query"):
        connectors.for_source(f"sqlite:///{db}")
    with pytest.raises(InvalidRequest):
        connectors.for_source(f"sqlite:///{db}#articles; DROP TABLE articles")


@pytest.mark.services
def test_postgresql(postgres: Postgres) -> None:
    engine = sa.create_engine(postgres.url)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE IF EXISTS kb_articles"))
        conn.execute(
            sa.text(
                "CREATE TABLE kb_articles (id integer primary key, title text, body text, updated_at text, acl text)"
            )
        )
        conn.execute(
            sa.text("INSERT INTO kb_articles VALUES (:a, :b, :c, :d, :e)"),
            [dict(zip("abcde", row, strict=True)) for row in ROWS],
        )
    # A plain postgresql:// URL works: the connector picks the psycopg (3) driver the appliance ships.
    check_source(
        postgres.url.replace("postgresql+psycopg://", "postgresql://"),
        engine,
        "kb_articles",
        allow_private=["127.0.0.1"],  # the test server is on loopback
    )
    engine.dispose()


def test_a_row_over_the_size_limit_fails_alone(tmp_path: Path) -> None:
    from appliance.domain import FileTooLarge

    db = make_sqlite(tmp_path / "kb.db", [*ROWS, (4, "Huge", "y" * 3000, None, None)])
    c = connectors.for_source(f"sqlite:///{db}#articles", max_file_bytes=2000)
    items = {i.metadata["title"]: i for i in c.discover()}
    with pytest.raises(FileTooLarge, match="ingestion.max_file_mb"):
        c.fetch(items["Huge"])
    assert c.fetch(items["Payroll"]) == b"# Payroll\n\nSalaries are paid monthly.\n"
