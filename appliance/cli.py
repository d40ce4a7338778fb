"""The ``appliance`` command.

Commands that touch the data (ingest, ask, search) go through the API of a running
``appliance serve`` on the same data dir (it owns the embedded shard); otherwise they open the
data dir themselves. They act as the local administrator unless ``--user`` says otherwise.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from appliance.egress import install_guard, prepare_offline_env

app = typer.Typer(no_args_is_help=True, add_completion=False, help="On-premises knowledge-base appliance.")
config_app = typer.Typer(no_args_is_help=True, help="Settings.")
app.add_typer(config_app, name="config")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
CollectionOpt = Annotated[str | None, typer.Option("--collection", "-c", help="Knowledge base (collection).")]
UserOpt = Annotated[
    str | None, typer.Option("--user", help="Act as this user (default: local administrator).")
]

_state: dict[str, Any] = {"config": None}


@app.callback()
def main_options(
    config: Annotated[
        Path | None, typer.Option("--config", envvar="APPLIANCE_CONFIG", help="YAML settings file.")
    ] = None,
) -> None:
    _state["config"] = config


def _settings() -> Any:
    from appliance.settings import load_settings

    try:
        settings = load_settings(_state["config"])
    except Exception as exc:
        _fail(f"invalid settings: {exc}", 2)
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if settings.egress.block:
        install_guard(settings.egress.allow)
    return settings


def _fail(message: str, code: int = 1) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _emit(data: Any, as_json: bool, human: str) -> None:
    typer.echo(json.dumps(data, ensure_ascii=False, indent=2) if as_json else human)


def _principal(user: str | None, container: Any = None) -> Any:
    """The local administrator, or the named user as stored (role and ALL groups); unknown or
    disabled users are an error. ``container``: one already open (else the metadata DB is opened)."""
    from appliance.container import Container
    from appliance.domain import LOCAL_ADMIN, NotFound

    if user is None:
        return LOCAL_ADMIN
    if container is None:
        container = Container(_settings())
    try:
        return container.identity.principal(user)
    except NotFound as exc:
        _fail(exc.message)


class _Remote:
    """The running server's API, for commands run beside it."""

    def __init__(self, info: dict[str, Any]) -> None:
        import httpx

        self.client = httpx.Client(
            base_url=info["url"], headers={"Authorization": f"Bearer {info['token']}"}, timeout=3600
        )

    def post(self, path: str, body: dict[str, Any]) -> Any:
        response = self.client.post(path, json=body)
        if response.status_code >= 400:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text
            _fail(f"{response.status_code}: {message}")
        return response.json()


def _remote(settings: Any, user: str | None) -> _Remote | None:
    from appliance.container import read_server_info

    info = read_server_info(Path(settings.data_dir).expanduser().resolve())
    if info is None:
        return None
    if user is not None:
        _fail(
            "--user is not supported while `appliance serve` owns the data dir; use an API key of that user"
        )
    return _Remote(info)


def _local(settings: Any) -> Any:
    from appliance.container import Container
    from appliance.domain import ApplianceError

    container = Container(settings)
    try:
        container.acquire()
    except ApplianceError as exc:
        _fail(exc.message)
    return container


# -- serve ---------------------------------------------------------------------------------------


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default from settings: 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default from settings: 8000).")] = None,
) -> None:
    """Run the REST API and the chat UI in one process."""
    import uvicorn

    from appliance.api.app import create_app
    from appliance.container import clear_server_info, write_server_info
    from appliance.domain import LOCAL_ADMIN
    from ui.app import mount_ui

    settings = _settings()
    host = host or settings.server.host
    port = port if port is not None else settings.server.port
    container = _local(settings)
    issued = container.keys.bootstrap_admin()
    display_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    url = f"http://{display_host}:{port}"
    write_server_info(container.data_dir, url, container.keys.add_ephemeral(LOCAL_ADMIN))
    lines = [
        "",
        f"  Knowledge-base appliance on {url}/",
        f"  Chat UI:   {url}/",
        f"  API docs:  {url}/docs",
        f"  OpenAI:    {url}/v1  (Authorization: Bearer <key>)",
        f"  Data dir:  {container.data_dir}",
    ]
    if issued:
        lines += [
            "",
            "  First start: an admin API key was created. It is shown only this once:",
            f"    {issued.key}",
            "  UI login: user 'admin', password: that key.",
        ]
    elif settings.auth.admin_key:
        lines += ["", "  Admin key: taken from APPLIANCE_AUTH__ADMIN_KEY. UI login: user 'admin'."]
    typer.echo("\n".join(lines) + "\n", err=True)
    try:
        uvicorn.run(
            create_app(container, mount_ui), host=host, port=port, log_level=settings.log_level.lower()
        )
    finally:
        clear_server_info(container.data_dir)
        container.close()


