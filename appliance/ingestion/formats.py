"""What a document is, whether it is safe to open, and how to turn it into elements.

Both halves run inside a parser worker, under its memory cap and wall-clock limit.

``preflight`` comes first: it decides the type from the bytes with libmagic (an extension only
picks the dialect of plain text, which libmagic cannot tell apart: markdown and CSV are
"text/plain" to it), and refuses what would be dangerous or pointless to parse — empty files,
unknown binary content, password-protected documents, ZIP containers whose entries declare too
much uncompressed data or too many entries, and XML that declares a DTD (XXE, billion laughs:
Office Open XML never needs one). XML parts are read by an XML parser with defusedxml's
settings (no DTD, no entities, no external references) up to their root element, so a DTD in
UTF-16 or behind a long prolog is found as surely as a plain one; a byte pattern would miss both.
It is not run in the parent because it is not strictly bounded there: libmagic and ``zipfile``
parse hostile bytes in C and Python, ``zipfile`` builds an object per central-directory entry (a
100 MiB file can declare millions), and the prolog check inflates every XML entry up to its root.

``partition`` then yields elements: one ``unstructured`` partitioner per type, plus OCR with the
local tesseract binary for images and for PDF pages that have no text layer, page by page, so a
caller that stops at the text limit stops the OCR too.
"""

from __future__ import annotations

import codecs
import io
import re
import struct
import xml.sax
import xml.sax.handler
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import IO, Any

from defusedxml import DefusedXmlException
from defusedxml import expatreader as defused_expat

from appliance.domain import ParseError
from appliance.ingestion.cleaning import clean_elements, strip_boilerplate

OOXML = {
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": "pptx",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
}
MIME_KINDS = {
    **OOXML,
    "application/pdf": "pdf",
    "text/html": "html",
    "application/xhtml+xml": "html",
    "text/csv": "csv",
    "text/markdown": "md",
    "message/rfc822": "eml",
    "image/png": "image",
    "image/jpeg": "image",
    "image/tiff": "image",
    "image/bmp": "image",
    "image/gif": "image",
    "image/webp": "image",
}
# Plain text whose dialect only the name can tell.
TEXT_DIALECTS = {
    ".md": "md",
    ".markdown": "md",
    ".csv": "csv",
    ".eml": "eml",
    ".htm": "html",
    ".html": "html",
}
# The part of a ZIP container that says which Office format it is.
ZIP_MARKERS = (("word/document.xml", "docx"), ("ppt/presentation.xml", "pptx"), ("xl/workbook.xml", "xlsx"))
ZIP_KINDS = frozenset(OOXML.values())
_ENTITY = re.compile(r"<!ENTITY", re.IGNORECASE)
XML_READ_BYTES = 64 * 1024  # an XML part is fed to the parser in pieces of this size


@dataclass(frozen=True)
class ArchiveLimits:
    max_uncompressed_bytes: int = 256 * 2**20
    max_entries: int = 10000


def detect_mime(data: bytes) -> str:
    import magic

    return str(magic.from_buffer(data, mime=True))


def detect_kind(data: bytes, filename: str) -> str:
    """The parser to use for ``data``; ParseError with the reason when there is none."""
    if not data:
        raise ParseError("file is empty")
    mime = detect_mime(data)
    suffix = PurePosixPath(filename).suffix.lower()
    if mime in MIME_KINDS:
        kind = MIME_KINDS[mime]
        # libmagic says text/html for markdown or text that merely contains a tag or two.
        if kind == "html" and suffix in (".md", ".markdown", ".txt", ".text"):
            return TEXT_DIALECTS.get(suffix, "txt")
        return kind
    if mime in ("application/zip", "application/octet-stream") and data[:4] == b"PK\x03\x04":
        return _zip_kind(data)
    if mime.startswith("text/") or mime in ("application/json", "application/x-ndjson"):
        return TEXT_DIALECTS.get(suffix, "txt")
    if "encrypted" in mime.lower() or mime == "application/x-ole-storage":
        raise ParseError(f"document is encrypted or an unsupported legacy Office file ({mime})")
    if mime in ("application/x-empty", "inode/x-empty"):
        raise ParseError("file is empty")
    raise ParseError(f"unsupported content type {mime} (detected from the bytes, not the name)")


def _zip_kind(data: bytes) -> str:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            names = set(zf.namelist())
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ParseError(f"damaged ZIP container: {exc}") from None
    for marker, kind in ZIP_MARKERS:
        if marker in names:
            return kind
    raise ParseError("unsupported content type application/zip (not a docx, pptx or xlsx)")


