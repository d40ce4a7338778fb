"""Real servers on loopback for the connector tests: a threaded HTTP site, moto_server (S3),
PostgreSQL from Debian's binaries, and helpers to build git repositories and SQLite databases."""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

# The PostgreSQL server (fixture `postgres`) is the suite-wide one in tests/conftest.py.
from tests.conftest import Postgres, free_port  # noqa: F401 - Postgres: for the SQL tests' hints


def wait_port(port: int, proc: subprocess.Popen[Any] | None = None, deadline_s: float = 60) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port} after {deadline_s} s")


# -- a small web site ---------------------------------------------------------------------------


@dataclass
class Page:
    body: bytes | Callable[[BaseHTTPRequestHandler], None]
    status: int = 200
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "text/html; charset=utf-8"})


class Site:
    """A mutable set of pages served by a real HTTP server on 127.0.0.1."""

    def __init__(self) -> None:
        self.pages: dict[str, Page] = {}
        self.requests: list[str] = []
        self.heads: list[str] = []
        self.not_modified: list[str] = []  # GETs answered 304 (the client's validators matched)
        site = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_HEAD(self) -> None:  # noqa: N802 - the stdlib's name
                site.heads.append(self.path)
                page = site.pages.get(self.path)
                if page is None or callable(page.body):
                    self.send_response(404 if page is None else 405)
                    self.end_headers()
                    return
                self.send_response(page.status)
                for key, value in page.headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(page.body)))
                self.end_headers()

            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                site.requests.append(self.path)
                page = site.pages.get(self.path)
                if page is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if callable(page.body):
                    page.body(self)
                    return
                etag, modified = page.headers.get("ETag"), page.headers.get("Last-Modified")
                if (etag and self.headers.get("If-None-Match") == etag) or (
                    modified and not etag and self.headers.get("If-Modified-Since") == modified
                ):
                    site.not_modified.append(self.path)
                    self.send_response(304)
                    self.end_headers()
                    return
                self.send_response(page.status)
                for key, value in page.headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(page.body)))
                self.end_headers()
                self.wfile.write(page.body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def html(self, path: str, title: str, text: str, links: list[str] = (), **headers: str) -> None:  # type: ignore[assignment]
        anchors = "".join(f'<li><a href="{href}">{href}</a></li>' for href in links)
        body = (
            f"<html><head><title>{title}</title></head><body><h1>{title}</h1>"
            f"<p>{text}</p><ul>{anchors}</ul></body></html>"
        ).encode()
        self.pages[path] = Page(body, headers={"Content-Type": "text/html; charset=utf-8", **headers})

    def redirect(self, path: str, location: str) -> None:
        self.pages[path] = Page(b"", status=302, headers={"Location": location})

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def site() -> Iterator[Site]:
    s = Site()
    try:
        yield s
    finally:
        s.close()


# -- S3 -----------------------------------------------------------------------------------------


def _moto_server() -> str | None:
    beside = Path(sys.executable).with_name("moto_server")
    return str(beside) if beside.exists() else shutil.which("moto_server")


@dataclass
class S3:
    endpoint: str
    options: dict[str, str]

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3]:
    exe = _moto_server()
    if exe is None:
        pytest.skip("moto_server is not installed (pip install 'moto[server]')")
    port = free_port()
    proc = subprocess.Popen(
        [exe, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_port(port, proc)
        endpoint = f"http://127.0.0.1:{port}"
        yield S3(
            endpoint,
            {
                "endpoint_url": endpoint,
                "region": "us-east-1",
                "access_key_id": "test",
                "secret_access_key": "test",
            },
        )
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# -- git ----------------------------------------------------------------------------------------


def git(repo: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.org",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.org",
        "GIT_CONFIG_NOSYSTEM": "1",
        "HOME": str(repo.parent),
    }
    done = subprocess.run(
        ["git", "-C", str(repo), *args], env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def make_repo(path: Path, files: dict[str, str]) -> Path:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "first")
    return path


# -- SQL ----------------------------------------------------------------------------------------


def make_sqlite(path: Path, rows: list[tuple[Any, ...]]) -> Path:
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE articles (id INTEGER PRIMARY KEY, title TEXT, body TEXT, updated_at TEXT, acl TEXT)"
        )
        conn.executemany("INSERT INTO articles VALUES (?, ?, ?, ?, ?)", rows)
    return path
