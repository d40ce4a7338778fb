"""Crash recovery, deterministically: the write sequence of one document is stopped at the point a
`kill -9` would leave it (chunks announced and written, nothing committed), twice in a row with
the content changing in between, and the next full sync must converge on the ledger.

The random kill test (tests/e2e/test_ingestion_crash.py) finds such sequences by chance; this one
builds the worst of them on purpose, so it fails every time the recovery forgets an id."""

from __future__ import annotations

from pathlib import Path

import pytest

import connectors
from appliance.ingestion.prepare import Prepared
from appliance.ingestion.verify import verify

pytestmark = pytest.mark.slow


def _text(version: int) -> str:
    # Each version changes every chunk's text, so every version has its own chunk ids.
    paras = [
        f"## Part {j}\n\n"
        + " ".join(f"Revision {version} of clause {j}.{k} on pump seals." for k in range(30))
        for j in range(3)
    ]
    return "# Maintenance contract\n\n" + "\n\n".join(paras)


def _crashed_attempt(container, src: Path) -> list[str]:  # type: ignore[no-untyped-def]
    """Run one document up to the end of its write and stop before the commit, as a crash there
    would: the ids are in the ledger as pending and the points are durable in the shard."""
    service = container.ingestion
    connector = connectors.for_source(str(src), extensions=container.settings.ingestion.extensions)
    (item,) = list(connector.discover())
    prepared = service.preparer.prepare(connector, item, "default", ())
    assert isinstance(prepared, Prepared), prepared
    service.embedding.embed([prepared], parsing=0)
    staged = service.writer.stage(prepared)
    container.store.flush("default")
    return staged.new_ids


def test_two_crashed_attempts_with_changing_content_leave_no_orphans(tmp_path: Path) -> None:
    from appliance.container import Container
    from appliance.settings import load_settings

    src = tmp_path / "src"
    src.mkdir()
    doc = src / "contract.md"
    doc.write_text(_text(1))
    container = Container(load_settings(data_dir=tmp_path / "data", log_level="WARNING"))
    try:
        ext = container.settings.ingestion.extensions
        first = container.jobs.run([connectors.for_source(str(src), extensions=ext)], None, [], "t")
        assert first["added"] == 1 and first["failed"] == []
        (committed,) = container.ledger.list("default")

        doc.write_text(_text(2))
        second_ids = _crashed_attempt(container, src)
        doc.write_text(_text(3))
        third_ids = _crashed_attempt(container, src)
        assert not set(second_ids) & set(third_ids) and not set(second_ids) & set(committed.chunk_ids)

        (rec,) = container.ledger.list("default")
        # Both crashed attempts' ids are still known, and the committed version is untouched.
        assert set(second_ids) | set(third_ids) <= set(rec.pending_chunk_ids or ())
        assert rec.chunk_ids == committed.chunk_ids and rec.status == "indexed"
        before = verify(container.ledger, container.store, "default")["collections"]["default"]
        assert before["orphan"] > 0  # the crash did leave uncommitted points behind

        doc.write_text(_text(4))
        final = container.jobs.run([connectors.for_source(str(src), extensions=ext)], None, [], "t")
        assert final["updated"] == 1 and final["failed"] == []

        stats = verify(container.ledger, container.store, "default")["collections"]["default"]
        assert (stats["missing"], stats["orphan"], stats["duplicate"]) == (0, 0, 0), stats
        (rec,) = container.ledger.list("default")
        assert rec.pending_chunk_ids is None
        in_shard = {pid for pid, _, _ in container.store.point_index("default")}
        assert in_shard == set(rec.chunk_ids)
    finally:
        container.close()
