"""`appliance ingest SOURCE... --json` through the real CLI, one source of every kind in one run:
chunks land in the real shard and the ledger, per-item ACLs arrive, and a re-run is unchanged."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from tests.conftest import base_env, cli_json
from tests.integration.connectors.conftest import S3, Site, make_repo, make_sqlite

pytestmark = [pytest.mark.slow, pytest.mark.services]


def test_ingest_every_kind_then_rerun_is_unchanged(tmp_path: Path, site: Site, s3_server: S3) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "onboarding.md").write_text("# Onboarding\nNew staff get a laptop on day one.")
    (folder / "travel.txt").write_text("Travel expenses are refunded within 14 days.")

    site.html("/", "Intranet", "The canteen opens at noon.", ["/parking.html"])
    site.html("/parking.html", "Parking", "Parking permits are issued by facilities.", ETag='"p1"')

    bucket = "kb-e2e"
    client = s3_server.client()
    client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key="hr/leave.md", Body=b"# Leave\nEveryone gets 30 days of leave.")
    client.put_object(
        Bucket=bucket,
        Key="hr/pay.md",
        Body=b"# Pay\nSalaries are paid monthly.",
        Metadata={"acl": "group:finance"},
    )

    repo = make_repo(
        tmp_path / "repo",
        {
            "guide.md": "# Guide\nDeploys happen on Tuesdays.",
            "docs/oncall.md": "# On call\nThe rota changes weekly.",
        },
    )
    db = make_sqlite(
        tmp_path / "kb.db",
        [
            (1, "Security", "Badges must be worn at all times.", "2026-01-01", None),
            (2, "Holidays", "The office closes on public holidays.", "2026-01-02", None),
        ],
    )
    sources = [
        str(folder),
        site.url + "/",
        f"s3://{bucket}/hr/",
        f"git:{repo}#main",
        f"sqlite:///{db}#articles",
    ]
    env = base_env(
        tmp_path / "data",
        APPLIANCE_CONNECTORS__WEB__ALLOW_PRIVATE='["127.0.0.1"]',
        APPLIANCE_CONNECTORS__WEB__SITEMAP="false",
        APPLIANCE_CONNECTORS__ALLOW_PRIVATE='["127.0.0.1"]',
        APPLIANCE_CONNECTORS__S3__ENDPOINT_URL=s3_server.endpoint,
        APPLIANCE_CONNECTORS__S3__REGION="us-east-1",
        APPLIANCE_CONNECTORS__S3__ACCESS_KEY_ID="test",
        APPLIANCE_CONNECTORS__S3__SECRET_ACCESS_KEY="test",
    )

    first = cli_json(["ingest", *sources, "--option", "max_depth=1"], env)
    assert first["failed"] == [], first["failed"]
    assert first["added"] == 10 and first["chunks"] >= 10, first

    with sqlite3.connect(tmp_path / "data" / "appliance.db") as conn:
        rows = conn.execute("SELECT source, uri, acl, status FROM documents").fetchall()
    by_kind = {
        "filesystem": [r for r in rows if r[0].startswith("file://")],
        "web": [r for r in rows if r[0].startswith("http://")],
        "s3": [r for r in rows if r[0].startswith("s3://")],
        "git": [r for r in rows if r[0].startswith("git+")],
        "sql": [r for r in rows if r[0].startswith("sqlite:")],
    }
    assert {k: len(v) for k, v in by_kind.items()} == dict.fromkeys(by_kind, 2)
    assert all(r[3] == "indexed" for r in rows)
    acl = {r[1]: json.loads(r[2]) for r in by_kind["s3"]}
    assert acl[f"s3://{bucket}/hr/pay.md"] == ["group:finance"], "x-amz-meta-acl reaches the chunks"
    assert acl[f"s3://{bucket}/hr/leave.md"] == ["*"]

    site.not_modified.clear()
    second = cli_json(["ingest", *sources, "--option", "max_depth=1"], env)
    assert (second["added"], second["updated"], second["unchanged"], second["failed"]) == (0, 0, 10, [])
    assert site.not_modified == ["/parking.html"]  # a conditional GET: its body was not sent again
