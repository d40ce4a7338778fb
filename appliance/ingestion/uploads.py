"""Uploaded files belong to the collection they were uploaded to (``upload://<collection>/...``):
no other collection reads them, and a restart removes the ones nothing will ever read."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from appliance.domain import InvalidRequest

if TYPE_CHECKING:
    from appliance.ingestion.connect import ConnectorFactory


def upload_collection(uri: str) -> str:
    """The collection an ``upload://<collection>/...`` URI's file was uploaded to."""
    return urlsplit(uri).netloc


def require_own_upload(uri: str, collection: str) -> None:
    """Refuse reading an upload's file for any collection but the one it was uploaded to."""
    if upload_collection(uri) != collection:
        raise InvalidRequest(
            f"{uri} is an upload of another collection; upload the file to {collection!r} instead"
        )


def orphaned_files(connectors: ConnectorFactory, kept: Iterable[str]) -> list[Path]:
    """The stored upload files that none of the ``kept`` URIs names."""
    wanted = set()
    for uri in kept:
        try:
            wanted.add(connectors.upload(uri).path)
        except InvalidRequest:
            continue  # not a URI this appliance made: nothing of it is on disk
    root = connectors.upload_dir
    return [p for p in (root.glob("*/*") if root.is_dir() else ()) if p.is_file() and p not in wanted]
