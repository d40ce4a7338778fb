from __future__ import annotations

import json
from pathlib import Path

import pytest

from appliance.audit import AuditEvent, AuditLog, verify_file


@pytest.fixture()
def log(tmp_path: Path) -> AuditLog:
    audit = AuditLog(tmp_path / "audit.jsonl")
    for i in range(5):
        audit.append(AuditEvent("alice", "ask", "default", {"question": f"q{i}", "chunk_ids": [str(i)]}))
    return audit


def lines(log: AuditLog) -> list[bytes]:
    return log.path.read_bytes().splitlines(keepends=True)


def test_intact_chain_verifies(log: AuditLog) -> None:
    result = log.verify()
    assert result.ok and result.records == 5
    records = [json.loads(line) for line in lines(log)]
    assert [r["seq"] for r in records] == [1, 2, 3, 4, 5]
    assert all(records[i]["prev"] == records[i - 1]["hash"] for i in range(1, 5))


@pytest.mark.parametrize("line", [0, 2, 4])
def test_changed_byte_is_found_at_its_record(log: AuditLog, line: int) -> None:
    raw = lines(log)
    raw[line] = raw[line].replace(b'"alice"', b'"alicf"')
    log.path.write_bytes(b"".join(raw))
    result = log.verify()
    assert not result.ok and result.first_bad == line + 1


def test_deleted_record_is_detected(log: AuditLog) -> None:
    raw = lines(log)
    del raw[1]
    log.path.write_bytes(b"".join(raw))
    result = log.verify()
    assert not result.ok and result.first_bad == 2


def test_reordered_records_are_detected(log: AuditLog) -> None:
    raw = lines(log)
    raw[1], raw[2] = raw[2], raw[1]
    log.path.write_bytes(b"".join(raw))
    assert not log.verify().ok


def test_export_verifies_as_a_file(log: AuditLog, tmp_path: Path) -> None:
    out = tmp_path / "export.jsonl"
    log.export(out)
    assert verify_file(out).ok
