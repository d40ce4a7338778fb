"""Crash safety: `kill -9` an ingest at random points, change the source between attempts, then
re-run and check the ledger against the shard: 0 missing, 0 orphan, 0 duplicate chunks."""

from __future__ import annotations

import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, base_env, cli_json, run_cli
from tests.fixtures.shard import check_ledger_against_shard

pytestmark = pytest.mark.slow

TOPICS = ["turbines", "vacation", "safety", "invoices", "backups", "cooling", "badges", "warranty"]


def write_corpus(src: Path, corpus_dir: Path, rng: random.Random) -> None:
    shutil.copytree(corpus_dir, src)
    for i in range(8):
        topic = TOPICS[i % len(TOPICS)]
        paras = [
            f"## Part {j}\n\nNote {i}.{j} on {topic}: "
            + " ".join(f"{topic} detail {k} for site {i}." for k in range(12))
            for j in range(rng.randint(1, 3))
        ]
        (src / f"note-{i:02}.md").write_text(f"# Note {i} about {topic}\n\n" + "\n\n".join(paras))


def ledger_rows(data_dir: Path) -> int:
    db = data_dir / "appliance.db"
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            return int(conn.execute("select count(*) from documents").fetchone()[0])
    except sqlite3.Error:
        return 0


def kill_at_random_point(src: Path, env: dict[str, str], data_dir: Path, rng: random.Random) -> str:
    """Start an ingest and kill -9 it once the ledger has a random number of rows (plus a random
    fraction of a second, so the kill lands inside a document's write sequence too)."""
    target = rng.randint(0, 10)
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance", "ingest", str(src), "--json"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None and ledger_rows(data_dir) < target:
        time.sleep(0.05)
    if proc.poll() is None:
        time.sleep(rng.uniform(0, 0.8))  # the kill point itself: part of the test, not a sync
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    return f"target {target} rows, exit {proc.returncode}"


def test_kill_9_at_random_points_converges(tmp_path: Path, corpus_dir: Path) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    src = tmp_path / "src"
    write_corpus(src, corpus_dir, rng)
    data_dir = tmp_path / "data"
    env = base_env(data_dir)
    history = []
    for attempt in range(3):
        history.append(kill_at_random_point(src, env, data_dir, rng))
        # the source moves on between attempts: an edit, a deletion, a new file
        (src / f"note-{attempt:02}.md").write_text(
            f"# Rewritten {attempt}\n\nNew text {attempt} about spare parts."
        )
        (src / f"note-{7 - attempt:02}.md").unlink()
        (src / f"new-{attempt}.txt").write_text(f"Fresh notes {attempt} about the cooling plant.")

    report = cli_json(["ingest", str(src)], env)
    assert report["failed"] == [], (seed, history)
    expected = {p.name for p in src.iterdir()}

    verdict = run_cli(["verify", "--json"], env)
    assert verdict.returncode == 0, (seed, history, verdict.stdout, verdict.stderr[-2000:])

    # And independently of `verify`: the ledger against every point in the shard.
    from appliance.settings import load_settings

    records = check_ledger_against_shard(load_settings(data_dir=data_dir), f"seed {seed}, {history}")
    assert {Path(r.uri).name for r in records} == expected, (seed, history)
