"""Type detection, archive and DTD checks, upload names, schedule and progress arithmetic."""

from __future__ import annotations

import io
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from appliance.domain import InvalidRequest, ParseError
from appliance.ingestion.formats import ArchiveLimits, detect_kind, preflight
from appliance.ingestion.jobs import is_due
from appliance.ingestion.pipeline import IngestProgress
from connectors.upload import UploadConnector, safe_filename
from tests.fixtures import hostile


def docx_bytes() -> bytes:
    from docx import Document

    doc = Document()
    doc.add_paragraph("hello")
    buf = io.BytesIO()
    doc.save(buf)
    return buf.getvalue()


def xlsx_bytes() -> bytes:
    import openpyxl

    wb = openpyxl.Workbook()
    wb.active.append(["a", 1])
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("data", "name", "kind"),
    [
        (b"%PDF-1.4\n%\xe2\xe3\n1 0 obj<<>>endobj\n", "x.bin", "pdf"),
        (b"<!DOCTYPE html><html><head><title>t</title></head><body><p>x</p></body></html>", "page", "html"),
        (b"# Title\n\nSome *markdown* text.\n", "notes.md", "md"),
        (b"# Title\n\nSome *markdown* text.\n", "notes.txt", "txt"),
        (b"a,b,c\n1,2,3\n4,5,6\n", "table.csv", "csv"),
        (b"plain words only\n", "report.pdf", "txt"),  # the bytes win over the name
        (
            b"From: a@example.com\nTo: b@example.com\nSubject: hi\nDate: Mon, 1 Jan 2024 10:00:00 +0000\n\nbody\n",
            "mail",
            "eml",
        ),
    ],
)
def test_kind_comes_from_the_bytes(data: bytes, name: str, kind: str) -> None:
    assert detect_kind(data, name) == kind


def test_office_and_image_kinds() -> None:
    assert detect_kind(docx_bytes(), "renamed.pdf") == "docx"
    assert detect_kind(xlsx_bytes(), "sheet") == "xlsx"
    assert detect_kind(hostile.png("hi"), "scan.pdf") == "image"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (bytes(range(256)) * 40, "unsupported content type"),
        (b"PK\x03\x04" + b"\0" * 100, "ZIP"),
    ],
)
def test_undecodable_content_fails_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(ParseError, match=reason):
        detect_kind(data, "x.pdf")


def test_zip_bomb_is_refused_by_declared_size_before_inflating() -> None:
    bomb = hostile.zip_bomb("docx", 40)
    assert len(bomb) < 200_000
    with pytest.raises(ParseError, match="declares 40 MiB uncompressed"):
        preflight(bomb, "bomb.docx", ArchiveLimits(max_uncompressed_bytes=16 * 2**20))
    assert preflight(bomb, "bomb.docx", ArchiveLimits(max_uncompressed_bytes=64 * 2**20)) == "docx"


def test_too_many_zip_entries_are_refused() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("[Content_Types].xml", hostile.CONTENT_TYPES)
        zf.writestr("xl/workbook.xml", "<workbook/>")
        for i in range(50):
            zf.writestr(f"xl/n{i}.bin", b"")
    with pytest.raises(ParseError, match="52 entries"):
        preflight(buf.getvalue(), "a.xlsx", ArchiveLimits(max_entries=20))


@pytest.mark.parametrize("build", [hostile.xxe_docx, hostile.billion_laughs_docx])
def test_office_xml_with_a_dtd_is_refused(build: object) -> None:
    with pytest.raises(ParseError, match="DTD"):
        preflight(build(), "evil.docx", ArchiveLimits())  # type: ignore[operator]


def test_html_declaring_entities_is_refused_but_a_doctype_is_fine() -> None:
    with pytest.raises(ParseError, match="entities"):
        preflight(hostile.billion_laughs_html(), "lol.html", ArchiveLimits())
    assert (
        preflight(b"<!DOCTYPE html><html><body><p>ok</p></body></html>", "a.html", ArchiveLimits()) == "html"
    )


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("../../etc/passwd", "passwd"),
        ("..\\..\\windows\\win.ini", "win.ini"),
        ("..", "upload"),
        ("", "upload"),
        (None, "upload"),
        ("rep\x00ort\n.pdf", "report.pdf"),
    ],
)
def test_upload_names_are_display_only(sent: str | None, kept: str) -> None:
    assert safe_filename(sent) == kept


def test_upload_is_stored_under_a_generated_name(tmp_path: Path) -> None:
    connector, path = UploadConnector.store(tmp_path, "default", "../../evil name.PDF")
    assert path.parent == tmp_path / "default"
    assert path.name.endswith(".pdf") and "evil" not in path.name
    path.write_bytes(b"x")
    again = UploadConnector.from_uri(connector.root, tmp_path)
    assert again.path == path and again.filename == "evil name.PDF"
    [item] = list(again.discover())
    assert item.metadata["filename"] == "evil name.PDF"
    with pytest.raises(InvalidRequest):
        UploadConnector.from_uri("upload://default/../../etc/passwd", tmp_path)


def test_schedule_due() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    assert not is_due(None, 0)
    assert is_due(None, 60)
    assert not is_due(t0, 60, at=t0 + timedelta(seconds=59))
    assert is_due(t0.replace(tzinfo=None), 60, at=t0 + timedelta(seconds=60))  # SQLite hands back naive UTC


def test_progress_rate_and_eta() -> None:
    p = IngestProgress(seen=10, done=4, failed=1, chunks=40)
    assert p.snapshot()["eta_s"] is None  # still discovering: no total yet
    p.discovering = False
    p.started -= 10
    snap = p.snapshot()
    assert snap["rate_docs_s"] == pytest.approx(0.5, rel=0.05)
    assert snap["eta_s"] == pytest.approx(10, rel=0.05)
    p.done = 9
    assert p.snapshot()["eta_s"] == 0.0
