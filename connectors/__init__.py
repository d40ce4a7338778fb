"""Connectors, registered by name. Each depends only on ``appliance.domain``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from appliance.domain import Connector, InvalidRequest
from connectors.filesystem import FilesystemConnector

REGISTRY: dict[str, Callable[..., Connector]] = {
    "filesystem": FilesystemConnector,
}


def for_source(spec: str, **options: Any) -> Connector:
    """The connector for a SOURCE argument: a path today; URLs, s3:// and git come next."""
    if "://" in spec and not spec.startswith("file://"):
        scheme = spec.split("://", 1)[0]
        raise InvalidRequest(f"no connector for {scheme}:// sources yet; supported: a local folder or file")
    path = Path(spec.removeprefix("file://")).expanduser()
    if not path.exists():
        raise InvalidRequest(f"source not found: {spec}")
    return REGISTRY["filesystem"](path, **options)
