"""Where git, SQL and S3 sources may connect: the web connector's address rules (no loopback,
private, link-local or metadata address unless `connectors.allow_private` names it), checked after
DNS, with the checked address the one connected to, and refusals and failures that do not echo the
addresses a name resolved to. SQL sources only read (a parser check and a read-only connection).

Real servers on loopback (a dumb-HTTP git server, PostgreSQL, moto). The only fake is a stand-in
resolver, named so: real DNS can't be made to answer differently between a check and a connect.
Names under `.invalid` never resolve (RFC 6761), so a source that works through one shows that the
client was handed the checked address instead of resolving the name itself.
"""

from __future__ import annotations

import subprocess
import threading
import uuid
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import connectors
from appliance.domain import InvalidRequest
from connectors._net import AllowList, FetchRefused, SafeClient
from connectors.git import GitConnector, GitError
from connectors.s3 import S3Connector, S3Error
from connectors.sql import SqlConnector, SqlError
from tests.integration.connectors.conftest import S3, Postgres, free_port, git, make_repo, wait_port

PUBLIC = "93.184.215.14"  # a global address: what a public name would resolve to


def stand_in_resolver(answers: dict[str, list[str]]) -> Any:
    def resolve(host: str, port: int) -> list[str]:
        return answers[host]

    return resolve


class GitHttp:
    """Bare repositories served over git's dumb HTTP protocol by a real server on 127.0.0.1."""

    def __init__(self, root: Path) -> None:
        self.requests: list[str] = []
        served = self.requests

        class Handler(SimpleHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                served.append(self.path)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(root)))
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def git_http(tmp_path: Path) -> Iterator[GitHttp]:
    work = make_repo(tmp_path / "work", {"guide.md": "# Guide\nDeploys happen on Tuesdays."})
    served = tmp_path / "served"
    served.mkdir()
    git(tmp_path, "clone", "-q", "--bare", str(work), str(served / "repo.git"))
    git(served / "repo.git", "update-server-info")  # what dumb HTTP clients read
    server = GitHttp(served)
    try:
        yield server
    finally:
        server.close()


def test_git_refuses_private_addresses_before_running_git(tmp_path: Path, git_http: GitHttp) -> None:
    cache = str(tmp_path / "cache")
    for repo, problem in (
        (f"http://localhost:{git_http.port}/repo.git", "loopback"),
        ("http://169.254.169.254/repo.git", "metadata"),
        ("ssh://git@localhost/team/repo.git", "loopback"),
        ("git@10.1.2.3:team/repo.git", "private"),
        ("git://[::1]/repo.git", "loopback"),
    ):
        c = connectors.build("git", repo=repo, cache_dir=cache)
        with pytest.raises(FetchRefused, match=problem) as refused:
            list(c.discover())
        assert "127.0.0.1" not in refused.value.message, "a refusal names no resolved address"
        assert "connectors.allow_private" in refused.value.message
    assert git_http.requests == [], "no request may reach a refused address"
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_git_connects_to_the_address_it_checked(tmp_path: Path, git_http: GitHttp) -> None:
    host = "kb-git.invalid"
    c = connectors.build(
        "git",
        repo=f"http://{host}:{git_http.port}/repo.git",
        cache_dir=str(tmp_path / "c"),
        allow_private=[host],
    )
    assert isinstance(c, GitConnector)
    c.reach.resolver = stand_in_resolver({host: ["127.0.0.1"]})
    assert [i.metadata["path"] for i in c.discover()] == ["guide.md"]  # cloned
    assert [i.metadata["path"] for i in c.discover()] == ["guide.md"]  # fetched
    assert any("info/refs" in r for r in git_http.requests)
    # Checked again on every fetch: the same name answering a loopback address, unallowed, stops it.
    strict = connectors.build(
        "git", repo=f"http://{host}:{git_http.port}/repo.git", cache_dir=str(tmp_path / "c")
    )
    strict.reach.resolver = stand_in_resolver({host: ["127.0.0.1"]})  # type: ignore[attr-defined]
    with pytest.raises(FetchRefused, match="loopback"):
        list(strict.discover())


