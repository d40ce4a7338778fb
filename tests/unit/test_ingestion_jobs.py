"""Job manager (queue, cancel, restart), and the ledger-vs-shard check on a real Edge shard."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from appliance.db import make_engine
from appliance.domain import Chunk, InvalidRequest, chunk_id, document_id
from appliance.ingestion.jobs import JobManager
from appliance.ingestion.state import DocumentRecord, Ledger
from appliance.ingestion.verify import verify


def test_jobs_run_one_at_a_time_cancel_and_survive_a_restart(db_url: str) -> None:
    engine = make_engine(db_url)
    manager = JobManager(engine)
    gate = threading.Event()

    def blocking(job):  # holds the single writer thread until the test lets go
        gate.wait(30)
        job.progress.done = 3
        return {"added": 3}

    def failing(job):
        raise InvalidRequest("the source went away")

    first = manager.submit("ingest", "admin", "default", blocking)
    second = manager.submit("ingest", "admin", "default", lambda job: {"added": 1})
    third = manager.submit("ingest", "admin", "default", failing)
    assert manager.get(second.id)["status"] == "queued"
    assert manager.cancel(second.id)["status"] == "cancelled"
    gate.set()
    assert manager.wait(first.id, 30)["status"] == "succeeded"
    failed = manager.wait(third.id, 30)
    assert failed["status"] == "failed" and failed["error"] == "the source went away"
    assert manager.wait(second.id, 30)["status"] == "cancelled"
    assert [j["id"] for j in manager.list()] == [third.id, second.id, first.id]
    manager.close()

    # A job that was running when the process died is reported as interrupted after a restart.
    started, stuck = threading.Event(), threading.Event()

    def hangs(job):  # called once the job is recorded as running; holds it there
        started.set()
        stuck.wait(30)
        return {}

    manager = JobManager(engine)
    running = manager.submit("sync", "scheduler", "default", hangs)
    assert started.wait(30)
    manager._live.clear()  # forget it, as a killed process would
    again = JobManager(engine)
    assert again.get(running.id)["status"] == "interrupted"
    assert again.get(first.id)["result"] == {"added": 3}
    stuck.set()
    manager.close()
    again.close()
    with pytest.raises(Exception, match="no job"):
        again.get("missing")


def test_verify_finds_and_repairs_orphans_and_missing_chunks(tmp_path: Path, db_url: str) -> None:
    from appliance.vectorstore.edge import EdgeVectorStore

    store = EdgeVectorStore(tmp_path / "qdrant")
    ledger = Ledger(make_engine(db_url))
    store.ensure_collection("c", 4)
    doc = document_id("c", "file:///a.md")
    texts = ["alpha", "beta", "gamma"]
    chunks = [Chunk(chunk_id(doc, i, t), doc, "c", "file:///a.md", "a", t, i) for i, t in enumerate(texts)]
    vectors = np.eye(4, dtype=np.float32)[:3]
    store.upsert("c", chunks, vectors)
    store.flush("c")
    rec = DocumentRecord(
        doc,
        "c",
        "file:///",
        "file:///a.md",
        "a",
        "v1",
        "h",
        ["*"],
        [c.id for c in chunks],
        None,
        "indexed",
        None,
    )
    ledger.commit_write(rec)
    try:
        assert verify(ledger, store)["ok"]

        orphan = Chunk(chunk_id("other", 0, "x"), "other", "c", "file:///gone.md", "g", "x", 0)
        store.upsert("c", [orphan], np.ones((1, 4), dtype=np.float32))
        store.delete_chunks("c", [chunks[1].id])
        store.flush("c")
        report = verify(ledger, store)
        stats = report["collections"]["c"]
        assert not report["ok"] and (stats["orphan"], stats["missing"], stats["duplicate"]) == (1, 1, 0)

        repaired = verify(ledger, store, repair=True)["collections"]["c"]["repaired"]
        assert repaired == {"deleted_orphans": 1, "documents_to_reindex": 1}
        assert [pid for pid, _, _ in store.point_index("c")].count(orphan.id) == 0
        assert ledger.get(doc).content_hash == ""  # the next sync parses it again
        pairs = store.get_with_vectors("c", [chunks[0].id])
        assert pairs[0][0].text == "alpha" and np.allclose(pairs[0][1], vectors[0])
    finally:
        store.close()


def test_a_due_source_is_claimed_once(db_url: str) -> None:
    """The schedulers' compare-and-set: of two replicas that read the same due source, one wins."""
    from appliance.ingestion.sources import SourceStore

    engine = make_engine(db_url)
    first, second = SourceStore(engine), SourceStore(make_engine(db_url))
    source = first.add("spec", "/srv/docs", {}, "default", [], 60)
    seen_by_first, seen_by_second = first.get(source.id), second.get(source.id)
    assert first.claim_sync(seen_by_first)
    assert not second.claim_sync(seen_by_second)  # read before the first claim: too late
    again = second.get(source.id)
    assert again.last_sync_at is not None
    assert second.claim_sync(again)  # a fresh read claims the next round
    assert not first.claim_sync(again)
