"""The one way to build a connector: ``ConnectorFactory``, owned by the container.

It is the only place that turns the settings into connector options, so the CLI, the REST ingest,
registered sources and uploads all get connectors alike: the settings give the defaults, a SOURCE
string and a caller's options override them, except the options in ``SETTINGS_ONLY``, which widen
what a source may reach or read and so come from the settings alone.

Before a connector is handed out, the factory checks where it points (``check_reach``) and what
it will connect to (``allow_egress``):

- Reach: no source may read the data directory (metadata DB, audit log, key hashes), and a curator
  may name local paths only under ``connectors.local_roots``.
- Remote reach of a curator (``check_remote``): a curator borrows the appliance's credentials and
  network position, so it may name only the remote sources an admin listed: web hosts
  (``connectors.web.curator_hosts``), S3 buckets (``connectors.s3.curator_buckets``, through the
  configured endpoint and credentials only), git repositories (``connectors.git.curator_repos``)
  and database URLs (``connectors.sql.curator_urls``, connected to with the listed URL and its
  password). Anything else is 403 before a connector connects anywhere.
- Egress: the process refuses non-loopback connections (``appliance.egress``). A remote source an
  admin names explicitly (ingest on the CLI or through the admin API) is that admin's decision to
  reach its hosts, so with ``connectors.allow_source_hosts`` (default) those hosts are added to the
  allow-list of this process; with it off the source fails with a message naming ``egress.allow``.
  The web connector's own address checks (no private or metadata addresses) apply either way.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from appliance.domain import MAX_FILE_SETTING, Connector, Forbidden, InvalidRequest
from appliance.egress import guard_installed, install_guard
from appliance.settings import ConnectorsSettings, Settings

if TYPE_CHECKING:
    from connectors.upload import UploadConnector

log = logging.getLogger(__name__)

# Options of an S3 source that pick where its requests go and what signs them: a curator may not
# name values other than the settings' (the credentials must not sign for another endpoint).
S3_ADMIN_ONLY = ("endpoint_url", "region", "access_key_id", "secret_access_key")
# Settings of a kind's section that are the admin's lists, not connector options.
CURATOR_LISTS = {"curator_hosts", "curator_buckets", "curator_repos", "curator_urls"}

# Options that widen what a source may reach, read or write, and the setting each comes from:
# never from a request, a command-line option or a stored source.
SETTINGS_ONLY: dict[str, str] = {
    "allow_private": "connectors.allow_private, or connectors.web.allow_private for web sources",
    "max_bytes": "connectors.web.max_bytes",
    "allow_hardlinks": "connectors.filesystem.allow_hardlinks",
    "max_file_bytes": MAX_FILE_SETTING,
    "cache_dir": "data_dir",
    "upload_dir": "data_dir",
}


@dataclass(frozen=True)
class ConnectorConfig:
    """What the factory takes from the settings."""

    connectors: ConnectorsSettings
    extensions: tuple[str, ...]
    max_file_bytes: int
    egress_block: bool
    egress_allow: tuple[str, ...]

    @classmethod
    def from_settings(cls, settings: Settings) -> ConnectorConfig:
        return cls(
            connectors=settings.connectors,
            extensions=tuple(settings.ingestion.extensions),
            max_file_bytes=int(settings.ingestion.max_file_mb * 2**20),
            egress_block=settings.egress.block,
            egress_allow=tuple(settings.egress.allow),
        )


def refuse_settings_only(options: Mapping[str, Any]) -> None:
    """Raise when a caller's options name one that only the settings may set."""
    for key in sorted(set(options) & set(SETTINGS_ONLY)):
        raise InvalidRequest(f"option {key} can only be set in the settings ({SETTINGS_ONLY[key]})")