def test_git_protocol_urls_are_rewritten_to_the_checked_address(tmp_path: Path, git_http: GitHttp) -> None:
    served = tmp_path / "served"
    port = free_port()
    daemon = subprocess.Popen(
        [
            "git",
            "daemon",
            "--export-all",
            f"--base-path={served}",
            "--listen=127.0.0.1",
            f"--port={port}",
            "--reuseaddr",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port, daemon)
        host = "kb-gitd.invalid"
        c = connectors.build(
            "git", repo=f"git://{host}:{port}/repo.git", cache_dir=str(tmp_path / "c"), allow_private=[host]
        )
        c.reach.resolver = stand_in_resolver({host: ["127.0.0.1"]})  # type: ignore[attr-defined]
        assert [i.metadata["path"] for i in c.discover()] == ["guide.md"]
    finally:
        daemon.terminate()
        daemon.wait(timeout=10)


def test_git_failures_do_not_echo_addresses_or_server_text(tmp_path: Path) -> None:
    host = "kb-git-down.invalid"
    port = free_port()  # nothing listens there
    c = connectors.build(
        "git", repo=f"http://{host}:{port}/repo.git", cache_dir=str(tmp_path / "c"), allow_private=[host]
    )
    c.reach.resolver = stand_in_resolver({host: ["127.0.0.1"]})  # type: ignore[attr-defined]
    with pytest.raises(GitError, match="could not reach the server") as failed:
        list(c.discover())
    assert "127.0.0.1" not in failed.value.message and "curl" not in failed.value.message.lower()


def test_web_refusals_name_the_class_of_address_not_the_address() -> None:
    client = SafeClient(
        AllowList.parse([]), 1000, 1.0, "t", resolver=stand_in_resolver({"intranet.example": ["10.1.2.3"]})
    )
    with pytest.raises(FetchRefused, match="private") as refused:
        client.check("http://intranet.example/")
    assert "10.1.2.3" not in refused.value.message


# -- SQL ----------------------------------------------------------------------------------------


def test_sql_sources_run_one_select_only(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'kb.db'}"
    for query, why in (
        ("DELETE FROM articles", "SELECT statements only"),
        ("SELECT 1 AS id, 'x' AS body; DROP TABLE articles", "one SELECT"),
        ("WITH gone AS (DELETE FROM articles RETURNING *) SELECT * FROM gone", "DELETE"),
        ("SELECT * FROM articles FOR UPDATE", "locks rows"),
        ("SELECT * INTO copy FROM articles", "INTO"),
    ):
        with pytest.raises(InvalidRequest, match=why):
            connectors.build("sql", url=url, query=query)
    with pytest.raises(InvalidRequest, match="may not set"):
        connectors.build("sql", url="postgresql://kb@db.example/kb?host=/run/postgresql", query="SELECT 1")
    with pytest.raises(InvalidRequest, match="not supported"):
        connectors.build("sql", url="mssql://kb@db.example/kb", query="SELECT 1")


@pytest.mark.services
def test_sql_connections_are_read_only(postgres: Postgres) -> None:
    engine = sa.create_engine(postgres.url)
    seq = f"kb_seq_{uuid.uuid4().hex[:8]}"
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE SEQUENCE {seq}"))
    url = postgres.url.replace("postgresql+psycopg://", "postgresql://")
    # A SELECT the parser can't tell from a read: nextval() writes, and the read-only connection refuses.
    c = connectors.build(
        "sql", url=url, query=f"SELECT nextval('{seq}') AS id, 'x' AS body", allow_private=["127.0.0.1"]
    )
    with pytest.raises(SqlError, match="read-only"):
        list(c.discover())
    c.close()
    with engine.connect() as conn:
        assert conn.execute(sa.text(f"SELECT is_called FROM {seq}")).scalar() is False
        conn.execute(sa.text(f"DROP SEQUENCE {seq}"))
        conn.commit()
    engine.dispose()


@pytest.mark.services
def test_sql_hosts_are_checked_and_the_checked_address_used(postgres: Postgres) -> None:
    parts = sa.engine.make_url(postgres.url)
    query = "SELECT 1 AS id, 'Hello' AS title, 'A row.' AS body"
    refused = connectors.build("sql", url=f"postgresql://kb@localhost:{parts.port}/postgres", query=query)
    with pytest.raises(FetchRefused, match="loopback") as why:
        list(refused.discover())
    assert "127.0.0.1" not in why.value.message
    host = "kb-db.invalid"
    c = connectors.build(
        "sql", url=f"postgresql://kb@{host}:{parts.port}/postgres", query=query, allow_private=[host]
    )
    assert isinstance(c, SqlConnector)
    c.reach.resolver = stand_in_resolver({host: ["127.0.0.1"]})
    assert [i.metadata["title"] for i in c.discover()] == ["Hello"]
    c.close()
    down = connectors.build(
        "sql", url=f"postgresql://kb@{host}:{free_port()}/postgres", query=query, allow_private=[host]
    )
    down.reach.resolver = stand_in_resolver({host: ["127.0.0.1"]})  # type: ignore[attr-defined]
    with pytest.raises(SqlError, match="cannot connect") as failed:
        list(down.discover())
    assert "127.0.0.1" not in failed.value.message and "refused" not in failed.value.message.split("(")[0]


# -- S3 -----------------------------------------------------------------------------------------


@pytest.mark.services
def test_s3_endpoints_are_checked_before_and_at_connect(s3_server: S3) -> None:
    bucket = f"kb-{uuid.uuid4().hex[:12]}"
    s3_server.client().create_bucket(Bucket=bucket)
    s3_server.client().put_object(Bucket=bucket, Key="docs/a.md", Body=b"# A\nText.")
    options = {**s3_server.options, "endpoint_url": s3_server.endpoint.replace("127.0.0.1", "localhost")}
    refused = connectors.for_source(f"s3://{bucket}/docs/", **options)
    with pytest.raises(FetchRefused, match="loopback") as why:
        list(refused.discover())
    assert "127.0.0.1" not in why.value.message
    allowed = connectors.for_source(f"s3://{bucket}/docs/", **options, allow_private=["localhost"])
    assert [i.uri for i in allowed.discover()] == [f"s3://{bucket}/docs/a.md"]
    # The check said "public", then botocore's own lookup answered loopback (a rebinding): the
    # connection to the address the check never saw is refused.
    rebound = connectors.for_source(f"s3://{bucket}/docs/", **options)
    assert isinstance(rebound, S3Connector)
    rebound.reach.resolver = stand_in_resolver({"localhost": [PUBLIC]})
    with pytest.raises(S3Error, match="could not reach the endpoint") as failed:
        list(rebound.discover())
    assert "127.0.0.1" not in failed.value.message