def declared_entries(data: bytes) -> int | None:
    """The entry count the end-of-central-directory record declares (ZIP64 too), read without
    parsing the directory itself; None when there is no such record."""
    at = data.rfind(b"PK\x05\x06", max(0, len(data) - 22 - 65535))
    if at < 0 or len(data) < at + 22:
        return None
    count = int(struct.unpack_from("<H", data, at + 10)[0])
    locator = at - 20
    if count == 0xFFFF and locator >= 0 and data[locator : locator + 4] == b"PK\x06\x07":
        record = int(struct.unpack_from("<Q", data, locator + 8)[0])
        if data[record : record + 4] == b"PK\x06\x06" and len(data) >= record + 40:
            return int(struct.unpack_from("<Q", data, record + 32)[0])
    return count


def _check_declared_entries(data: bytes, limits: ArchiveLimits) -> None:
    entries = declared_entries(data)
    if entries is not None and entries > limits.max_entries:
        raise ParseError(
            f"archive has {entries} entries, over the limit of {limits.max_entries} "
            "(ingestion.max_archive_entries)"
        )


def check_archive(data: bytes, limits: ArchiveLimits) -> None:
    """Refuse ZIP bombs by what the central directory declares, before anything inflates; refuse
    XML parts that declare a DTD. ``zipfile`` never inflates an entry past its declared size, so
    the declared sizes bound what a parser can be made to read. The entry count is taken from the
    end record first, before ``zipfile`` spends memory on every entry of a hostile directory."""
    _check_declared_entries(data, limits)
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ParseError(f"damaged ZIP container: {exc}") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > limits.max_entries:
            raise ParseError(
                f"archive has {len(infos)} entries, over the limit of {limits.max_entries} "
                "(ingestion.max_archive_entries)"
            )
        declared = sum(i.file_size for i in infos)
        if declared > limits.max_uncompressed_bytes:
            raise ParseError(
                f"archive declares {declared / 2**20:.0f} MiB uncompressed, over the "
                f"{limits.max_uncompressed_bytes / 2**20:.0f} MiB limit (ingestion.max_archive_mb; "
                "decompression bomb?)"
            )
        for info in infos:
            if info.filename.lower().endswith((".xml", ".rels")) and not info.is_dir():
                try:
                    with zf.open(info) as fh:
                        check_xml_prolog(fh, info.filename)
                except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError, RuntimeError) as exc:
                    raise ParseError(f"damaged archive entry {info.filename}: {exc}") from None


class _RootReached(Exception):
    """The root element started: the prolog, where a DTD could be, is over."""


class _StopAtRoot(xml.sax.handler.ContentHandler):
    def startElement(self, name: str, attrs: Any) -> None:  # noqa: N802 - the SAX API's name
        raise _RootReached

    def startElementNS(self, name: Any, qname: Any, attrs: Any) -> None:  # noqa: N802
        raise _RootReached


def check_xml_prolog(stream: IO[bytes], name: str) -> None:
    """Refuse an XML document whose prolog declares a DTD, entities or external references,
    whatever its encoding and however late the declaration comes; the parser stops at the root
    element, so the body is never parsed here. Malformed XML before the root is refused too."""
    parser = defused_expat.create_parser(forbid_dtd=True, forbid_entities=True, forbid_external=True)
    parser.setContentHandler(_StopAtRoot())
    try:
        while block := stream.read(XML_READ_BYTES):
            parser.feed(block)
        parser.close()
    except _RootReached:
        return
    except DefusedXmlException:
        raise ParseError(f"{name} declares a DTD or entities (refused: XXE / entity expansion)") from None
    except xml.sax.SAXParseException as exc:
        raise ParseError(f"{name} is not well-formed XML: {exc.getMessage()}") from None


def _text_of(data: bytes) -> str:
    """Markup bytes as text for a declaration check: by BOM, else UTF-8 (ASCII-compatible
    encodings spell ``<!ENTITY`` the same; BOM-less UTF-16 is no type libmagic lets through)."""
    for bom, codec in ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32")):
        if data.startswith(bom):
            return data.decode(codec, errors="replace")
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16", errors="replace")
    return data.decode("utf-8", errors="replace")


def preflight(data: bytes, filename: str, limits: ArchiveLimits) -> str:
    """The kind of ``data``, or ParseError with the reason it must not be parsed."""
    if data[:4] == b"PK\x03\x04":
        _check_declared_entries(data, limits)  # before zipfile reads the directory to tell the kind
    kind = detect_kind(data, filename)
    if kind in ZIP_KINDS:
        check_archive(data, limits)
    elif kind == "html" and _ENTITY.search(_text_of(data)):
        # A doctype is fine in a web page (HTML is no XML, an XML parser would refuse most pages);
        # an internal subset declaring entities is an attack, in any encoding, early or late.
        raise ParseError("document declares XML entities (refused: XXE / entity expansion)")
    return kind


# --- partitioning -------------------------------------------------------------------------------


@dataclass(frozen=True)
class OcrOptions:
    enabled: bool = True
    languages: str = "eng+chi_sim"
    dpi: int = 200


