"""Who may read an ingested document: the source's own per-item rule (here an ACL column of a SQL
table) when it has one, else `--allow` for the whole run, else the collection's default readers.
Neither a collection default nor a run's `allow` may widen what the source itself restricts; an
`allow` may only narrow it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

import connectors

pytestmark = pytest.mark.slow


def _table(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        conn.execute("create table docs (id text primary key, title text, body text, acl text)")
        conn.executemany(
            "insert into docs values (?, ?, ?, ?)",
            [
                ("1", "Litigation hold", "The Zephyr hold covers every sales mailbox.", "group:legal"),
                ("2", "Leave policy", "Employees take 25 days of annual leave.", None),
            ],
        )
    return f"sqlite:///{path}#docs"


def test_item_acl_beats_collection_default_and_allow_never_widens_it(tmp_path: Path) -> None:
    from appliance.container import Container
    from appliance.settings import load_settings

    source = _table(tmp_path / "src.db")
    container = Container(load_settings(data_dir=tmp_path / "data", log_level="WARNING"))
    try:
        container.collections.create("hr", ["group:hr"])
        report = container.jobs.run([connectors.for_source(source)], "hr", [], "t")
        assert report["added"] == 2 and report["failed"] == []
        acl = {r.title.split(" (")[0]: r.acl for r in container.ledger.list("hr")}
        assert acl == {"Litigation hold": ["group:legal"], "Leave policy": ["group:hr"]}
        # Every stored chunk carries the document's rule, not the collection's.
        chunks = container.store.get("hr", [cid for r in container.ledger.list("hr") for cid in r.chunk_ids])
        by_title = {c.title.split(" (")[0]: set(c.acl) for c in chunks}
        assert by_title == {"Litigation hold": {"group:legal"}, "Leave policy": {"group:hr"}}

        # A run's allow names other readers: it applies to the row without a rule of its own, and
        # the legal hold stays legal's (before, group:audit replaced it and so widened it).
        report = container.jobs.run([connectors.for_source(source)], "hr", ["group:audit"], "t")
        assert (report["updated"], report["unchanged"]) == (1, 1), report
        acl = {r.title.split(" (")[0]: r.acl for r in container.ledger.list("hr")}
        assert acl == {"Litigation hold": ["group:legal"], "Leave policy": ["group:audit"]}
        chunks = container.store.get("hr", [cid for r in container.ledger.list("hr") for cid in r.chunk_ids])
        assert {c.title.split(" (")[0]: set(c.acl) for c in chunks}["Litigation hold"] == {"group:legal"}
    finally:
        container.close()


def test_a_run_may_narrow_an_items_own_rule(tmp_path: Path) -> None:
    from appliance.container import Container
    from appliance.settings import load_settings

    db = tmp_path / "src.db"
    with sqlite3.connect(db) as conn:
        conn.execute("create table docs (id text primary key, title text, body text, acl text)")
        conn.execute(
            "insert into docs values ('1', 'Board minutes', 'The board met.', 'group:board,user:kim')"
        )
        conn.execute("insert into docs values ('2', 'Open notes', 'Anyone may read.', '*')")
    container = Container(load_settings(data_dir=tmp_path / "data", log_level="WARNING"))
    try:
        container.collections.create("kb", [])
        report = container.jobs.run([connectors.for_source(f"sqlite:///{db}#docs")], "kb", ["user:kim"], "t")
        assert report["added"] == 2 and report["failed"] == []
        assert {tuple(r.acl) for r in container.ledger.list("kb")} == {("user:kim",)}
    finally:
        container.close()


def test_narrowing_a_rule_fails_closed_when_the_document_cannot_be_refetched(tmp_path: Path) -> None:
    """The source narrows who may read a row and, in the same change, the row stops being
    fetchable (here: it grew over the size limit). Its indexed copy is deleted rather than left
    readable under the old, wider rule; a copy whose rule only widened stays."""
    from appliance.container import Container
    from appliance.settings import load_settings

    db = tmp_path / "src.db"
    with sqlite3.connect(db) as conn:
        conn.execute("create table docs (id text primary key, title text, body text, acl text)")
        conn.execute("insert into docs values ('1', 'Merger plan', 'We plan to buy Zephyr Ltd.', NULL)")
        conn.execute(
            "insert into docs values ('2', 'Payroll dates', 'Salaries go out on the 25th.', 'group:hr')"
        )
    source = f"sqlite:///{db}#docs"
    container = Container(load_settings(data_dir=tmp_path / "data", log_level="WARNING"))
    try:
        container.collections.create("kb", [])
        report = container.jobs.run([connectors.for_source(source, max_file_bytes=2000)], "kb", [], "t")
        assert report["added"] == 2 and report["failed"] == []
        before = {r.title.split(" (")[0]: r for r in container.ledger.list("kb")}
        assert before["Merger plan"].acl == ["*"] and before["Payroll dates"].acl == ["group:hr"]
        with sqlite3.connect(db) as conn:
            huge = "Too long to fetch. " * 200
            conn.execute("update docs set acl = 'group:board', body = ? where id = '1'", (huge,))
            conn.execute("update docs set acl = '*', body = ? where id = '2'", (huge,))

        report = container.jobs.run([connectors.for_source(source, max_file_bytes=2000)], "kb", [], "t")
        failed = {f["uri"].rsplit("#", 1)[-1]: f["error"] for f in report["failed"]}
        assert set(failed) == {"1", "2"}, report
        assert "narrowed" in failed["1"] and "narrowed" not in failed["2"]
        assert report["deleted"] == 1
        assert container.ledger.get(before["Merger plan"].id) is None
        assert container.store.get("kb", before["Merger plan"].chunk_ids) == []
        # Widened only: the old copy was readable by fewer people than the source now allows.
        kept = container.ledger.get(before["Payroll dates"].id)
        assert kept is not None and kept.acl == ["group:hr"]
        assert len(container.store.get("kb", kept.chunk_ids)) == len(kept.chunk_ids) > 0
    finally:
        container.close()
