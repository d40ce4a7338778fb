"""Property-style tampering: random edits, deletions, reorderings and truncations of the live log
and of an export are all detected (seeded RNG, so a failure reproduces)."""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from appliance.audit import AuditEvent, AuditLog, verify_file

N = 23


def _make(tmp: Path) -> AuditLog:
    log = AuditLog(tmp / "audit" / "audit.jsonl", checkpoint_every=5)
    for i in range(N):
        log.append(AuditEvent(f"user{i % 4}", "ask", "default", {"question": f"question {i}", "n": i}))
    return log


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("pristine")
    log = _make(tmp)
    log.export(tmp / "export.jsonl")
    return tmp


def _edit(lines: list[bytes], rng: random.Random) -> list[bytes]:
    i = rng.randrange(len(lines))
    record = json.loads(lines[i])
    choice = rng.choice(["actor", "question", "seq", "ts", "flip"])
    if choice == "actor" and "actor" in record:
        record["actor"] = "mallory"
    elif choice == "question" and "data" in record:
        record["data"]["question"] = "something else"
    elif choice == "seq" and "seq" in record:
        record["seq"] += 1
    elif choice == "ts" and "ts" in record:
        record["ts"] = "2001-01-01T00:00:00+00:00"
    else:
        raw = bytearray(lines[i])
        j = rng.randrange(len(raw) - 1)
        raw[j] = (raw[j] + 1 - 32) % 94 + 32 if raw[j] != ord("\n") else raw[j]
        if bytes(raw) == lines[i]:
            raw[0:1] = b"X"
        lines[i] = bytes(raw)
        return lines
    lines[i] = json.dumps(record, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    return lines


def _delete(lines: list[bytes], rng: random.Random) -> list[bytes]:
    del lines[rng.randrange(len(lines))]
    return lines


def _reorder(lines: list[bytes], rng: random.Random) -> list[bytes]:
    i, j = rng.sample(range(len(lines)), 2)
    lines[i], lines[j] = lines[j], lines[i]
    return lines


def _truncate_lines(lines: list[bytes], rng: random.Random) -> list[bytes]:
    return lines[: rng.randrange(len(lines))]


def _truncate_bytes(lines: list[bytes], rng: random.Random) -> list[bytes]:
    raw = b"".join(lines)
    cut = rng.randrange(1, len(raw) - 1)
    if raw[cut - 1 : cut] == b"\n":
        cut -= 1  # make it a cut inside a record
    return [raw[:cut]]


MUTATIONS: list[Callable[[list[bytes], random.Random], list[bytes]]] = [
    _edit,
    _delete,
    _reorder,
    _truncate_lines,
    _truncate_bytes,
]


def test_pristine_log_and_export_verify(pristine: Path) -> None:
    log = AuditLog(pristine / "audit" / "audit.jsonl")
    result = log.verify()
    assert result.ok, result
    # 23 events + 5 checkpoint records (after 5, 10, 15, 20, 25 records in the chain)
    assert result.records == N + 5
    assert len((pristine / "audit" / "checkpoints.jsonl").read_text().splitlines()) == 5
    assert log.verify(pristine / "export.jsonl").ok


@pytest.mark.parametrize("seed", range(60))
def test_tampered_live_log_is_detected(pristine: Path, tmp_path: Path, seed: int) -> None:
    shutil.copytree(pristine / "audit", tmp_path / "audit")
    log = AuditLog(tmp_path / "audit" / "audit.jsonl")
    rng = random.Random(seed)
    mutate = MUTATIONS[seed % len(MUTATIONS)]
    lines = log.path.read_bytes().splitlines(keepends=True)
    log.path.write_bytes(b"".join(mutate(list(lines), rng)))
    result = log.verify()
    assert not result.ok, f"{mutate.__name__} (seed {seed}) went unnoticed"
    assert result.first_bad is not None and result.reason


@pytest.mark.parametrize("seed", range(60))
def test_tampered_export_is_detected(pristine: Path, tmp_path: Path, seed: int) -> None:
    rng = random.Random(1000 + seed)
    mutate = MUTATIONS[seed % len(MUTATIONS)]
    lines = (pristine / "export.jsonl").read_bytes().splitlines(keepends=True)
    out = tmp_path / "export.jsonl"
    out.write_bytes(b"".join(mutate(list(lines), rng)))
    result = verify_file(out, require_trailer=True)
    assert not result.ok, f"{mutate.__name__} (seed {seed}) went unnoticed"


def test_first_bad_record_is_named(pristine: Path, tmp_path: Path) -> None:
    shutil.copytree(pristine / "audit", tmp_path / "audit")
    log = AuditLog(tmp_path / "audit" / "audit.jsonl")
    lines = log.path.read_bytes().splitlines(keepends=True)
    lines[6] = lines[6].replace(b'"user', b'"uzer', 1)
    log.path.write_bytes(b"".join(lines))
    assert log.verify().first_bad == 7


def test_tail_cut_after_the_last_checkpoint_is_detected(pristine: Path, tmp_path: Path) -> None:
    shutil.copytree(pristine / "audit", tmp_path / "audit")
    log = AuditLog(tmp_path / "audit" / "audit.jsonl")
    lines = log.path.read_bytes().splitlines(keepends=True)
    log.path.write_bytes(b"".join(lines[:-1]))  # the chain itself is still consistent
    assert verify_file(log.path).ok
    result = log.verify()
    assert not result.ok and "head" in result.reason


def test_retention_archives_and_keeps_the_chain_verifiable(tmp_path: Path) -> None:
    log = _make(tmp_path)
    later = datetime.now(UTC) + timedelta(days=10)
    log.append(AuditEvent("late", "ask", "default", {}))
    # Make the last record look recent relative to a clock 10 days on, the rest old.
    lines = log.path.read_bytes().splitlines(keepends=True)
    total = len(lines)
    report = log.rotate(retention_days=1, now=later + timedelta(seconds=0))
    assert report["archived"] == total  # everything was older than the cutoff
    archive = Path(report["archive"])
    assert verify_file(archive, require_trailer=True).ok
    result = log.verify()
    assert result.ok, result
    log.append(AuditEvent("after", "ask", "default", {}))
    assert log.verify().ok
    seqs = [json.loads(line)["seq"] for line in log.path.read_bytes().splitlines()]
    assert seqs[0] == total + 1  # the live log continues the archived chain
    # An export of the rotated log verifies on its own, anchored at the archive's head.
    out = tmp_path / "after.jsonl"
    log.export(out)
    assert verify_file(out, require_trailer=True).ok
    # Dropping the first live record is still caught: the anchor pins where the log starts.
    lines = log.path.read_bytes().splitlines(keepends=True)
    log.path.write_bytes(b"".join(lines[1:]))
    assert not log.verify().ok


def test_a_running_server_keeps_applying_retention(tmp_path: Path) -> None:
    """keep_retention (run by the server's lifespan) archives at once and again each round, and
    the live log stays verifiable throughout."""
    import asyncio

    from appliance.audit import keep_retention

    log = _make(tmp_path)
    later = datetime.now(UTC) + timedelta(days=10)

    async def run() -> None:
        task = asyncio.create_task(keep_retention(log, 1, every_s=0.05, now=lambda: later))
        archive = log.dir / "archive"
        for _ in range(100):  # the first round runs at once
            await asyncio.sleep(0.02)
            if archive.exists() and any(archive.iterdir()):
                break
        first = len(list(archive.iterdir()))
        await asyncio.to_thread(log.append, AuditEvent("late", "ask", "default", {}))
        for _ in range(100):  # a later round archives what came since
            await asyncio.sleep(0.02)
            if len(list(archive.iterdir())) > first:
                break
        task.cancel()
        assert first == 1 and len(list(archive.iterdir())) > first

    asyncio.run(run())
    assert log.verify().ok
    assert all(verify_file(p, require_trailer=True).ok for p in (log.dir / "archive").iterdir())
