"""Who may read an ingested document, most specific rule first: `--allow` for the whole run, then
the source's own per-item rule (here an ACL column of a SQL table), then the collection's default
readers. A collection default must never widen what the source itself restricts."""

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


def test_item_acl_beats_collection_default_and_allow_beats_both(tmp_path: Path) -> None:
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

        report = container.jobs.run([connectors.for_source(source)], "hr", ["group:audit"], "t")
        assert report["updated"] == 2
        assert {tuple(r.acl) for r in container.ledger.list("hr")} == {("group:audit",)}
    finally:
        container.close()
