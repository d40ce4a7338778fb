"""Jobs, sources and documents through a running server: a hostile set in one job (every bad
file fails alone with its reason, every good file is indexed, the server stays up), uploads with
hostile names and size limits, ACL on document reads, sources with sync and schedule, cancel,
the CLI beside the server, and the ledger-vs-index check at the end."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, Server, base_env, cli_json, free_port
from tests.fixtures import hostile

pytestmark = pytest.mark.slow
FINISHED = ("succeeded", "failed", "cancelled", "interrupted")


class IngestServer(Server):
    def __init__(self, data_dir: Path, admin_key: str, **settings: str) -> None:  # noqa: D107
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin_key = admin_key
        self.env = base_env(data_dir, APPLIANCE_AUTH__ADMIN_KEY=admin_key, **settings)
        self.log = data_dir.parent / f"serve-{self.port}.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "appliance", "serve", "--port", str(self.port)],
            env=self.env,
            stdout=open(self.log, "w"),  # noqa: SIM115 - lives as long as the server
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IngestServer]:
    data_dir = tmp_path_factory.mktemp("ingest-serve") / "data"
    server = IngestServer(
        data_dir,
        "kb-test-admin-" + os.urandom(8).hex(),
        APPLIANCE_INGESTION__MAX_ARCHIVE_MB="16",
        APPLIANCE_INGESTION__MAX_FILE_MB="1",
        APPLIANCE_INGESTION__SCHEDULER_TICK_S="0.5",
        APPLIANCE_INGESTION__PARSE_TIMEOUT_S="60",
    )
    server.data_dir = data_dir  # type: ignore[attr-defined]
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def admin(srv: IngestServer) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=srv.url, headers={"Authorization": f"Bearer {srv.admin_key}"}, timeout=60
    ) as c:
        yield c


def wait_job(client: httpx.Client, job_id: str, deadline_s: float = 240) -> dict:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        job = client.get(f"/api/v1/jobs/{job_id}").json()
        if job["status"] in FINISHED:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} not finished in {deadline_s} s: {job}")


def hostile_tree(root: Path, corpus_dir: Path) -> tuple[Path, set[str]]:
    src = root / "hostile"
    shutil.copytree(corpus_dir, src)
    good = {p.name for p in src.iterdir()}
    truncated = hostile.pdf("Truncated document text")
    files = {
        "bomb.docx": hostile.zip_bomb("docx", 40),
        "bomb.xlsx": hostile.zip_bomb("xlsx", 40),
        "xxe.docx": hostile.xxe_docx(),
        "laughs.docx": hostile.billion_laughs_docx(),
        "laughs.html": hostile.billion_laughs_html(),
        "encrypted.pdf": hostile.pdf("secret numbers", password="hunter2"),
        "truncated.pdf": truncated[: len(truncated) // 2],
        "random.pdf": os.urandom(5000),
        "empty.txt": b"",
        "invalid-utf8.txt": b"Valid start \xff\xfe\xfa broken bytes \xc3\x28 and the end of the notes.",
        "nospace.txt": b"a" * 100_000,
        "oversized.txt": b"big file " * 200_000,  # 1.7 MiB, over max_file_mb=1
    }
    for name, data in files.items():
        (src / name).write_bytes(data)
    with open(src / "sparse.txt", "wb") as fh:
        fh.truncate(3 * 2**30)  # 3 GiB declared, nothing on disk: refused before a byte is read
    outside = root / "outside-secret.md"
    outside.write_text("# Outside\n\nThe vault combination is 31-41-59.")
    (src / "escape.md").symlink_to(outside)
    return src, good


def test_hostile_set_in_one_job(
    srv: IngestServer, admin: httpx.Client, tmp_path_factory, corpus_dir: Path
) -> None:
    src, good = hostile_tree(tmp_path_factory.mktemp("hostile"), corpus_dir)
    r = admin.post("/api/v1/jobs", json={"sources": [str(src)], "collection": "hostile"})
    assert r.status_code == 202, r.text
    job = wait_job(admin, r.json()["id"])
    assert job["status"] == "succeeded", job
    result = job["result"]
    failed = {Path(f["uri"]).name: f["error"] for f in result["failed"]}
    must_fail = {
        "bomb.docx": "decompression bomb",
        "bomb.xlsx": "decompression bomb",
        "xxe.docx": "DTD",
        "laughs.docx": "DTD",
        "laughs.html": "entities",
        "encrypted.pdf": "password",
        "random.pdf": "unsupported content type",
        "empty.txt": "empty",
        "truncated.pdf": "damaged PDF",
        "oversized.txt": "file is 1.7 MiB, over the 1 MiB limit (ingestion.max_file_mb); not read",
        "sparse.txt": "file is 3072.0 MiB, over the 1 MiB limit (ingestion.max_file_mb); not read",
        "escape.md": "skipped: symlink points outside the source root",
    }
    for name, reason in must_fail.items():
        assert name in failed, (name, failed)
        assert reason in failed[name], (name, failed[name])
    assert set(failed) == set(must_fail), "every other file is indexed"

    docs = admin.get("/api/v1/documents", params={"collection": "hostile", "limit": 100}).json()
    by_name = {Path(d["uri"]).name: d for d in docs["items"]}
    for name in good | {"invalid-utf8.txt", "nospace.txt"}:
        assert by_name[name]["status"] == "indexed" and by_name[name]["chunks"] >= 1, by_name.get(name)
    assert by_name["nospace.txt"]["chunks"] > 10  # bounded pieces, not one 100k-letter chunk
    assert by_name["bomb.docx"]["status"] == "failed" and by_name["bomb.docx"]["error"]
    assert "escape.md" not in by_name and "outside-secret.md" not in by_name  # never left the root
    assert job["progress"]["seen"] == job["progress"]["done"] + job["progress"]["failed"]
    assert job["progress"]["chunks"] == result["chunks"] > 0

    hits = admin.post("/api/v1/search", json={"query": "vault combination", "collection": "hostile", "k": 10})
    assert "31-41-59" not in hits.text
    assert httpx.get(f"{srv.url}/healthz").status_code == 200
    assert srv.proc.poll() is None


def test_upload_hostile_name_size_limit_reuse_reindex_delete(srv: IngestServer, admin: httpx.Client) -> None:
    body = b"# Turbine oil\n\nThe gearbox oil of the X-200 is changed every 18 months.\n"
    r = admin.post(
        "/api/v1/documents",
        files={"file": ("../../../escaped.md", body, "text/markdown")},
        data={"collection": "uploads"},
    )
    assert r.status_code == 202, r.text
    doc_id = r.json()["document_id"]
    assert wait_job(admin, r.json()["job"]["id"])["status"] == "succeeded"
    data_dir: Path = srv.data_dir  # type: ignore[attr-defined]
    stored = list((data_dir / "uploads" / "uploads").iterdir())
    assert len(stored) == 1 and "escaped" not in stored[0].name and stored[0].read_bytes() == body
    assert not (data_dir.parent / "escaped.md").exists() and not (data_dir / "escaped.md").exists()
    doc = admin.get(f"/api/v1/documents/{doc_id}").json()
    assert doc["status"] == "indexed" and doc["uri"].endswith("/escaped.md") and ".." not in doc["uri"]

    # identical bytes under another name: vectors reused, not parsed and embedded again
    r2 = admin.post("/api/v1/documents", files={"file": ("copy.md", body)}, data={"collection": "uploads"})
    copy = wait_job(admin, r2.json()["job"]["id"])
    assert copy["result"]["reused"] == 1 and copy["result"]["added"] == 1
    assert admin.get(f"/api/v1/documents/{r2.json()['document_id']}").json()["chunks"] == doc["chunks"]

    too_big = admin.post("/api/v1/documents", files={"file": ("big.txt", b"x" * (2 * 2**20))})
    assert too_big.status_code == 413 and too_big.json()["error"]["code"] == "payload_too_large"

    job = admin.post(f"/api/v1/documents/{doc_id}/reindex")
    assert job.status_code == 202
    reindexed = wait_job(admin, job.json()["id"])
    assert reindexed["status"] == "succeeded" and reindexed["result"]["updated"] == 1, reindexed

    assert admin.delete(f"/api/v1/documents/{doc_id}").status_code == 200
    assert admin.get(f"/api/v1/documents/{doc_id}").status_code == 404
    assert not stored[0].exists()
    listed = admin.get("/api/v1/documents", params={"collection": "uploads"}).json()
    assert [d["id"] for d in listed["items"]] == [r2.json()["document_id"]] and listed["total"] == 1


def test_documents_respect_access_rules(srv: IngestServer, admin: httpx.Client) -> None:
    secret = admin.post(
        "/api/v1/documents",
        files={"file": ("board.md", b"# Board minutes\n\nThe merger closes in May.\n")},
        data={"collection": "acl", "allow": ["user:alice"]},
    ).json()
    public = admin.post(
        "/api/v1/documents",
        files={"file": ("canteen.md", b"# Canteen\n\nLunch is served at noon.\n")},
        data={"collection": "acl"},
    ).json()
    for r in (secret, public):
        assert wait_job(admin, r["job"]["id"])["status"] == "succeeded"
    bob_key = cli_json(["keys", "create", "--user", "bob", "--role", "employee"], srv.env)["key"]
    with httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {bob_key}"}) as bob:
        listed = bob.get("/api/v1/documents", params={"collection": "acl"}).json()
        assert [d["id"] for d in listed["items"]] == [public["document_id"]] and listed["total"] == 1
        assert bob.get(f"/api/v1/documents/{secret['document_id']}").status_code == 404
        assert bob.get(f"/api/v1/documents/{public['document_id']}").status_code == 200
        assert bob.post("/api/v1/documents", files={"file": ("x.md", b"# x")}).status_code == 403
        assert bob.delete(f"/api/v1/documents/{public['document_id']}").status_code == 403
        assert bob.get("/api/v1/jobs").status_code == 403
    assert httpx.get(f"{srv.url}/api/v1/documents").status_code == 401


def test_sources_sync_schedule_and_purge(srv: IngestServer, admin: httpx.Client, tmp_path: Path) -> None:
    folder = tmp_path / "wiki"
    folder.mkdir()
    for i in range(3):
        (folder / f"page{i}.md").write_text(f"# Page {i}\n\nWiki page {i} about the cooling loop.")
    assert admin.post("/api/v1/sources", json={"spec": str(tmp_path / "missing")}).status_code == 400
    source = admin.post("/api/v1/sources", json={"spec": str(folder), "collection": "wiki"}).json()
    assert source["interval_s"] == 0 and source["collection"] == "wiki"
    first = wait_job(admin, admin.post(f"/api/v1/sources/{source['id']}/sync").json()["id"])
    assert (first["result"]["added"], first["source_id"]) == (3, source["id"])
    (folder / "page3.md").write_text("# Page 3\n\nA new page.")
    (folder / "page0.md").unlink()
    second = wait_job(admin, admin.post(f"/api/v1/sources/{source['id']}/sync").json()["id"])
    assert {k: second["result"][k] for k in ("added", "unchanged", "deleted")} == {
        "added": 1,
        "unchanged": 2,
        "deleted": 1,
    }
    assert source["id"] in [s["id"] for s in admin.get("/api/v1/sources").json()["items"]]

    scheduled = admin.post(
        "/api/v1/sources", json={"spec": str(folder), "collection": "wiki2", "interval_s": 1}
    ).json()
    end = time.monotonic() + 60
    jobs: list = []
    while time.monotonic() < end and not jobs:
        jobs = admin.get("/api/v1/jobs", params={"source_id": scheduled["id"]}).json()["items"]
        time.sleep(0.2)
    assert jobs and jobs[0]["actor"] == "scheduler" and jobs[0]["kind"] == "sync"
    assert admin.delete(f"/api/v1/sources/{scheduled['id']}").status_code == 204  # stop the schedule
    assert wait_job(admin, jobs[-1]["id"])["status"] == "succeeded"

    assert admin.delete(f"/api/v1/sources/{source['id']}", params={"purge": "true"}).status_code == 204
    assert admin.get("/api/v1/documents", params={"collection": "wiki"}).json()["total"] == 0
    assert admin.get(f"/api/v1/sources/{source['id']}").status_code == 404


def test_cancel_queued_and_running_jobs(srv: IngestServer, admin: httpx.Client, tmp_path: Path) -> None:
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(40):
        (folder / f"n{i:02}.txt").write_text(
            f"Note {i}. " + " ".join(f"Sentence {k} of note {i}." for k in range(40))
        )
    running = admin.post("/api/v1/jobs", json={"sources": [str(folder)], "collection": "many"}).json()
    queued = admin.post("/api/v1/jobs", json={"sources": [str(folder)], "collection": "many2"}).json()
    cancelled = admin.post(f"/api/v1/jobs/{queued['id']}/cancel").json()
    assert cancelled["status"] == "cancelled"
    admin.post(f"/api/v1/jobs/{running['id']}/cancel")
    done = wait_job(admin, running["id"])
    assert done["status"] == "cancelled", done
    assert done["progress"]["done"] + done["progress"]["failed"] < 40
    assert admin.get("/api/v1/jobs/nope").status_code == 404


def test_cli_ingest_beside_the_server_runs_a_job(
    srv: IngestServer, admin: httpx.Client, corpus_dir: Path
) -> None:
    report = cli_json(["ingest", str(corpus_dir), "--collection", "cli"], srv.env)
    assert report["added"] == 5 and report["failed"] == []
    jobs = admin.get("/api/v1/jobs", params={"limit": 20}).json()["items"]
    [job] = [j for j in jobs if j["collection"] == "cli"]
    assert job["kind"] == "ingest" and job["result"]["added"] == 5


def test_ledger_and_index_agree_at_the_end(srv: IngestServer, admin: httpx.Client) -> None:
    verdict = admin.get("/api/v1/ingest/verify").json()
    assert verdict["ok"], verdict
    assert verdict["collections"]["hostile"]["ledger_chunks"] > 0