# -- ingest / ask / search -----------------------------------------------------------------------


@app.command()
def ingest(
    sources: Annotated[
        list[str],
        typer.Argument(
            help="Folders or files, http(s):// sites, s3://bucket/prefix, git+URL (#BRANCH optional) or "
            "git:PATH, SQL URLs (sqlite:///kb.db#table, postgresql://...). See README 'Sources'."
        ),
    ],
    collection: CollectionOpt = None,
    allow: Annotated[
        list[str] | None, typer.Option("--allow", help="Who may read: group:NAME or user:NAME (repeatable).")
    ] = None,
    option: Annotated[
        list[str] | None,
        typer.Option(
            "--option", "-o", help="Connector option KEY=VALUE, e.g. query='SELECT ...', max_depth=1."
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Parse, chunk, embed and index documents. Unchanged files are skipped. Shows a progress
    bar on stderr; beside a running server it starts a job there and follows it."""
    import connectors
    from appliance.commands.ingestion import ingest_local, ingest_remote
    from appliance.domain import ApplianceError

    settings = _settings()
    acl = allow or []
    options: dict[str, str] = {}
    for entry in option or []:
        key, sep, value = entry.partition("=")
        if not sep or not key.strip():
            _fail(f"--option takes KEY=VALUE, got {entry!r}", 2)
        options[key.strip()] = value
    remote = _remote(settings, None)
    if remote:
        try:
            absolute = [connectors.absolute_source(s) for s in sources]
        except ApplianceError as exc:
            _fail(exc.message, 2)
        summary = ingest_remote(remote, absolute, collection, acl, options, quiet=as_json)
    else:
        container = _local(settings)
        try:
            summary = ingest_local(container, sources, collection, acl, options, quiet=as_json)
        except ApplianceError as exc:
            _fail(exc.message)
        finally:
            container.close()
    human = (
        f"added {summary['added']}, updated {summary['updated']}, unchanged {summary['unchanged']}, "
        f"deleted {summary['deleted']}, failed {len(summary['failed'])}; {summary['chunks']} chunks "
        f"in {summary['elapsed_s']:.1f} s"
    )
    for failure in summary["failed"]:
        human += f"\n  failed: {failure['uri']}: {failure['error']}"
    _emit(summary, as_json, human)


def _citations_text(citations: list[dict[str, Any]]) -> str:
    out = []
    for c in citations:
        page = f" p.{c['page']}" if c.get("page") else ""
        out.append(f"[{c['index']}] {c['title']}{page}  {c['uri']}  (score {c['score']:.4f})")
    return "\n".join(out)


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="The question.")],
    collection: CollectionOpt = None,
    user: UserOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Answer a question from the knowledge base, with citations."""
    from appliance.domain import ApplianceError

    settings = _settings()
    remote = _remote(settings, user)
    if remote:
        result = remote.post("/api/v1/ask", {"question": question, "collection": collection})
        if not as_json:
            typer.echo(result["answer"])
    else:
        container = _local(settings)

        async def run() -> dict[str, Any]:
            out: dict[str, Any] = {}
            principal = _principal(user, container)
            async for event in container.rag.ask_stream(question, principal, collection=collection):
                if event["type"] == "delta" and not as_json:
                    sys.stdout.write(event["content"])
                    sys.stdout.flush()
                elif event["type"] == "done":
                    out = event["result"].as_dict()
            if not as_json:
                sys.stdout.write("\n")
            return out

        try:
            result = asyncio.run(run())
        except ApplianceError as exc:
            _fail(exc.message)
        finally:
            container.close()
    if as_json:
        _emit(result, True, "")
    else:
        t = result["timings"]
        typer.echo(
            f"\n{_citations_text(result['citations'])}\n"
            f"retrieval {t['retrieval_ms']:.0f} ms, first token {t['ttft_ms']:.0f} ms, total {t['total_ms']:.0f} ms",
            err=True,
        )


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="What to look for.")],
    collection: CollectionOpt = None,
    k: Annotated[int, typer.Option("--k", min=1, max=100, help="Results.")] = 5,
    user: UserOpt = None,
    document_id: Annotated[
        list[str] | None, typer.Option("--document-id", help="Only these documents (repeatable).")
    ] = None,
    uri: Annotated[
        list[str] | None, typer.Option("--uri", help="Only these document URIs (repeatable).")
    ] = None,
    source: Annotated[
        list[str] | None,
        typer.Option("--source", help="Only documents ingested from this folder or URI (repeatable)."),
    ] = None,
    after: Annotated[
        str | None, typer.Option("--after", help="Only documents changed at or after this ISO date/time.")
    ] = None,
    before: Annotated[
        str | None, typer.Option("--before", help="Only documents changed at or before this ISO date/time.")
    ] = None,
    mode: Annotated[str, typer.Option("--mode", help="hybrid, dense or bm25.")] = "hybrid",
    as_json: JsonOpt = False,
) -> None:
    """Retrieval only: the chunks an answer would be built from."""
    from pydantic import ValidationError

    from appliance.api.schemas.kb import SearchFilters
    from appliance.audit import audit_query
    from appliance.domain import ApplianceError
    from appliance.rag.pipeline import citation_dicts

    if mode not in ("hybrid", "dense", "bm25"):
        _fail(f"--mode must be hybrid, dense or bm25, not {mode!r}", 2)
    try:
        filters = SearchFilters(
            document_ids=document_id or [],
            uris=[_as_uri(u) for u in uri or []],
            sources=[_as_uri(s) for s in source or []],
            modified_after=after,  # type: ignore[arg-type]
            modified_before=before,  # type: ignore[arg-type]
        )
    except ValidationError as exc:
        _fail(f"invalid filter: {exc.errors()[0]['msg']}", 2)
    narrowing = filters if filters.model_dump(exclude_defaults=True) else None
    settings = _settings()
    remote = _remote(settings, user)
    if remote:
        body: dict[str, Any] = {"query": query, "collection": collection, "k": k, "mode": mode}
        if narrowing is not None:
            body["filters"] = narrowing.model_dump(mode="json")
        citations = remote.post("/api/v1/search", body)["citations"]
    else:
        container = _local(settings)
        try:
            principal = _principal(user, container)
            container.embedder.start()
            hits, ms = container.retriever.search(
                query,
                principal,
                collection or settings.rag.default_collection,
                k,
                narrowing.to_filter() if narrowing else None,
                mode,
            )
            audit_query(
                container.queries,
                action="search",
                principal=principal,
                collection=collection or settings.rag.default_collection,
                question=query,
                hits=hits,
                status="ok",
                latency_ms=round(ms, 1),
            )
        except ApplianceError as exc:
            _fail(exc.message)
        finally:
            container.close()
        citations = citation_dicts(hits)
    _emit({"citations": citations}, as_json, _citations_text(citations) or "no results")


def _as_uri(value: str) -> str:
    """Local paths become the file:// URIs documents are stored under; URIs pass unchanged."""
    return value if "://" in value else Path(value).expanduser().resolve().as_uri()


# -- config --------------------------------------------------------------------------------------


@config_app.command("show")
def config_show(as_json: JsonOpt = False) -> None:
    """Print the effective settings, secrets redacted."""
    import yaml

    from appliance.settings import redacted

    data = redacted(_settings())
    _emit(data, as_json, yaml.safe_dump(data, sort_keys=False, allow_unicode=True).rstrip())


def _register_command_modules() -> None:
    from appliance.commands import register_all

    register_all(app)


_register_command_modules()


def main() -> None:
    prepare_offline_env()
    app()


if __name__ == "__main__":
    main()
