"""A damaged shard fails its own collection, not the collection list (issue 15 item 19): with one
collection's index files overwritten, the list still answers (that collection with its error),
the other collection searches as before, and searching the damaged one is a typed 503 error.
Real Edge shard, embedder and ingestion."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.container import Container
from appliance.domain import LOCAL_ADMIN, Unavailable
from appliance.settings import load_settings

pytestmark = pytest.mark.slow


def test_a_damaged_shard_fails_only_its_collection(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "data", log_level="WARNING")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "pump.md").write_text("# Pump\n\nThe pump seal is replaced every 4000 operating hours.\n")
    first = Container(settings)
    try:
        for name in ("good", "bad"):
            job = first.jobs.start_job(LOCAL_ADMIN, [str(docs)], name, [], {})
            assert first.jobs.manager.wait(job.id, timeout=600)["status"] == "succeeded"
    finally:
        first.close()
    segments = settings.data_dir / "qdrant" / "bad" / "segments"
    if not segments.is_dir():
        segments = next(p for p in settings.data_dir.rglob("segments") if p.parent.name == "bad")
    for path in segments.rglob("*"):
        if path.is_file():
            path.write_bytes(b"\xff" * 64)

    again = Container(settings)
    try:
        listed, total = again.collections.list()
        by_name = {c["name"]: c for c in listed}
        assert total == 2 and set(by_name) == {"good", "bad"}
        assert by_name["good"]["chunks"] > 0 and by_name["good"]["error"] is None
        assert "damaged" in by_name["bad"]["error"]
        hits, _ = again.search.search("pump seal", LOCAL_ADMIN, "good")
        assert hits and "4000" in hits[0].chunk.text
        with pytest.raises(Unavailable, match="damaged"):
            again.search.search("pump seal", LOCAL_ADMIN, "bad")
    finally:
        again.close()
