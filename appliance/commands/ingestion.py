"""``appliance ingest`` with its progress bar (in this process, or as a job of a running server)
and ``appliance verify``, the ledger-vs-index consistency check."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Annotated, Any

import typer

from appliance.commands.context import AppContext
from appliance.commands.options import CollectionOpt, JsonOpt
from appliance.commands.output import fail
from appliance.commands.remote import RemoteServer
from appliance.domain import ApplianceError

POLL_S = 0.5


class ProgressBar:
    """A rich progress bar on stderr, fed with IngestProgress snapshots (or nothing when quiet)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> ProgressBar:
        if self.quiet:
            return self
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._bar = Progress(
            TextColumn("[bold]ingest[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[failed]} failed, {task.fields[chunks]} chunks, {task.fields[rate]}/s"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[current]}"),
            console=Console(stderr=True),
            transient=False,
        )
        self._bar.__enter__()
        self._task = self._bar.add_task("ingest", total=None, failed=0, chunks=0, rate="0.0", current="")
        return self

    def update(self, snap: dict[str, Any]) -> None:
        if self._bar is None:
            return
        current = (snap.get("current") or "").rsplit("/", 1)[-1][:40]
        self._bar.update(
            self._task,
            total=snap["seen"] if snap.get("eta_s") is not None or snap["seen"] else None,
            completed=snap["done"] + snap["failed"],
            failed=snap["failed"],
            chunks=snap["chunks"],
            rate=f"{snap['rate_docs_s']:.1f}",
            current=current,
        )

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)


def ingest_local(
    container: Any,
    sources: Sequence[str],
    collection: str | None,
    acl: Sequence[str],
    options: dict[str, Any],
    quiet: bool,
) -> dict[str, Any]:
    """Run an ingest job in this process (no server owns the data dir), with a progress bar."""
    from appliance.domain import ApplianceError

    jobs = container.jobs
    name = collection or container.settings.rag.default_collection
    connectors = [jobs.connector("spec", s, options) for s in sources]
    with ProgressBar(quiet) as bar:
        last = [0.0]

        def listener(event: str, item: Any, state: Any) -> None:
            if time.monotonic() - last[0] > 0.1 or event in ("discovered",):
                last[0] = time.monotonic()
                bar.update(state.snapshot())

        def work(job: Any) -> dict[str, Any]:
            job.progress.listener = listener
            return jobs.run(connectors, name, acl, "admin", job.progress, job.cancel)  # closes them

        job = jobs.manager.run_inline("ingest", "admin", name, work, detail={"sources": list(sources)})
        bar.update(job.progress.snapshot())
    if job.status != "succeeded" or job.result is None:
        raise ApplianceError(job.error or f"ingest job {job.status}")
    summary: dict[str, Any] = job.result
    return summary


def ingest_remote(
    remote: RemoteServer,
    sources: Sequence[str],
    collection: str | None,
    acl: Sequence[str],
    options: dict[str, Any],
    quiet: bool,
) -> dict[str, Any]:
    """Start a job on the running server and follow its progress; Ctrl-C cancels it. Local paths
    in ``sources`` must already be absolute: the server resolves them in its own directory."""
    body = {
        "sources": list(sources),  # made absolute by the caller
        "collection": collection,
        "allow": list(acl),
        "options": options,
    }
    job = remote.post("/api/v1/jobs", body)
    with ProgressBar(quiet) as bar:
        try:
            while job["status"] in ("queued", "running"):
                time.sleep(POLL_S)  # polling a remote job: the interval is the refresh rate, not a sync
                job = remote.get(f"/api/v1/jobs/{job['id']}")
                bar.update(job["progress"])
        except KeyboardInterrupt:
            remote.post(f"/api/v1/jobs/{job['id']}/cancel", {})
            fail(f"cancelled job {job['id']}", 130)
    if job["status"] != "succeeded":
        fail(f"ingest job {job['id']} {job['status']}: {job.get('error') or ''}".strip())
    return job["result"]  # type: ignore[no-any-return]


def ingest(
    ctx: typer.Context,
    sources: Annotated[
        list[str],
        typer.Argument(
            help="Folders or files, http(s):// sites, s3://bucket/prefix, git+URL (#BRANCH optional) or "
            "git:PATH, SQL URLs (sqlite:///kb.db#table, postgresql://...). See docs/sources.md."
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
    # Imported here: the connector registry imports every connector module.
    import connectors

    cli = AppContext.of(ctx)
    cli.settings  # noqa: B018 - invalid settings fail before the options are checked
    acl = allow or []
    options: dict[str, str] = {}
    for entry in option or []:
        key, sep, value = entry.partition("=")
        if not sep or not key.strip():
            cli.fail(f"--option takes KEY=VALUE, got {entry!r}", 2)
        options[key.strip()] = value
    remote = cli.remote()
    if remote:
        try:
            absolute = [connectors.absolute_source(s) for s in sources]
        except ApplianceError as exc:
            cli.fail(exc.message, 2)
        summary = ingest_remote(remote, absolute, collection, acl, options, quiet=as_json)
    else:
        container = cli.local()
        try:
            summary = ingest_local(container, sources, collection, acl, options, quiet=as_json)
        except ApplianceError as exc:
            cli.fail(exc.message)
        finally:
            container.close()
    human = (
        f"added {summary['added']}, updated {summary['updated']}, unchanged {summary['unchanged']}, "
        f"deleted {summary['deleted']}, failed {len(summary['failed'])}; {summary['chunks']} chunks "
        f"in {summary['elapsed_s']:.1f} s"
    )
    for failure in summary["failed"]:
        human += f"\n  failed: {failure['uri']}: {failure['error']}"
    cli.emit(summary, as_json, human)


def verify(
    ctx: typer.Context,
    collection: Annotated[
        str | None, typer.Option("--collection", "-c", help="Only this collection.")
    ] = None,
    repair: Annotated[
        bool,
        typer.Option(
            "--repair", help="Delete orphan points; mark documents with missing chunks for re-indexing."
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Check the ingestion ledger against the index: missing, orphan and duplicate chunks."""
    cli = AppContext.of(ctx)
    remote = cli.remote()
    if remote:
        params = {"repair": str(repair).lower(), **({"collection": collection} if collection else {})}
        result = remote.get("/api/v1/ingest/verify", params)
    else:
        container = cli.local()
        try:
            result = container.jobs.verify(collection, repair)
        finally:
            container.close()
    lines = []
    for name, s in result["collections"].items():
        lines.append(
            f"{name:20} {'ok ' if s['ok'] else 'BAD'} {s['documents']} documents, {s['ledger_chunks']} "
            f"chunks in the ledger, {s['shard_points']} points; missing {s['missing']}, orphan "
            f"{s['orphan']}, duplicate {s['duplicate']}, pending {s['pending']}"
        )
    cli.emit(result, as_json, "\n".join(lines) or "no collections")
    if not result["ok"]:
        raise typer.Exit(1)
