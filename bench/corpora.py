"""Corpora for the ingestion benches: generated documents in eight formats, a text-heavy corpus
from a registry package (python3-doc's HTML, which the Makefile installs) and Chinese text.

Every corpus is laid out anew per repeat (``variant``): the appliance reuses the vectors of a
document whose bytes it embedded lately, so a repeat over the same bytes would measure that cache
rather than ingestion.
"""

from __future__ import annotations

import io
import random
import re
import shutil
from pathlib import Path

from bench.common import ROOT

WORDS = ["turbine", "gearbox", "warranty", "maintenance", "blade", "bearing", "generator", "inspection",
         "safety", "policy", "employee", "vacation", "approval", "expense", "budget", "contract", "supplier",
         "invoice", "schedule", "report", "quarter", "energy", "grid", "voltage", "transformer", "substation",
         "outage", "crew", "training", "certificate", "audit", "compliance", "regulation"]  # fmt: skip
FORMATS = ("md", "txt", "html", "pdf", "docx", "pptx", "xlsx", "csv")
TEXT_FORMATS = ("md", "txt", "html")
PYDOC = Path("/usr/share/doc/python3-doc/html/library")
CHINESE_DIRS = (ROOT / "tests" / "fixtures" / "kb_zh", ROOT / "tests" / "fixtures" / "kb")


def sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 16))).capitalize() + "."


def sections(rng: random.Random, n: int) -> list[tuple[str, list[str]]]:
    return [
        (
            f"Section {i}: {rng.choice(WORDS)} {rng.choice(WORDS)}",
            [" ".join(sentence(rng) for _ in range(5)) for _ in range(3)],
        )
        for i in range(n)
    ]


def write_doc(path: Path, fmt: str, rng: random.Random) -> None:
    secs = sections(rng, 6)
    match fmt:
        case "md":
            path.write_text("\n\n".join(f"## {h}\n\n" + "\n\n".join(ps) for h, ps in secs))
        case "txt":
            path.write_text("\n\n".join(f"{h}\n\n" + "\n\n".join(ps) for h, ps in secs))
        case "html":
            body = "".join(f"<h2>{h}</h2>" + "".join(f"<p>{p}</p>" for p in ps) for h, ps in secs)
            path.write_text(f"<html><head><title>{secs[0][0]}</title></head><body>{body}</body></html>")
        case "pdf":
            from reportlab.lib.pagesizes import A4
            from reportlab.lib.styles import getSampleStyleSheet
            from reportlab.platypus import Paragraph, SimpleDocTemplate

            styles = getSampleStyleSheet()
            flow = []
            for h, ps in secs:
                flow.append(Paragraph(h, styles["Heading2"]))
                flow.extend(Paragraph(p, styles["BodyText"]) for p in ps)
            SimpleDocTemplate(str(path), pagesize=A4).build(flow)
        case "docx":
            import docx

            d = docx.Document()
            for h, ps in secs:
                d.add_heading(h, 2)
                for p in ps:
                    d.add_paragraph(p)
            d.save(str(path))
        case "pptx":
            from pptx import Presentation

            deck = Presentation()
            for h, ps in secs:
                slide = deck.slides.add_slide(deck.slide_layouts[1])
                slide.shapes.title.text = h
                slide.placeholders[1].text = "\n".join(ps)
            deck.save(str(path))
        case "xlsx":
            import openpyxl

            wb = openpyxl.Workbook()
            ws = wb.active
            ws.append(["id", "item", "note"])
            for i in range(60):
                ws.append([i, rng.choice(WORDS), sentence(rng)])
            wb.save(str(path))
        case "csv":
            buf = io.StringIO()
            buf.write("id,item,note\n")
            for i in range(60):
                buf.write(f"{i},{rng.choice(WORDS)},{sentence(rng)}\n")
            path.write_text(buf.getvalue())


def formats_corpus(root: Path, per_format: int, variant: int = 0) -> dict[str, Path]:
    """``per_format`` generated documents in each of FORMATS, one folder per format."""
    rng = random.Random(11 + 1000 * variant)
    out = {}
    for fmt in FORMATS:
        folder = root / fmt
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_format):
            write_doc(folder / f"{fmt}-{i:03}.{fmt}", fmt, rng)
        out[fmt] = folder
    return out


def markdown_corpus(root: Path, docs: int, sections_per_doc: int = 8, seed: int = 7) -> Path:
    """Generated markdown of ~``docs * sections_per_doc * 1.5`` chunks (for the scale curve)."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    for d in range(docs):
        parts = [f"# Document {d}\n"]
        for s in range(sections_per_doc):
            parts.append(f"\n## Section {s}\n")
            parts.extend(" ".join(sentence(rng) for _ in range(rng.randint(4, 7))) + "\n" for _ in range(3))
        (root / f"doc{d:05}.md").write_text("\n".join(parts))
    return root


def pydoc_files(max_files: int, max_kb: int = 120) -> list[Path]:
    """A fixed spread of the Python library reference's pages (python3-doc), by name: every k-th
    page under ``max_kb``, so the sample has short and long pages alike."""
    if not PYDOC.is_dir():
        return []
    pages = sorted(p for p in PYDOC.glob("*.html") if p.stat().st_size <= max_kb * 1024)
    step = max(1, len(pages) // max(1, max_files))
    return pages[::step][:max_files]


def chinese_corpus(folder: Path, variant: int, docs: int = 5, kb_per_doc: int = 40) -> Path | None:
    """Chinese plain text the size of the reports in issue 19 (5 files, 204 KB): ``docs`` reports
    of ~``kb_per_doc`` KB made of the sentences of the Chinese fixtures (tests/fixtures/kb_zh when
    it is there, and the kb's zh_ files) in a seeded random order under numbered headings. The
    fixtures themselves are too small (~20 KB) for anything but fixed costs to show."""
    files = sorted(p for p in CHINESE_DIRS[0].glob("*") if p.suffix in (".md", ".txt"))
    files += sorted(CHINESE_DIRS[1].glob("zh_*"))
    text = "\n".join(p.read_text() for p in files)
    text = re.sub(r"^#.*$", "", text, flags=re.M)  # headings are not sentences
    sentences = [s.strip() + "。" for s in re.split(r"[。！？\n]+", text) if len(s.strip()) > 6]
    if not sentences:
        return None
    rng = random.Random(5 + variant)
    folder.mkdir(parents=True, exist_ok=True)
    for d in range(docs):
        parts: list[str] = [f"报告 {d + 1}\n"]
        size, section = 0, 0
        while size < kb_per_doc * 1024:
            section += 1
            para = "".join(rng.choice(sentences) for _ in range(rng.randint(3, 8)))
            block = (f"\n第{section}节\n\n" if section % 4 == 1 else "\n") + para + "\n"
            parts.append(block)
            size += len(block.encode())
        (folder / f"zh-report-{d}.txt").write_text("".join(parts))
    return folder


def copy_variant(files: list[Path], folder: Path, variant: int, copies: int = 1) -> Path:
    """Copy ``files`` into ``folder`` ``copies`` times each, every copy with its own count of
    trailing newlines: new bytes (no vectors to reuse), the same text."""
    folder.mkdir(parents=True, exist_ok=True)
    for c in range(copies):
        for path in files:
            target = folder / (path.name if copies == 1 else f"{path.stem}-{c}{path.suffix}")
            shutil.copyfile(path, target)
            with target.open("ab") as fh:
                fh.write(b"\n" * (1 + variant * copies + c))
    return folder


def folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.iterdir()) / 2**20
