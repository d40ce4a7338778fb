"""A running server applies audit retention (when it starts, then daily), not only `audit rotate`."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from appliance import audit as audit_mod
from appliance.audit import AuditEvent, AuditLog, open_audit_log, verify_file
from appliance.audit import records as audit_records
from appliance.settings import AuditSettings
from tests.conftest import Server

pytestmark = pytest.mark.slow


def test_serve_archives_records_past_the_retention(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data_dir = tmp_path / "data"
    log = AuditLog(data_dir / "audit" / "audit.jsonl")
    old = datetime.now(UTC) - timedelta(days=30)

    class Then(datetime):
        @classmethod
        def now(cls, tz: object = None) -> datetime:  # type: ignore[override]
            return old

    with monkeypatch.context() as m:  # three records written a month ago
        m.setattr(audit_records, "datetime", Then)
        for i in range(3):
            log.append(AuditEvent(f"user{i}", "ask", "default", {"question": "q"}))
    log.append(AuditEvent("user9", "ask", "default", {"question": "recent"}))
    assert log.verify().ok

    srv = Server(data_dir, admin_key="kb-test-admin-retention", APPLIANCE_AUDIT__RETENTION_DAYS="7")
    try:
        srv.wait_ready()
        archive = data_dir / "audit" / "archive"
        end = time.monotonic() + 30
        while time.monotonic() < end and not (archive.exists() and any(archive.iterdir())):
            time.sleep(0.2)
        files = list(archive.iterdir())
        assert len(files) == 1 and verify_file(files[0], require_trailer=True).ok
        assert [json.loads(line)["actor"] for line in files[0].read_text().splitlines()[:3]] == [
            "user0",
            "user1",
            "user2",
        ]
    finally:
        srv.stop()
    kept = [json.loads(line) for line in log.path.read_text().splitlines()]
    assert kept[0]["actor"] == "user9" and any(r["action"] == audit_mod.RETENTION for r in kept)
    assert log.verify().ok
    # The server signed from its first record on; with its key, archives and witness it verifies.
    signed = open_audit_log(AuditSettings(), data_dir)
    assert signed.verify().ok and any("mac" in r for r in kept)
