"""Size limits applied before a document is read: the capped reader, the limit every connector
gets from ``ingestion.max_file_mb``, uploads, and ZIP entry counts read from the end record."""

from __future__ import annotations

import io
import struct
import zipfile
from pathlib import Path

import pytest

from appliance.domain import FileTooLarge, InvalidRequest, ParseError, read_capped
from appliance.ingestion.connect import ConnectorConfig, ConnectorFactory
from appliance.ingestion.formats import ArchiveLimits, declared_entries, preflight
from appliance.settings import Settings, load_settings
from tests.conftest import bytes_read
from tests.fixtures import hostile

pytestmark = pytest.mark.usefixtures("clean_env")


def test_read_capped_stops_one_byte_past_the_limit() -> None:
    assert read_capped(io.BytesIO(b"x" * 100).read, 100, block=7) == b"x" * 100
    assert read_capped(io.BytesIO(b"").read, 0) == b""
    stream = io.BytesIO(b"x" * 10_000)
    with pytest.raises(FileTooLarge, match="grew past the limit while being read"):
        read_capped(stream.read, 100, block=64)
    assert stream.tell() == 101, "read no further than one byte past the limit"
    assert read_capped(io.BytesIO(b"y" * 5000).read, None, block=64) == b"y" * 5000


def _factory(settings: Settings) -> ConnectorFactory:
    return ConnectorFactory(ConnectorConfig.from_settings(settings), settings.data_dir)


def test_every_connector_gets_the_file_limit_from_the_settings_only(tmp_path: Path) -> None:
    factory = _factory(load_settings(data_dir=tmp_path / "data", ingestion={"max_file_mb": 0.5}))
    (tmp_path / "docs").mkdir()
    spec = factory.for_source(str(tmp_path / "docs"))
    assert spec.max_file_bytes == 2**19  # type: ignore[attr-defined]
    stored = factory.rebuild("filesystem", spec.options())
    assert stored.max_file_bytes == 2**19  # type: ignore[attr-defined]
    assert "max_file_bytes" not in spec.options(), "a stored source can't carry its own limit"
    for given in (
        lambda: factory.for_source(str(tmp_path / "docs"), {"max_file_bytes": "999999999"}),
        lambda: factory.for_kind("filesystem", {"root": str(tmp_path / "docs"), "max_file_bytes": 10**9}),
    ):
        with pytest.raises(InvalidRequest, match=r"only be set in the settings \(ingestion.max_file_mb\)"):
            given()
    # A stored source naming its own limit gets the settings' one instead.
    forged = factory.rebuild("filesystem", {**spec.options(), "max_file_bytes": 10**9})
    assert forged.max_file_bytes == 2**19  # type: ignore[attr-defined]


def test_an_oversized_upload_is_refused_without_being_read(tmp_path: Path) -> None:
    factory = _factory(load_settings(data_dir=tmp_path / "data", ingestion={"max_file_mb": 1}))
    connector = factory.new_upload("default", "huge.txt")
    with open(connector.path, "wb") as fh:
        fh.truncate(3 * 2**30)  # sparse
    path = connector.path
    again = factory.upload(connector.root)
    assert again.path == path and path.is_relative_to(tmp_path / "data" / "uploads")
    [item] = list(again.discover())
    before = bytes_read()
    with pytest.raises(
        FileTooLarge, match=r"file is 3072.0 MiB, over the 1 MiB limit \(ingestion.max_file_mb\)"
    ):
        again.fetch(item)
    assert bytes_read() - before < 2**20
    path.write_bytes(b"small enough")
    assert again.fetch(item) == b"small enough"


def _many_entries(n: int) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("[Content_Types].xml", hostile.CONTENT_TYPES)
        zf.writestr("xl/workbook.xml", "<workbook/>")
        for i in range(n):
            zf.writestr(f"x/{i}", b"")
    return buf.getvalue()


def test_the_entry_count_is_read_from_the_end_record_before_the_directory() -> None:
    data = _many_entries(10)
    assert declared_entries(data) == 12
    assert declared_entries(b"not a zip") is None
    # A directory that declares far more entries than it holds is refused by what it declares.
    at = data.rfind(b"PK\x05\x06")
    forged = data[: at + 8] + struct.pack("<HH", 0xFFFE, 0xFFFE) + data[at + 12 :]
    with pytest.raises(
        ParseError, match=r"65534 entries, over the limit of 20 \(ingestion.max_archive_entries\)"
    ):
        preflight(forged, "a.xlsx", ArchiveLimits(max_entries=20))


def test_zip64_entry_counts_are_read_too() -> None:
    data = _many_entries(70_000)  # more than 65535: zipfile writes a ZIP64 end record
    assert declared_entries(data) == 70_002
    with pytest.raises(ParseError, match="70002 entries"):
        preflight(data, "a.xlsx", ArchiveLimits(max_entries=10_000))
