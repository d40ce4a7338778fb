"""A local ingest (the CLI's path, settings and all) of a folder holding what the filesystem
connector refuses and a file far over the size limit: each ends in the report with its reason,
none of them is read, and the good file beside them is indexed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import bytes_read

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("clean_env")]


def test_refused_and_oversized_files_fail_with_reasons_and_are_never_read(tmp_path: Path) -> None:
    from appliance.commands.ingestion import ingest_local
    from appliance.container import Container
    from appliance.settings import load_settings

    src = tmp_path / "src"
    src.mkdir()
    (src / "good.md").write_text("# Gearbox\n\nThe gearbox oil is changed every 18 months.\n")
    secret = tmp_path / "secret.md"
    secret.write_text("# Vault\n\nThe vault combination is 31-41-59.\n")
    (src / "escape.md").symlink_to(secret)
    os.mkfifo(src / "pipe.md")
    with open(src / "huge.txt", "wb") as fh:
        fh.truncate(3 * 2**30)  # sparse: reading it would be 3 GiB

    settings = load_settings(data_dir=tmp_path / "data", log_level="WARNING", ingestion={"max_file_mb": 1})
    container = Container(settings)
    try:
        before = bytes_read()
        report = ingest_local(container, [str(src)], "limits", [], {}, quiet=True)
        assert bytes_read() - before < 2**30, "the oversized file was read"
        failed = {Path(f["uri"]).name: f["error"] for f in report["failed"]}
        assert failed == {
            "escape.md": "skipped: symlink points outside the source root",
            "pipe.md": "skipped: not a regular file (a FIFO)",
            "huge.txt": "file is 3072.0 MiB, over the 1 MiB limit (ingestion.max_file_mb); not read",
        }
        assert all(f["uri"].startswith(src.as_uri()) for f in report["failed"]), "reported inside the root"
        assert report["added"] == 1
        # The oversized file has a failed row with its reason (the documents list shows it);
        # refused entries were never documents.
        rows = {Path(r.uri).name: r for r in container.ledger.list("limits")}
        assert set(rows) == {"good.md", "huge.txt"}
        assert rows["good.md"].status == "indexed"
        assert (rows["huge.txt"].status, rows["huge.txt"].error) == ("failed", failed["huge.txt"])
        assert rows["huge.txt"].chunk_ids == []

        # The next sync reports them again and deletes nothing.
        again = ingest_local(container, [str(src)], "limits", [], {}, quiet=True)
        assert again["unchanged"] == 1 and again["deleted"] == 0
        assert {Path(f["uri"]).name for f in again["failed"]} == set(failed)
    finally:
        container.close()
