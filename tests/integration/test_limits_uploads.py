"""Uploads stay their collection's (issue 15 item 6), on the real ingestion service: a copy of
another collection's upload (indexed through a source registered before uploads were refused as
sources) is never synced or reindexed again, and deleting it never unlinks the other collection's
file; the upload's own document still reindexes from it."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.container import Container
from appliance.domain import LOCAL_ADMIN, InvalidRequest, document_id
from appliance.settings import load_settings

pytestmark = pytest.mark.slow

NOTES = b"# Salary bands\n\nThe salary band of a senior engineer is E5 in the HR handbook.\n"


@pytest.fixture()
def container(tmp_path: Path) -> Iterator[Container]:
    c = Container(load_settings(data_dir=tmp_path / "data", log_level="WARNING"))
    try:
        yield c
    finally:
        c.close()


def _wait(c: Container, job_id: str) -> dict:
    return c.jobs.manager.wait(job_id, timeout=600)


def test_a_copy_of_another_collections_upload_never_touches_its_file(container: Container) -> None:
    jobs = container.jobs
    for name in ("hr-kb", "eng-kb"):
        container.collections.create(name, [])
    doc_id, job = jobs.upload(LOCAL_ADMIN, io.BytesIO(NOTES), "notes.md", "hr-kb", [])
    assert _wait(container, job.id)["status"] == "succeeded"
    uri = jobs.ledger.get(doc_id).uri  # type: ignore[union-attr]
    stored = jobs.connectors.upload(uri).path
    assert stored.read_bytes() == NOTES

    # A source of kind upload naming hr-kb's file, registered for eng-kb before the API refused
    # that (the row is what such a database holds): syncing it copies nothing now.
    legacy = jobs.sources.add("upload", None, {"uri": uri}, "eng-kb", [], 0)
    synced = _wait(container, jobs.sync(legacy.id, "scheduler").id)
    assert synced["status"] == "failed" and "another collection" in synced["error"], synced
    copy_id = document_id("eng-kb", uri)
    assert jobs.ledger.get(copy_id) is None

    # A copy that such a sync made back then: it cannot be reindexed from hr-kb's file, and
    # deleting it leaves that file (and hr-kb's document) alone.
    jobs.run([jobs.connectors.upload(uri)], "eng-kb", [], "legacy-sync")
    assert jobs.ledger.get(copy_id) is not None
    with pytest.raises(InvalidRequest, match="another collection"):
        jobs.reindex(LOCAL_ADMIN, copy_id)
    jobs.delete_document(LOCAL_ADMIN, copy_id)
    assert jobs.ledger.get(copy_id) is None
    assert stored.read_bytes() == NOTES
    again = _wait(container, jobs.reindex(LOCAL_ADMIN, doc_id).id)
    assert again["status"] == "succeeded", again

    # The upload's own document takes its file with it.
    jobs.delete_document(LOCAL_ADMIN, doc_id)
    assert not stored.exists()