class ConnectorFactory:
    """Connectors from a SOURCE string, a kind with options, stored options, or an upload."""

    def __init__(self, config: ConnectorConfig, data_dir: Path) -> None:
        self.config = config
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.upload_dir = self.data_dir / "uploads"

    @property
    def max_file_bytes(self) -> int:
        """The file size limit every connector gets (``ingestion.max_file_mb``)."""
        return self.config.max_file_bytes

    def defaults(self, kind: str) -> dict[str, Any]:
        """The options of a connector of ``kind`` that come from the settings (secrets included)."""
        cfg = self.config.connectors
        extensions = list(self.config.extensions)
        options: dict[str, Any]
        match kind:
            case "filesystem":
                options = {
                    "extensions": extensions,
                    "include": cfg.filesystem.include,
                    "exclude": cfg.filesystem.exclude,
                    "allow_hardlinks": cfg.filesystem.allow_hardlinks,
                }
            case "upload":
                options = {"upload_dir": str(self.upload_dir)}
            case "web":
                options = {**cfg.web.model_dump(exclude=CURATOR_LISTS), "cache_dir": self._cache_dir("web")}
            case "s3":
                secret = cfg.s3.secret_access_key
                options = {
                    **cfg.s3.model_dump(exclude={"secret_access_key", *CURATOR_LISTS}),
                    "secret_access_key": secret.get_secret_value() if secret else None,
                    "extensions": extensions,
                    "allow_private": list(cfg.allow_private),
                }
            case "git":
                options = {
                    **cfg.git.model_dump(exclude=CURATOR_LISTS),
                    "cache_dir": self._cache_dir("git"),
                    "extensions": extensions,
                    "allow_private": list(cfg.allow_private),
                }
            case "sql":
                options = {
                    **cfg.sql.model_dump(exclude=CURATOR_LISTS),
                    "allow_private": list(cfg.allow_private),
                }
            case _:
                options = {}
        return {**options, "max_file_bytes": self.config.max_file_bytes}

    def _cache_dir(self, kind: str) -> str:
        """Where a connector of ``kind`` keeps what it remembers between runs (clones, validators)."""
        return str(self.data_dir / "cache" / kind)

    # -- building ----------------------------------------------------------------------------------

    def for_source(
        self, spec: str, options: Mapping[str, Any] | None = None, *, admin: bool = True
    ) -> Connector:
        """The connector for a SOURCE argument (a path or URL) with a caller's ``options``.

        ``admin``: the caller may point at any local path but the data directory; otherwise only
        under ``connectors.local_roots``."""
        import connectors

        given = dict(options or {})
        refuse_settings_only(given)
        kind = connectors.kind_of(spec)
        if not admin:
            self._refuse_admin_only(kind, given)
        return self._admit(connectors.for_source(spec, **{**self.defaults(kind), **given}), admin)

    def for_kind(self, kind: str, options: Mapping[str, Any], *, admin: bool = True) -> Connector:
        """A connector of ``kind`` from a caller's ``options`` (a source registered by kind)."""
        if kind == "upload":
            raise InvalidRequest("uploads are added through the documents API, not as a source")
        refuse_settings_only(options)
        if not admin:
            self._refuse_admin_only(kind, options)
        return self._admit(self._build(kind, options), admin)

    def rebuild(self, kind: str, options: Mapping[str, Any], *, admin: bool = True) -> Connector:
        """A connector from its stored ``options()``. Secrets and the settings-only options come
        from the current settings, whatever was stored, so a stored source can't widen its reach."""
        if kind == "upload":
            return self.upload(str(options.get("uri", "")))
        if not admin:
            self._refuse_admin_only(kind, options)
        return self._admit(self._build(kind, options), admin)

    def upload(self, uri: str) -> UploadConnector:
        """The connector of an uploaded document, from its ``upload://`` URI."""
        import connectors

        return connectors.UploadConnector(uri, self.upload_dir, self.max_file_bytes)

    def new_upload(self, collection: str, filename: str | None) -> UploadConnector:
        """A new upload to ``collection``: write its file at ``connector.path``."""
        import connectors

        connector, _ = connectors.UploadConnector.store(
            self.upload_dir, collection, filename, self.max_file_bytes
        )
        return connector

    def _build(self, kind: str, options: Mapping[str, Any]) -> Connector:
        import connectors

        defaults = self.defaults(kind)
        pinned = {k: v for k, v in defaults.items() if k in SETTINGS_ONLY}
        return connectors.build(kind, **{**defaults, **options, **pinned})

    def _admit(self, connector: Connector, admin: bool) -> Connector:
        # Uploads never come through here: their files are the appliance's own, in the data dir.
        self.check_reach(connector, admin)
        if not admin:
            connector = self.check_remote(connector)
        self.allow_egress(connector)
        return connector

    def _refuse_admin_only(self, kind: str, options: Mapping[str, Any]) -> None:
        if kind != "s3":
            return
        configured = self.defaults("s3")
        for key in S3_ADMIN_ONLY:
            if key in options and options[key] not in (None, configured.get(key)):
                raise Forbidden(
                    f"an S3 source's {key} is the admin's (connectors.s3.{key}); curators name a bucket "
                    "of connectors.s3.curator_buckets only"
                )

    def check_remote(self, connector: Connector) -> Connector:
        """The connector a curator may use for a remote source, or 403 (see the module doc).
        Local sources (no hosts) are ``check_reach``'s; a SQL source comes back rebuilt on the
        URL the admin listed, which holds the credentials."""
        hosts = connector.hosts()
        if not hosts:
            return connector
        cfg = self.config.connectors
        options = connector.options()
        match connector.kind:
            case "web":
                unlisted = sorted(
                    h for h in hosts if h.lower() not in {x.lower() for x in cfg.web.curator_hosts}
                )
                if unlisted:
                    raise Forbidden(
                        f"curators may crawl only the hosts an admin listed (connectors.web.curator_hosts); "
                        f"not {', '.join(unlisted)}"
                    )
            case "s3":
                if options.get("bucket") not in cfg.s3.curator_buckets:
                    raise Forbidden(
                        f"curators may read only the buckets an admin listed (connectors.s3.curator_buckets); "
                        f"not {options.get('bucket')}"
                    )
                if options.get("endpoint_url") != cfg.s3.endpoint_url:
                    raise Forbidden("an S3 source's endpoint is the admin's (connectors.s3.endpoint_url)")
            case "git":
                repo = str(options.get("repo", ""))
                if not any(
                    repo == r or (r.endswith("/") and repo.startswith(r)) for r in cfg.git.curator_repos
                ):
                    raise Forbidden(
                        "curators may name only the repositories an admin listed (connectors.git.curator_repos)"
                    )
            case "sql":
                listed = _listed_database(str(options.get("url", "")), cfg.sql.curator_urls)
                if listed is None:
                    raise Forbidden(
                        "curators may name only the databases an admin listed (connectors.sql.curator_urls)"
                    )
                connector.close()
                return self._build("sql", {**options, "url": listed})
            case _:
                raise Forbidden(f"curators may not register {connector.kind} sources that reach other hosts")
        return connector

    # -- where a connector may point -----------------------------------------------------------------

    def check_reach(self, connector: Connector, admin: bool) -> None:
        """Where a source may point. The data directory holds the metadata DB, the audit log and the
        key hashes: indexing it would let its readers search them, so no source may lie in it. A
        curator may name local paths only under ``connectors.local_roots``: without that, anyone who
        curates a collection could index any file the appliance's account can read."""
        for path in connector.local_paths():
            real = path.resolve()
            if (
                real == self.data_dir
                or real.is_relative_to(self.data_dir)
                or _walks_into(real, self.data_dir)
            ):
                raise Forbidden(
                    f"{path} is, or contains, the appliance's data directory ({self.data_dir}); it can't "
                    "be a source (move the data directory, or name a folder beside it)"
                )
            if admin:
                continue
            roots = [Path(r).expanduser().resolve() for r in self.config.connectors.local_roots]
            if not any(real == r or real.is_relative_to(r) for r in roots):
                raise Forbidden(
                    f"{path} is not under a folder curators may index (connectors.local_roots, "
                    "APPLIANCE_CONNECTORS__LOCAL_ROOTS); ask an admin to add it or to register the source"
                )

    def allow_egress(self, connector: Connector) -> None:
        """Let this process reach the hosts of a source an admin or curator named, or refuse it."""
        hosts = [h for h in connector.hosts() if h and not _is_local(h)]
        if not hosts or not self.config.egress_block:
            return
        missing = [h for h in hosts if h not in self.config.egress_allow]
        if not missing:
            return
        if not self.config.connectors.allow_source_hosts:
            raise InvalidRequest(
                f"the {connector.kind} source {connector.root} needs to reach {', '.join(missing)}, "
                "which egress.block refuses: add them to egress.allow (APPLIANCE_EGRESS__ALLOW) or set "
                "connectors.allow_source_hosts"
            )
        if guard_installed():
            log.info(
                "egress: allowing %s for the %s source %s", ", ".join(missing), connector.kind, connector.root
            )
            install_guard(missing)


def _listed_database(url: str, listed: Sequence[SecretStr]) -> str | None:
    """The listed database URL (with its password) that ``url`` names, compared without passwords."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    def bare(text: str) -> tuple[Any, ...]:
        parsed = make_url(text)
        driver = "postgresql" if parsed.drivername == "postgres" else parsed.drivername
        return (
            driver,
            parsed.username,
            parsed.host,
            parsed.port,
            parsed.database,
            sorted(parsed.query.items()),
        )

    try:
        wanted = bare(url)
    except ArgumentError:
        return None
    for entry in listed:
        try:
            if bare(entry.get_secret_value()) == wanted:
                return entry.get_secret_value()
        except ArgumentError:
            log.warning("connectors.sql.curator_urls holds an entry that is not a database URL")
    return None


def _is_local(host: str) -> bool:
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _walks_into(source: Path, data_dir: Path) -> bool:
    # The filesystem connector skips hidden folders, so the default ./.appliance under an ingested
    # folder is never read; a visible data directory under it would be.
    if not data_dir.is_relative_to(source):
        return False
    return not any(part.startswith(".") for part in data_dir.relative_to(source).parts)
