"""Connectors, registered by name. Each depends only on ``appliance.domain``.

The appliance builds them through one factory (``appliance.ingestion.connect.ConnectorFactory``),
which adds what the settings say; this package knows nothing of the settings.
``build(kind, **options)`` makes a connector from its own options (what ``connector.options()``
returned, plus secrets the caller keeps elsewhere); ``for_source(spec, **options)`` reads a SOURCE
argument of the CLI (uploads have no SOURCE string: they are made by the upload API only):

- ``/a/path``, ``./rel``, ``file:///a/path``                      -> filesystem
- ``http://...``, ``https://...``                                   -> web
- ``s3://BUCKET/PREFIX``                                            -> s3
- ``git+URL``, ``git:PATH``, ``git://...``, ``ssh://...``, or a URL or path
  ending in ``.git``; ``#BRANCH`` at the end picks the branch        -> git
- ``sql+URL`` or a SQLAlchemy URL (``sqlite:///kb.db``, ``postgresql://...``);
  ``#TABLE`` or ``#SELECT ...`` at the end, or the ``query`` option  -> sql

``for_source`` ignores options the chosen kind does not take, so a caller may pass the union of
every kind's settings; ``build`` rejects them. Option values given as strings (``--option k=v``)
are converted to the parameter's type (int, float, bool, or a comma-separated list).
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from appliance.domain import Connector, InvalidRequest
from connectors.filesystem import FilesystemConnector
from connectors.git import GitConnector
from connectors.s3 import S3Connector
from connectors.sql import SqlConnector
from connectors.upload import UploadConnector
from connectors.web import WebConnector

__all__ = [
    "REGISTRY",
    "FilesystemConnector",
    "GitConnector",
    "S3Connector",
    "SqlConnector",
    "UploadConnector",
    "WebConnector",
    "absolute_source",
    "build",
    "for_source",
    "kind_of",
    "parse_source",
]

REGISTRY: dict[str, Callable[..., Connector]] = {
    "filesystem": FilesystemConnector,
    "upload": UploadConnector,
    "web": WebConnector,
    "s3": S3Connector,
    "git": GitConnector,
    "sql": SqlConnector,
}

SQL_SCHEMES = frozenset({"sqlite", "postgresql", "postgres", "mysql", "mariadb", "mssql", "oracle"})


def parse_source(spec: str) -> tuple[str, dict[str, Any]]:
    """The connector kind for a SOURCE string and the options the string itself carries."""
    s = spec.strip()
    if not s:
        raise InvalidRequest("empty source")
    scheme = s.split("://", 1)[0].lower() if "://" in s else ""
    if s.startswith("git+") or (s.startswith("git:") and not s.startswith("git://")):
        return "git", _git_options(s[4:])
    if scheme in ("git", "ssh") or scheme.startswith("git+"):
        return "git", _git_options(s)
    if scheme == "s3":
        bucket, _, prefix = s[5:].partition("/")
        return "s3", {"bucket": bucket, "prefix": prefix}
    if s.startswith("sql+"):
        return "sql", _sql_options(s[4:])
    if scheme.split("+", 1)[0] in SQL_SCHEMES:
        return "sql", _sql_options(s)
    if scheme in ("http", "https"):
        if s.split("#", 1)[0].rstrip("/").endswith(".git"):
            return "git", _git_options(s)
        return "web", {"start_urls": [s]}
    if scheme and scheme != "file":
        raise InvalidRequest(
            f"no connector for {scheme}:// sources; use a path, http(s)://, s3://, git+URL or a SQL URL"
        )
    path = s.removeprefix("file://")
    if path.split("#", 1)[0].rstrip("/").endswith(".git"):
        return "git", _git_options(path)
    return "filesystem", {"root": path}


def _git_options(rest: str) -> dict[str, Any]:
    repo, _, branch = rest.partition("#")
    return {"repo": repo, **({"branch": branch} if branch else {})}


def _sql_options(url: str) -> dict[str, Any]:
    url, _, fragment = url.partition("#")
    if url.startswith("postgres://"):  # SQLAlchemy 2 only knows the long spelling
        url = "postgresql://" + url[len("postgres://") :]
    options: dict[str, Any] = {"url": url}
    fragment = fragment.strip()
    if fragment.lower().startswith("select"):
        options["query"] = fragment
    elif fragment:
        options["table"] = fragment
    return options


def kind_of(spec: str) -> str:
    return parse_source(spec)[0]


def absolute_source(spec: str) -> str:
    """The same SOURCE with local paths made absolute, for handing it to a server whose working
    directory differs (the CLI beside a running ``appliance serve``)."""
    kind, own = parse_source(spec)
    if kind == "filesystem":
        return str(Path(own["root"]).expanduser().resolve())
    if kind == "git" and "://" not in own["repo"] and Path(own["repo"]).expanduser().exists():
        branch = f"#{own['branch']}" if own.get("branch") else ""
        return f"git:{Path(own['repo']).expanduser().resolve()}{branch}"
    if kind == "sql" and own["url"].startswith("sqlite:///") and not own["url"].startswith("sqlite:////"):
        path = own["url"].removeprefix("sqlite:///").split("?", 1)[0]
        if path and path != ":memory:":
            _, _, fragment = spec.partition("#")
            return f"sqlite:///{Path(path).expanduser().resolve()}" + (f"#{fragment}" if fragment else "")
    return spec


def _parameters(kind: str) -> dict[str, inspect.Parameter]:
    factory = REGISTRY[kind]
    return {
        name: p
        for name, p in inspect.signature(factory).parameters.items()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def _is_sequence(hint: Any) -> bool:
    origin = typing.get_origin(hint)
    return isinstance(origin, type) and issubclass(origin, Sequence) and not issubclass(origin, str)


def _coerce(kind: str, name: str, value: Any) -> Any:
    if not isinstance(value, str):
        return value
    hint = typing.get_type_hints(REGISTRY[kind].__init__).get(name)  # type: ignore[misc]
    members = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    if bool in members:
        return value.strip().lower() in ("1", "true", "yes", "on")
    if int in members:
        return int(value)
    if float in members:
        return float(value)
    if any(_is_sequence(m) for m in members):
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


def build(kind: str, **options: Any) -> Connector:
    """A connector of ``kind`` from its options; unknown options are an error."""
    if kind not in REGISTRY:
        raise InvalidRequest(f"unknown source kind {kind!r}; known: {', '.join(sorted(REGISTRY))}")
    params = _parameters(kind)
    unknown = sorted(set(options) - set(params))
    if unknown:
        raise InvalidRequest(
            f"{kind} sources take no option {', '.join(unknown)}; they take: {', '.join(params)}"
        )
    try:
        values = {k: _coerce(kind, k, v) for k, v in options.items()}
    except ValueError as exc:
        raise InvalidRequest(f"bad option value for a {kind} source: {exc}") from exc
    try:
        return REGISTRY[kind](**values)
    except TypeError as exc:
        raise InvalidRequest(f"{kind} source: {exc}") from exc


def for_source(spec: str, **options: Any) -> Connector:
    """The connector for a SOURCE argument (see the module doc), with ``options`` for its kind.

    What the SOURCE string itself says (a path, a URL, ``#branch``, ``#table``) wins over
    ``options``, which typically carry the settings' defaults.
    """
    kind, own = parse_source(spec)
    params = _parameters(kind)
    passed = {k: v for k, v in options.items() if k in params and v is not None}
    return build(kind, **{**passed, **own})
