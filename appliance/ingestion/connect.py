"""From settings and a SOURCE string to a connector the egress guard lets through.

The one place that turns the ``connectors`` settings into connector options, so the CLI, the REST
ingest and (later) stored sources all build connectors alike: settings give the defaults, the
SOURCE string and explicit options override them.

Egress: the process refuses non-loopback connections (``appliance.egress``). A remote source an
admin names explicitly (ingest on the CLI or through the admin API) is that admin's decision to
reach its hosts, so with ``connectors.allow_source_hosts`` (default) those hosts are added to the
allow-list of this process; with it off the source fails with a message naming ``egress.allow``.
The web connector's own address checks (no private or metadata addresses) apply either way.
"""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path
from typing import Any

from appliance.domain import Connector, Forbidden, InvalidRequest
from appliance.egress import guard_installed, install_guard
from appliance.settings import Settings

log = logging.getLogger(__name__)


def kind_options(settings: Settings, kind: str) -> dict[str, Any]:
    """Options for a connector of ``kind`` that come from the settings."""
    cfg = settings.connectors
    match kind:
        case "filesystem":
            return {
                "extensions": settings.ingestion.extensions,
                "include": cfg.filesystem.include,
                "exclude": cfg.filesystem.exclude,
                "allow_hardlinks": cfg.filesystem.allow_hardlinks,
            }
        case "web":
            return {**cfg.web.model_dump(), "cache_dir": _cache_dir(settings, "web")}
        case "s3":
            secret = cfg.s3.secret_access_key
            return {
                **cfg.s3.model_dump(exclude={"secret_access_key"}),
                "secret_access_key": secret.get_secret_value() if secret else None,
                "extensions": settings.ingestion.extensions,
            }
        case "git":
            return {
                **cfg.git.model_dump(),
                "cache_dir": _cache_dir(settings, "git"),
                "extensions": settings.ingestion.extensions,
            }
        case "sql":
            return cfg.sql.model_dump()
    return {}


def _cache_dir(settings: Settings, kind: str) -> str:
    """Where a connector of ``kind`` keeps what it remembers between runs (clones, validators)."""
    return str(settings.data_dir.expanduser().resolve() / "cache" / kind)


# Options that widen what a source may reach or write: only the settings (the operator) set them,
# never a request or a command-line option.
SETTINGS_ONLY = {
    "allow_private": "connectors.web.allow_private",
    "cache_dir": "data_dir",
    "allow_hardlinks": "connectors.filesystem.allow_hardlinks",
    "max_bytes": "connectors.web.max_bytes",
}


def open_source(settings: Settings, spec: str, options: dict[str, Any] | None = None) -> Connector:
    """The connector for a SOURCE string, ready to discover (egress widened if allowed)."""
    import connectors

    for key in set(options or ()) & set(SETTINGS_ONLY):
        raise InvalidRequest(f"option {key} can only be set in the settings ({SETTINGS_ONLY[key]})")

    kind = connectors.kind_of(spec)
    connector = connectors.for_source(spec, **{**kind_options(settings, kind), **(options or {})})
    allow_egress(settings, connector)
    return connector


def rebuild(settings: Settings, kind: str, options: dict[str, Any]) -> Connector:
    """A connector from stored ``options()``. Secrets and the settings-only options come from the
    current settings, whatever was stored, so a stored source can't widen its own reach."""
    import connectors

    defaults = kind_options(settings, kind)
    pinned = {k: v for k, v in defaults.items() if k in SETTINGS_ONLY}
    connector = connectors.build(kind, **{**defaults, **options, **pinned})
    allow_egress(settings, connector)
    return connector


def _is_local(host: str) -> bool:
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def allow_egress(settings: Settings, connector: Any) -> None:
    hosts = [h for h in getattr(connector, "hosts", list)() if h and not _is_local(h)]
    if not hosts or not settings.egress.block:
        return
    missing = [h for h in hosts if h not in settings.egress.allow]
    if not missing:
        return
    if not settings.connectors.allow_source_hosts:
        raise InvalidRequest(
            f"the {connector.kind} source {connector.root} needs to reach {', '.join(missing)}, which "
            "egress.block refuses: add them to egress.allow (APPLIANCE_EGRESS__ALLOW) or set "
            "connectors.allow_source_hosts"
        )
    if guard_installed():
        log.info(
            "egress: allowing %s for the %s source %s", ", ".join(missing), connector.kind, connector.root
        )
        install_guard(missing)


def local_paths(connector: Any) -> list[Path]:
    """The files or folders on this host a connector reads (none for remote sources, uploads)."""
    from urllib.parse import unquote, urlsplit

    match getattr(connector, "kind", ""):
        case "filesystem":
            return [Path(connector.base)]
        case "git" if not connector.remote:
            return [Path(connector.repo)]
        case "git" if connector.repo.lower().startswith("file:"):
            # Cloned like a remote, but it reads this host's disk.
            return [Path(unquote(urlsplit(connector.repo).path)).expanduser().resolve()]
        case "sql":
            url = connector._url
            database = url.database or ""
            if not url.drivername.startswith("sqlite") or database in ("", ":memory:"):
                return []
            if database.startswith("file:"):  # SQLite URI filename (?uri=true): file:/path?mode=ro
                database = unquote(urlsplit(database).path)
            return [Path(database).expanduser().resolve()]
    return []


def check_reach(settings: Settings, connector: Any, admin: bool) -> None:
    """Where a source may point. The data directory holds the metadata DB, the audit log and the
    key hashes: indexing it would let its readers search them, so no source may lie in it. A
    curator may name local paths only under ``connectors.local_roots``: without that, anyone who
    curates a collection could index any file the appliance's account can read."""
    data_dir = Path(settings.data_dir).expanduser().resolve()
    for path in local_paths(connector):
        real = path.resolve()
        if real == data_dir or real.is_relative_to(data_dir) or _walks_into(real, data_dir):
            raise Forbidden(
                f"{path} is, or contains, the appliance's data directory ({data_dir}); it can't be a "
                "source (move the data directory, or name a folder beside it)"
            )
        if admin:
            continue
        roots = [Path(r).expanduser().resolve() for r in settings.connectors.local_roots]
        if not any(real == r or real.is_relative_to(r) for r in roots):
            raise Forbidden(
                f"{path} is not under a folder curators may index (connectors.local_roots, "
                "APPLIANCE_CONNECTORS__LOCAL_ROOTS); ask an admin to add it or to register the source"
            )


def _walks_into(source: Path, data_dir: Path) -> bool:
    # The filesystem connector skips hidden folders, so the default ./.appliance under an ingested
    # folder is never read; a visible data directory under it would be.
    if not data_dir.is_relative_to(source):
        return False
    return not any(part.startswith(".") for part in data_dir.relative_to(source).parts)
