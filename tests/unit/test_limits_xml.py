"""XML pre-checks by an XML parser with defusedxml's settings (issue 15 item 18): a DTD or entity
declaration is refused in UTF-16 and behind a prolog longer than any byte window, in Office parts
and in HTML; ordinary documents, with or without a doctype, pass."""

from __future__ import annotations

import io

import pytest

from appliance.domain import ParseError
from appliance.ingestion.formats import ArchiveLimits, check_xml_prolog, preflight
from tests.fixtures import hostile

BODY = (
    '<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
    "<w:body><w:p><w:r><w:t>&xxe;</w:t></w:r></w:p></w:body></w:document>"
)
DTD = '<!DOCTYPE d [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
# 200 KiB of comments before the doctype: a prolog may be that long, and a byte window is not.
LATE = "<!-- padding -->\n" * 12_800


def _docx(xml: bytes) -> bytes:
    return hostile.ooxml("word/document.xml", xml)


@pytest.mark.parametrize(
    "xml",
    [
        ('<?xml version="1.0" encoding="UTF-16"?>' + DTD + BODY).encode("utf-16"),
        ('<?xml version="1.0" encoding="UTF-16BE"?>' + DTD + BODY).encode("utf-16-be"),
        ('<?xml version="1.0"?>' + LATE + DTD + BODY).encode(),
        ('<?xml version="1.0"?>' + LATE + '<!DOCTYPE d SYSTEM "http://127.0.0.1:9/x.dtd">' + BODY).encode(),
    ],
    ids=["utf16-bom", "utf16be", "late", "late-external"],
)
def test_office_parts_declaring_a_dtd_are_refused_in_any_encoding_and_position(xml: bytes) -> None:
    with pytest.raises(ParseError, match="DTD"):
        preflight(_docx(xml), "evil.docx", ArchiveLimits())


def test_a_plain_office_part_passes_and_the_body_is_not_parsed() -> None:
    ok = ('<?xml version="1.0" encoding="UTF-16"?>' + LATE + BODY.replace("&xxe;", "fine")).encode("utf-16")
    assert preflight(_docx(ok), "ok.docx", ArchiveLimits()) == "docx"
    # Only the prolog is read: a body that is not even well-formed after the root opens is left
    # to the parser proper.
    check_xml_prolog(io.BytesIO(b"<root><unclosed>" + b"x" * 100_000), "part.xml")


def test_malformed_prologs_are_refused() -> None:
    with pytest.raises(ParseError, match="well-formed"):
        check_xml_prolog(io.BytesIO(b"<?xml version='1.0'?><!-- never closed"), "part.xml")


@pytest.mark.parametrize(
    "page",
    [
        ("<!DOCTYPE html [" + '<!ENTITY a "aaaaaaaaaa">' + "]><html><body>&a;</body></html>").encode(
            "utf-16"
        ),
        ("<html>" + " " * 100_000 + '<!DOCTYPE x [<!ENTITY a "a">]><body>&a;</body></html>').encode(),
    ],
    ids=["utf16-bom", "late"],
)
def test_html_declaring_entities_is_refused_in_any_encoding_and_position(page: bytes) -> None:
    with pytest.raises(ParseError, match="entities"):
        preflight(page, "evil.html", ArchiveLimits())


def test_an_ordinary_utf16_page_with_a_doctype_passes() -> None:
    page = "<!DOCTYPE html><html><body><p>Öl wechseln</p></body></html>".encode("utf-16")
    assert preflight(page, "ok.html", ArchiveLimits()) == "html"
