"""Parser limits set through the settings, hit by real documents in the real worker pool: the
memory cap (the worker's group is killed and replaced), the extracted-text cap (partitioning
stops there, OCR included), and the archive checks, which run inside the worker."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance.domain import ParseError
from appliance.ingestion.parsing import ParseLimits, ParserPool, partition_bytes
from tests.fixtures import hostile

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("clean_env")]


def texts(elements: list[dict]) -> str:
    return "\n".join(e["text"] for e in elements)


def vm_peak_mib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmPeak:"):
            return int(line.split()[1]) // 1024
    raise AssertionError(f"no VmPeak for {pid}")


def idle_worker(pool: ParserPool, deadline_s: float = 120) -> Any:
    """The pool's one worker, once it is idle (a replacement starts in the background)."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        workers = list(pool._idle.queue)
        if workers:
            return workers[0]
        time.sleep(0.1)
    raise AssertionError("no idle parser worker")


@pytest.fixture
def pool_from(tmp_path: Path) -> Iterator[Callable[..., ParserPool]]:
    """A started parser pool built by the container from settings with these ``ingestion`` keys."""
    from appliance.container import Container
    from appliance.settings import load_settings

    made: list[Any] = []

    def make(**ingestion: Any) -> ParserPool:
        settings = load_settings(
            data_dir=tmp_path / f"data{len(made)}", log_level="WARNING", ingestion=ingestion
        )
        container = Container(settings)
        made.append(container)
        pool: ParserPool = container.parser
        pool.start()
        return pool

    yield make
    for container in made:
        container.close()


def test_memory_cap_kills_the_worker_group_and_replaces_it(pool_from: Callable[..., ParserPool]) -> None:
    warm = pool_from()
    warm.parse(hostile.png("warm up"), "warm.png")  # what a worker needs to OCR a small image
    cap = vm_peak_mib(idle_worker(warm).process.pid) + 150
    warm.close()

    pool = pool_from(parse_memory_mb=cap, parse_timeout_s=120)
    old_pid = idle_worker(pool).process.pid
    poster = hostile.huge_png(9400, 9400)  # 0.3 MB of PNG, 337 MiB of pixels once decoded
    assert len(poster) < 2**20
    with pytest.raises(ParseError) as caught:
        pool.parse(poster, "poster.png")
    assert caught.value.message == (
        f"parser exceeded the {cap} MiB memory limit (ingestion.parse_memory_mb) and was stopped"
    )
    with pytest.raises(ProcessLookupError):
        os.kill(old_pid, 0)  # killed with its group, not left running
    assert "still works" in texts(pool.parse(b"the pool still works", "after.txt"))
    assert idle_worker(pool).process.pid != old_pid


def test_extracted_text_over_the_cap_fails_that_document_only(pool_from: Callable[..., ParserPool]) -> None:
    pool = pool_from(max_text_mb=0.001)  # 1048 bytes
    pid = idle_worker(pool).process.pid
    long = ("The turbine manual goes on and on about bearings. " * 60).encode()
    with pytest.raises(ParseError) as caught:
        pool.parse(long, "long.txt")
    assert caught.value.message == "extracted text exceeds the 0.001 MiB limit (ingestion.max_text_mb)"
    assert texts(pool.parse(b"Short and fine.", "short.txt")) == "Short and fine."
    assert idle_worker(pool).process.pid == pid, "a refusal needs no new worker"


def test_archive_checks_run_in_the_worker_and_fail_with_the_reason(
    pool_from: Callable[..., ParserPool],
) -> None:
    pool = pool_from(max_archive_mb=16, max_archive_entries=20)
    with pytest.raises(ParseError, match=r"declares 40 MiB uncompressed.*ingestion.max_archive_mb"):
        pool.parse(hostile.zip_bomb("docx", 40), "bomb.docx")
    with pytest.raises(ParseError, match="DTD"):
        pool.parse(hostile.xxe_docx(), "xxe.docx")
    with pytest.raises(ParseError, match="empty"):
        pool.parse(b"", "empty.txt")


def test_ocr_stops_at_the_page_that_passes_the_text_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    """In this process, to count tesseract runs: the real OCR, observed, not replaced."""
    import pytesseract
    from unstructured.nlp import tokenize

    from appliance.egress import OFFLINE_ENV
    from appliance.ingestion.parsing import _use_local_spacy
    from appliance.models import resolve_spacy

    for key, value in OFFLINE_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(tokenize, "_get_nlp", tokenize._get_nlp)  # restored afterwards
    monkeypatch.setattr(tokenize, "_install_spacy_model", tokenize._install_spacy_model)
    _use_local_spacy(str(resolve_spacy("default").path))
    runs: list[int] = []
    real = pytesseract.image_to_string

    def observed(*args: Any, **kwargs: Any) -> str:
        runs.append(1)
        return str(real(*args, **kwargs))

    monkeypatch.setattr(pytesseract, "image_to_string", observed)
    scan = hostile.scanned_pdf("Warranty code 5150", pages=3)
    elements = partition_bytes(scan, "pdf", "scan.pdf", ParseLimits())
    assert len(runs) == 3 and texts(elements).count("5150") == 3
    runs.clear()
    with pytest.raises(ParseError, match="ingestion.max_text_mb"):
        partition_bytes(scan, "pdf", "scan.pdf", ParseLimits(max_text_bytes=10))
    assert len(runs) == 1, "pages after the one that passed the cap are not OCRed"
