"""``appliance worker``: a Celery worker that runs ingestion jobs from Redis (scale mode)."""

from __future__ import annotations

from typing import Annotated

import typer

from appliance.commands.context import AppContext


def worker(
    ctx: typer.Context,
    concurrency: Annotated[
        int, typer.Option(min=1, help="Jobs run at once. Keep 1 with the embedded Qdrant Edge shard.")
    ] = 1,
    queues: Annotated[str, typer.Option(help="Comma-separated queues to take jobs from.")] = "ingest",
    pool: Annotated[
        str,
        typer.Option(help="Celery pool: `threads` (jobs share this process's models and store) or `solo`."),
    ] = "threads",
) -> None:
    """Run ingestion jobs (sync, ingest, upload, reindex) sent by the API over Redis; needs
    `redis.url` and the API's database (PostgreSQL). Stop with SIGTERM: the running job finishes
    or goes back to the queue."""
    cli = AppContext.of(ctx)
    container = cli.container
    queue = container.job_queue
    if queue is None:
        cli.fail(
            "`appliance worker` needs redis.url (APPLIANCE_REDIS__URL): without it jobs run in `serve`", 2
        )
    from appliance.ingestion.queue import POOLS

    if pool not in POOLS:
        cli.fail(f"--pool must be one of: {', '.join(POOLS)}", 2)
    jobs = container.jobs
    # Loaded before the first job is taken, not during it.
    container.store  # noqa: B018 - with Qdrant Edge, this process becomes the shard's owner
    container.embedder.start()
    names = [q.strip() for q in queues.split(",") if q.strip()]
    code = queue.run_worker(jobs, concurrency, names, pool, cli.settings.log_level)
    raise typer.Exit(code)