def decode_text(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    best = from_bytes(data).best()
    if best is not None:
        return str(best)
    return data.decode("utf-8", errors="replace")


def partition(data: bytes, kind: str, filename: str, ocr: OcrOptions) -> Iterator[Any]:
    """``unstructured`` elements for one document of a known kind, in document order, cleaned
    (``cleaning.py``). OCR output comes page by page (frame by frame), each page only when the one
    before has been taken."""
    return clean_elements(_partition(data, kind, filename, ocr), kind)


def _partition(data: bytes, kind: str, filename: str, ocr: OcrOptions) -> Iterator[Any]:
    f = io.BytesIO(data)
    # languages=[""]: no language detection. unstructured would run langdetect over the whole
    # text (a quarter of the parse time of a plain document) only to fill metadata.languages,
    # which nothing here reads; chunking handles CJK by its own rules.
    common: dict[str, Any] = {"metadata_filename": filename, "languages": [""]}
    match kind:
        case "pdf":
            return _pdf(data, filename, ocr)
        case "docx":
            from unstructured.partition.docx import partition_docx

            return iter(partition_docx(file=f, **common))
        case "pptx":
            from unstructured.partition.pptx import partition_pptx

            return iter(partition_pptx(file=f, **common))
        case "xlsx":
            from unstructured.partition.xlsx import partition_xlsx

            return iter(partition_xlsx(file=f, **common))
        case "csv":
            from unstructured.partition.csv import partition_csv

            return iter(partition_csv(file=f, **common))
        case "html":
            from unstructured.partition.html import partition_html

            return iter(partition_html(text=strip_boilerplate(decode_text(data)), **common))
        case "md":
            from unstructured.partition.md import partition_md

            return iter(partition_md(text=decode_text(data), **common))
        case "eml":
            from unstructured.partition.email import partition_email

            return iter(partition_email(file=f, **common))
        case "image":
            return _ocr_image(data, filename, ocr)
        case _:
            from unstructured.partition.text import partition_text

            return iter(partition_text(text=decode_text(data), **common))


def _pdf(data: bytes, filename: str, ocr: OcrOptions) -> Iterator[Any]:
    import pypdf
    from pypdf.errors import PdfReadError

    try:
        reader = pypdf.PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted and not reader.decrypt(""):
            raise ParseError("PDF is password-protected")
        pages = len(reader.pages)
    except ParseError:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, OSError) as exc:
        raise ParseError(f"damaged PDF: {exc}"[:300]) from None
    if pages == 0:
        raise ParseError("PDF has no pages")
    from unstructured.partition.pdf import partition_pdf

    # "fast" reads the text layer with pdfminer; pages without one go to tesseract below.
    elements = list(
        partition_pdf(file=io.BytesIO(data), metadata_filename=filename, strategy="fast", languages=["eng"])
    )
    with_text = {e.metadata.page_number for e in elements if (e.text or "").strip()}
    missing = {p for p in range(1, pages + 1) if p not in with_text}
    if not missing or not ocr.enabled:
        return iter(elements)
    return _pdf_with_ocr(data, filename, ocr, pages, missing, elements)


def _pdf_with_ocr(
    data: bytes, filename: str, ocr: OcrOptions, pages: int, missing: set[int], elements: list[Any]
) -> Iterator[Any]:
    from pdf2image import convert_from_bytes

    for page in range(1, pages + 1):
        if page in missing:
            for image in convert_from_bytes(data, dpi=ocr.dpi, first_page=page, last_page=page):
                yield from _ocr_elements(image, filename, page, ocr)
        yield from (e for e in elements if e.metadata.page_number == page)


def _ocr_image(data: bytes, filename: str, ocr: OcrOptions) -> Iterator[Any]:
    if not ocr.enabled:
        raise ParseError("image needs OCR, which is turned off (ingestion.ocr)")
    from PIL import Image

    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except MemoryError:
        raise  # the memory cap: the worker reports it and is replaced
    except Exception as exc:  # PIL raises many types, DecompressionBombError included
        raise ParseError(f"unreadable image: {type(exc).__name__}: {exc}"[:300]) from None
    return _ocr_frames(image, filename, ocr)


def _ocr_frames(image: Any, filename: str, ocr: OcrOptions) -> Iterator[Any]:
    frames = getattr(image, "n_frames", 1)
    for frame in range(min(frames, 50)):
        image.seek(frame)
        yield from _ocr_elements(image.convert("RGB"), filename, frame + 1, ocr)


def _ocr_elements(image: Any, filename: str, page: int, ocr: OcrOptions) -> list[Any]:
    import pytesseract
    from unstructured.partition.text import partition_text

    text = pytesseract.image_to_string(image, lang=ocr.languages)
    if not text.strip():
        return []
    # tesseract separates CJK characters with spaces; they carry no meaning there.
    text = re.sub(r"(?<=[\u3000-\u9fff\uff00-\uffef]) (?=[\u3000-\u9fff\uff00-\uffef])", "", text)
    elements = list(partition_text(text=text, metadata_filename=filename, languages=[""]))
    for element in elements:
        element.metadata.page_number = page
    return elements
