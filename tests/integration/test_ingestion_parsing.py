"""Real parsing in the real warm worker pool: every format, OCR, bad PDFs, and a worker that
overruns its wall-clock limit being killed and replaced."""

from __future__ import annotations

import dataclasses
import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.domain import ParseError
from appliance.ingestion.parsing import ParseLimits, ParserPool
from tests.fixtures import hostile

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pool() -> Iterator[ParserPool]:
    from appliance.models import resolve_spacy

    pool = ParserPool(resolve_spacy("default").path, ParseLimits(timeout_s=120), workers=1)
    pool.start()
    yield pool
    pool.close()


def texts(elements: list[dict]) -> str:
    return "\n".join(e["text"] for e in elements)


def pptx_bytes() -> bytes:
    from pptx import Presentation

    deck = Presentation()
    slide = deck.slides.add_slide(deck.slide_layouts[1])
    slide.shapes.title.text = "Quarterly review"
    slide.placeholders[1].text = "Turbine availability reached 97.4 percent."
    buf = io.BytesIO()
    deck.save(buf)
    return buf.getvalue()


def xlsx_bytes() -> bytes:
    import openpyxl

    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Stock"
    ws.append(["Part", "Count"])
    ws.append(["Gearbox bearing", 12])
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


EML = (
    b"From: ops@example.com\nTo: all@example.com\nSubject: Shutdown notice\n"
    b"Date: Mon, 1 Jan 2024 10:00:00 +0000\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n\n"
    b"The Bergen plant shuts down for maintenance on 14 March.\n"
)


@pytest.mark.parametrize(
    ("name", "build", "expect", "element_type"),
    [
        ("deck.pptx", pptx_bytes, "97.4 percent", "NarrativeText"),
        ("stock.xlsx", xlsx_bytes, "Gearbox bearing", "Table"),
        ("stock.csv", lambda: b"Part,Count\nGearbox bearing,12\n", "Gearbox bearing", "Table"),
        ("notice.eml", lambda: EML, "14 March", None),
        (
            "latin1.txt",
            lambda: "Caf\xe9 cr\xe8me br\xfbl\xe9e is served on Fridays.".encode("latin-1"),
            "Café",
            None,
        ),
    ],
)
def test_each_format_is_parsed(
    pool: ParserPool, name: str, build, expect: str, element_type: str | None
) -> None:
    elements = pool.parse(build(), name)
    assert expect in texts(elements)
    if element_type:
        assert element_type in {e["type"] for e in elements}


def test_image_is_read_with_ocr(pool: ParserPool) -> None:
    elements = pool.parse(hostile.png("Invoice number 4711"), "scan.png")
    assert "4711" in texts(elements)
    assert elements[0]["metadata"]["page_number"] == 1


def test_scanned_pdf_page_without_text_layer_goes_through_ocr(pool: ParserPool) -> None:
    elements = pool.parse(hostile.scanned_pdf("Warranty code 5150"), "scanned.pdf")
    assert "5150" in texts(elements)


def test_password_protected_pdf_fails_with_a_reason(pool: ParserPool) -> None:
    with pytest.raises(ParseError, match="password"):
        pool.parse(hostile.pdf("secret", password="hunter2"), "locked.pdf")


def test_truncated_pdf_fails_as_damaged(pool: ParserPool) -> None:
    data = hostile.pdf("Truncated document text")
    # Cut in half the page's content stream is gone; cut just before the cross-reference table
    # the text is still there, but the file has no end: both are damaged, and say so.
    for cut in (len(data) // 2, data.rindex(b"xref")):
        with pytest.raises(ParseError, match="^damaged PDF: "):
            pool.parse(data[:cut], "truncated.pdf")
    assert "Truncated document text" in texts(pool.parse(data, "whole.pdf"))


def test_overrunning_worker_is_killed_and_replaced(pool: ParserPool) -> None:
    [worker] = list(pool._idle.queue)
    old_pid = worker.process.pid
    strict = dataclasses.replace(pool.limits, timeout_s=0.05)
    pool.limits, saved = strict, pool.limits
    try:
        with pytest.raises(ParseError, match=r"longer than 0.05 s \(ingestion.parse_timeout_s\)"):
            pool.parse(hostile.scanned_pdf("slow page " * 3), "slow.pdf")
    finally:
        pool.limits = saved
    with pytest.raises(ProcessLookupError):
        os.kill(old_pid, 0)  # the whole group is gone
    assert "still works" in texts(pool.parse(b"the pool still works", "after.txt"))
    [fresh] = list(pool._idle.queue)
    assert fresh.process.pid != old_pid


def test_a_parser_worker_never_loads_torch(pool: ParserPool) -> None:
    """spaCy pulls torch in whenever it is installed; the parsers need none of it (memory, start-up)."""
    assert "parsed" in texts(pool.parse(b"parsed with every import warm", "warm.txt"))
    [worker] = list(pool._idle.queue)
    maps = Path(f"/proc/{worker.process.pid}/maps").read_text()
    assert "/spacy/" in maps  # warm: spaCy's extensions are loaded
    assert "libtorch" not in maps
