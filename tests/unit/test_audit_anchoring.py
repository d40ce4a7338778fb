"""Anchoring the audit log (issue 15.8): a signed chain, signed head and anchor, archives that are
verified too, and witnesses outside the audit directory. Each attack below passed `verify` before
signing and witnesses existed; now each is caught. A torn last line no longer breaks appends."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr

from appliance.audit import (
    CUT,
    RECOVERED,
    AuditEvent,
    AuditLog,
    Signer,
    open_audit_log,
    parse_witness,
    record_hash,
    verify_file,
)
from appliance.audit.records import canonical
from appliance.settings import AuditSettings


def _settings(**values: object) -> AuditSettings:
    return AuditSettings(checkpoint_every=5, **values)  # type: ignore[arg-type]


def _filled(data_dir: Path, n: int = 23, **values: object) -> AuditLog:
    log = open_audit_log(_settings(**values), data_dir)
    for i in range(n):
        log.append(AuditEvent(f"user{i % 3}", "ask", "default", {"question": f"q{i}"}))
    return log


def _lines(log: AuditLog) -> list[bytes]:
    return log.path.read_bytes().splitlines(keepends=True)


def _forge_head(log: AuditLog, record: dict[str, object]) -> None:
    """What an attacker without the key writes: a head naming the record the log now ends at."""
    (log.dir / "head.json").write_text(json.dumps({"seq": record["seq"], "hash": record["hash"]}))


def test_a_fresh_signed_log_verifies_and_every_record_is_signed(tmp_path: Path) -> None:
    log = _filled(tmp_path)
    result = log.verify()
    assert result.ok, result
    records = [json.loads(line) for line in _lines(log)]
    assert all(log.signer and log.signer.check(r["mac"], "record", r["hash"]) for r in records)
    key = tmp_path / "secrets" / "audit-hmac.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "secrets").stat().st_mode) == 0o700
    witness = [json.loads(x) for x in (tmp_path / "secrets" / "audit-witness.jsonl").read_text().splitlines()]
    assert [w["kind"] for w in witness] == ["start", *["checkpoint"] * 5]


def test_tail_cut_with_a_rewritten_head_is_detected(tmp_path: Path) -> None:
    log = _filled(tmp_path)
    lines = _lines(log)
    kept = lines[:-2]  # after the last checkpoint: the chain and the checkpoints still agree
    log.path.write_bytes(b"".join(kept))
    _forge_head(log, json.loads(kept[-1]))
    result = log.verify()
    assert not result.ok and "head.json is not signed" in result.reason
    # The next append finds the forged head and leaves evidence in the chain for good.
    log.append(AuditEvent("user0", "ask", "default", {"question": "after"}))
    assert any(json.loads(x)["action"] == CUT for x in _lines(log))
    after = log.verify()
    assert not after.ok and "records were removed" in after.reason


def test_a_cut_beyond_checkpoints_is_caught_by_the_witness(tmp_path: Path) -> None:
    """Cut back past two checkpoints and rewrite head.json and checkpoints.jsonl to match (with
    the key, even): the witness outside audit/ still knows the records existed."""
    log = _filled(tmp_path)
    lines = _lines(log)
    kept = lines[:12]
    log.path.write_bytes(b"".join(kept))
    last = json.loads(kept[-1])
    assert log.signer is not None
    log.write_head(last, 1)  # a head signed with the real key
    cps = [json.loads(x) for x in log.checkpoints_path.read_text().splitlines()]
    log.checkpoints_path.write_text("".join(json.dumps(c) + "\n" for c in cps if c["seq"] <= last["seq"]))
    result = log.verify()
    assert not result.ok and "witness saw record" in result.reason


def test_forged_anchor_is_detected(tmp_path: Path) -> None:
    """Drop the first records of the live log and write an anchor saying it starts after them."""
    log = _filled(tmp_path)
    lines = _lines(log)
    dropped = json.loads(lines[3])
    log.path.write_bytes(b"".join(lines[4:]))
    log.anchor_path.write_text(
        json.dumps({"seq": dropped["seq"] + 1, "prev": dropped["hash"], "archive": "x"})
    )
    result = log.verify()
    assert not result.ok and "anchor.json is not signed" in result.reason


def test_forged_anchor_after_retention_is_detected(tmp_path: Path) -> None:
    log = _filled(tmp_path)
    report = log.rotate(retention_days=1, now=datetime.now(UTC) + timedelta(days=10))
    assert report["archived"] and log.verify().ok
    anchor = json.loads(log.anchor_path.read_text())
    anchor["seq"] += 1
    log.anchor_path.write_text(json.dumps(anchor))
    assert not log.verify().ok


def test_deleted_audit_directory_is_detected(tmp_path: Path) -> None:
    log = _filled(tmp_path)
    shutil.rmtree(log.dir)
    result = open_audit_log(_settings(), tmp_path).verify()
    assert not result.ok and "audit log is missing" in result.reason


def test_an_outside_witness_survives_the_whole_data_dir(tmp_path: Path) -> None:
    """With the key from the settings and a witness file elsewhere, losing the audit directory
    and the local witness is still caught."""
    outside = tmp_path / "worm" / "audit-witness.jsonl"
    values = {"hmac_key": SecretStr("k" * 32), "witness": [str(outside)]}
    log = _filled(tmp_path / "data", **values)
    assert not (tmp_path / "data" / "secrets" / "audit-hmac.key").exists()
    shutil.rmtree(log.dir)
    (tmp_path / "data" / "secrets" / "audit-witness.jsonl").unlink()
    result = open_audit_log(_settings(**values), tmp_path / "data").verify()
    assert not result.ok and "missing" in result.reason
    # A witness entry this key did not sign is refused, not trusted.
    entries = outside.read_text().splitlines()
    forged = json.loads(entries[-1]) | {"seq": 999}
    outside.write_text("\n".join(entries) + "\n" + json.dumps(forged) + "\n")
    assert "did not sign" in open_audit_log(_settings(**values), tmp_path / "data").verify().reason


def test_a_torn_last_line_is_cut_off_and_recorded(tmp_path: Path) -> None:
    log = _filled(tmp_path, 7)
    partial = b'{"action":"ask","actor":"user1","data":{"quest'
    with open(log.path, "ab") as fh:  # what a crash in the middle of a write leaves
        fh.write(partial)
    assert not log.verify().ok
    reopened = open_audit_log(_settings(), tmp_path)
    reopened.start()  # what the container does when it opens the log
    records = [json.loads(x) for x in _lines(reopened)]
    recovered = [r for r in records if r["action"] == RECOVERED]
    assert len(recovered) == 1 and recovered[0]["data"]["truncated_bytes"] == len(partial)
    assert (log.dir / recovered[0]["data"]["kept_as"]).read_bytes() == partial
    reopened.append(AuditEvent("user2", "ask", "default", {"question": "later"}))
    assert reopened.verify().ok


def test_a_record_cut_in_the_middle_is_not_mistaken_for_a_crash(tmp_path: Path) -> None:
    """Bytes cut inside an earlier, complete record: the signed head says more existed."""
    log = _filled(tmp_path, 7)
    raw = log.path.read_bytes()
    log.path.write_bytes(raw[: raw.rindex(b"\n", 0, len(raw) - 1) - 30])  # inside the one before last
    log.append(AuditEvent("user0", "ask", "default", {}))
    result = log.verify()
    assert not result.ok and "records were removed" in result.reason


def test_stripped_signatures_are_detected(tmp_path: Path) -> None:
    """Removing every MAC (which leaves the hashes intact) does not turn the log into an unsigned,
    older one: the witness knows when signing began."""
    log = _filled(tmp_path, 7)
    stripped = [
        canonical({k: v for k, v in json.loads(x).items() if k != "mac"}) + b"\n" for x in _lines(log)
    ]
    log.path.write_bytes(b"".join(stripped))
    _forge_head(log, json.loads(stripped[-1]))
    log.checkpoints_path.unlink()
    assert not log.verify().ok


def test_archives_are_verified_too(tmp_path: Path) -> None:
    log = _filled(tmp_path)
    log.rotate(retention_days=1, now=datetime.now(UTC) + timedelta(days=10))
    for i in range(3):
        log.append(AuditEvent("late", "ask", "default", {"n": i}))
    assert log.verify().ok
    (archive,) = list(log.archive_dir.iterdir())
    lines = archive.read_bytes().splitlines(keepends=True)
    lines[2] = lines[2].replace(b'"q2"', b'"qX"')
    archive.write_bytes(b"".join(lines))
    result = log.verify()
    assert not result.ok and archive.name in result.reason
    archive.unlink()
    result = log.verify()
    assert not result.ok and "missing" in result.reason


def test_an_unsigned_log_starts_to_be_signed(tmp_path: Path) -> None:
    """A log written before there was a key (plus its retention) keeps verifying once signed."""
    legacy = AuditLog(tmp_path / "audit" / "audit.jsonl", checkpoint_every=5)
    for i in range(8):
        legacy.append(AuditEvent("old", "ask", "default", {"n": i}))
    legacy.rotate(retention_days=1, now=datetime.now(UTC) + timedelta(days=10))
    legacy.append(AuditEvent("old", "ask", "default", {"n": 99}))
    signed = open_audit_log(_settings(), tmp_path)
    assert signed.verify().ok  # nothing signed yet: an older log, not a tampered one
    signed.append(AuditEvent("new", "ask", "default", {}))
    assert signed.verify().ok
    first_signed = [json.loads(x) for x in _lines(signed) if "mac" in json.loads(x)][0]
    assert first_signed["actor"] == "new" and "mac" in json.loads(signed.anchor_path.read_text())


def test_exports_are_signed(tmp_path: Path) -> None:
    log = _filled(tmp_path, 7)
    out = tmp_path / "export.jsonl"
    log.export(out)
    assert log.verify(out).ok and verify_file(out, require_trailer=True).ok  # the chain alone: elsewhere
    other = Signer(b"another key of 32 bytes or so...")
    assert not verify_file(out, require_trailer=True, signer=other).ok


def test_syslog_witness_receives_checkpoints(tmp_path: Path) -> None:
    sock_path = tmp_path / "log.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(sock_path))
        server.settimeout(10)
        log = _filled(tmp_path / "data", 5, witness=[f"syslog:{sock_path}"])
        messages = [server.recv(65536).decode() for _ in range(2)]
    assert all("appliance-audit:" in m for m in messages)
    entries = [json.loads(m.split("appliance-audit: ", 1)[1].rstrip("\x00")) for m in messages]
    assert [e["kind"] for e in entries] == ["start", "checkpoint"]
    assert log.signer is not None and entries[1]["log"] == log.signer.log_id


def test_witness_specs() -> None:
    assert parse_witness("syslog").name == "syslog:/dev/log"
    assert parse_witness("syslog:siem.example:514").name == "syslog:siem.example:514"
    with pytest.raises(ValueError):
        parse_witness("relative/witness.jsonl")


def test_record_hash_ignores_the_signature() -> None:
    record = {"seq": 1, "prev": "0" * 64, "actor": "a"}
    assert record_hash(record) == record_hash(record | {"mac": "x", "hash": "y"})


def test_two_processes_agree_on_one_generated_key(tmp_path: Path) -> None:
    pids = []
    for _ in range(2):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            try:
                open_audit_log(_settings(), tmp_path)
            finally:
                os._exit(0)
        pids.append(pid)
    for pid in pids:
        os.waitpid(pid, 0)
    key = (tmp_path / "secrets" / "audit-hmac.key").read_text()
    assert len(bytes.fromhex(key)) == 32 and not list((tmp_path / "secrets").glob(".audit-hmac.key.*"))
