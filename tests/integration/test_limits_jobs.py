"""Job bookkeeping is bounded and a restart finishes what a crash left (issue 15 item 19): old and
surplus finished jobs are pruned (active ones never), finished jobs leave memory, an upload whose
job was running when the process died is ingested at the next start, and upload files that no
document or job reads are removed. Real metadata DB, parser, embedder and shard."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

from sqlalchemy import insert, select, update

from appliance.container import Container
from appliance.db import jobs as jobs_table
from appliance.db import make_engine, now
from appliance.domain import LOCAL_ADMIN, document_id
from appliance.ingestion.jobs import JobManager
from appliance.settings import load_settings


def _ids(engine: object) -> list[str]:
    with engine.connect() as conn:  # type: ignore[attr-defined]
        return [r.id for r in conn.execute(select(jobs_table.c.id).order_by(jobs_table.c.created_at))]


def test_finished_jobs_are_pruned_by_age_and_count(tmp_path: Path) -> None:
    engine = make_engine(tmp_path / "jobs.db")
    manager = JobManager(engine, keep_days=1, keep_count=3)
    done = [manager.run_inline("ingest", "admin", "kb", lambda job: {}) for _ in range(5)]
    assert _ids(engine) == [j.id for j in done[-3:]]  # the newest three
    with engine.begin() as conn:  # the oldest kept one is two days old by now
        conn.execute(
            update(jobs_table)
            .where(jobs_table.c.id == done[2].id)
            .values(created_at=now() - timedelta(days=2))
        )
    live = manager.submit("ingest", "admin", "kb", lambda job: {})
    assert manager.wait(live.id, timeout=60)["status"] == "succeeded"
    assert _ids(engine) == [done[3].id, done[4].id, live.id]
    assert manager.get(live.id)["status"] == "succeeded"  # read back from the table
    assert not manager._live  # finished jobs do not stay in memory
    manager.close()


def test_a_restart_retries_interrupted_uploads_and_removes_orphans(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "data", log_level="WARNING")
    first = Container(settings)
    body = b"# Pump manual\n\nThe pump seal is replaced every 4000 operating hours.\n"
    try:
        connector = first.jobs.connectors.new_upload("default", "pump.md")
        connector.path.write_bytes(body)
        # The upload's job was running when the process died: its row says so.
        with first.engine.begin() as conn:
            conn.execute(
                insert(jobs_table).values(
                    id=uuid.uuid4().hex[:16], kind="upload", status="running", actor="erin",
                    collection="default", source_id=None, progress={}, created_at=now(),
                    detail={"filename": "pump.md", "uri": connector.root, "bytes": len(body), "allow": ["user:erin"]},
                )
            )  # fmt: skip
        orphan = first.jobs.connectors.new_upload("default", "half.pdf").path
        orphan.write_bytes(b"%PDF-1.7 cut off while it was received")
    finally:
        first.close()

    second = Container(settings)
    try:
        retried = second.jobs.recover_uploads()
        assert [j.detail["uri"] for j in retried] == [connector.root]
        assert second.jobs.manager.wait(retried[0].id, timeout=600)["status"] == "succeeded"
        doc = second.jobs.document(LOCAL_ADMIN, document_id("default", connector.root))
        assert doc["status"] == "indexed" and doc["allow"] == ["user:erin"]
        assert connector.path.read_bytes() == body and not orphan.exists()
    finally:
        second.close()
