"""A real ``appliance serve`` with a small corpus, driven by Debian's Chromium through Playwright.

Playwright's own browser download cannot work offline, so the system Chromium is launched with
``executable_path``. Answers are generated (``answer_mode: abstractive``) so they stream token by
token and Stop has a generation to stop. Screenshots of every step go to tests/artifacts/.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ROOT, Server, free_port
from tests.fixtures.corpus import make_corpus

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = ROOT / "tests" / "artifacts"
DEADLINE_S = 600.0  # a bound for an answer on a crowded 2-core machine (polled, never slept)

SECRET_MD = "# Board minutes\n\nThe merger code name chosen by the board is Project Bluefin.\n"
ZH_MD = (ROOT / "tests" / "fixtures" / "kb" / "zh_attendance_policy.md").read_text(encoding="utf-8")
FINANCE_MD = "# Payroll run\n\nSalaries are paid on the 25th of each month by the finance team.\n"


def hostile_html(beacon: str) -> str:
    """A page whose title and text carry a script and Markdown image and link syntax as TEXT (the
    entities decode to ``<script>`` in the parsed text), and real tags a parser drops."""
    script = "&lt;script&gt;window.__pwned=1&lt;/script&gt;"
    return (
        f"<html><head><title>Zebra</title></head><body>"
        f"<h1>Zebra {script} care ![x]({beacon}/beacon-title)</h1>"
        f"<p>The zebra maintenance code is Z-42. {script} ![x]({beacon}/beacon) "
        f"[click]({beacon}/beacon-link) &lt;img src=&quot;{beacon}/beacon-img&quot;&gt; "
        f'<img src="{beacon}/beacon-tag"><script>window.__pwned=1</script></p></body></html>\n'
    )


class Beacon:
    """An HTTP server that records every request it gets: nothing should ever reach it."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        hits = self.hits

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server hook
                hits.append(self.path)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="package")
def beacon() -> Iterator[Beacon]:
    server = Beacon()
    try:
        yield server
    finally:
        server.close()


def _ingest(api: httpx.Client, path: Path, collection: str, allow: list[str]) -> None:
    r = api.post("/ingest", json={"sources": [str(path)], "collection": collection, "allow": allow})
    assert r.status_code == 200 and not r.json()["failed"], r.text


@pytest.fixture(scope="package")
def site(tmp_path_factory: pytest.TempPathFactory, beacon: Beacon) -> Iterator[dict[str, Any]]:
    """The server with: the mixed corpus in `default` (everyone) plus a document only carol may
    read; Chinese policies in `zh`; a hostile document in `lab`; payroll in `finance` (its group)."""
    tmp = tmp_path_factory.mktemp("browser")
    folders: dict[str, Path] = {"corpus": make_corpus(tmp / "corpus")}
    for name, files in {
        "secret": {"minutes.md": SECRET_MD},
        "zh": {"zh_attendance_policy.md": ZH_MD},
        "lab": {"zebra.html": hostile_html(beacon.url)},
        "finance": {"payroll.md": FINANCE_MD},
    }.items():
        folders[name] = tmp / name
        folders[name].mkdir()
        for filename, text in files.items():
            (folders[name] / filename).write_text(text, encoding="utf-8")
    server = Server(
        tmp / "data",
        admin_key="kb-browser-admin-" + os.urandom(8).hex(),
        APPLIANCE_RAG__ANSWER_MODE="abstractive",
        APPLIANCE_INFERENCE__MAX_TOKENS="96",
    )
    try:
        server.wait_ready(DEADLINE_S)  # the model loads first; a crowded machine is slow at it
        api = httpx.Client(
            base_url=f"{server.url}/api/v1",
            headers={"Authorization": f"Bearer {server.admin_key}"},
            timeout=600,
        )
        assert api.post("/groups", json={"name": "finance"}).status_code == 201
        for user in ("erin", "carol"):
            r = api.post("/users", json={"name": user, "role": "employee", "password": f"{user}-password"})
            assert r.status_code == 201, r.text
        _ingest(api, folders["corpus"], "default", [])
        _ingest(api, folders["secret"], "default", ["user:carol"])
        _ingest(api, folders["zh"], "zh", [])
        _ingest(api, folders["lab"], "lab", [])
        _ingest(api, folders["finance"], "finance", ["group:finance"])
        erin_key = api.post("/keys", json={"user": "erin"}).json()["key"]
        yield {"server": server, "api": api, "folders": folders, "erin_key": erin_key, "beacon": beacon}
    finally:
        server.stop()


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make system-deps` installs Debian's chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture()
def new_page(browser: Any, site: dict[str, Any]) -> Iterator[Callable[..., Any]]:
    contexts: list[Any] = []

    def make(locale: str = "en-US", width: int = 1360, height: int = 900) -> Any:
        context = browser.new_context(locale=locale, viewport={"width": width, "height": height})
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=site["server"].url)
        contexts.append(context)
        return context.new_page()

    yield make
    for context in contexts:
        context.close()


def shot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path


def sign_in(page: Any, url: str, user: str) -> None:
    """Gradio's sign-in form, in whatever language the browser asked for."""
    page.goto(url + "/")
    page.locator("input:not([type=password])").first.fill(user)
    page.locator("input[type=password]").fill(f"{user}-password")
    page.locator("input[type=password]").press("Enter")
    page.locator("#kb-chat").wait_for(timeout=60_000)
    page.locator("#kb-header .kb-user").wait_for(timeout=60_000)  # the page load event has run


def wait_until(check: Callable[[], Any], deadline_s: float = DEADLINE_S, what: str = "condition") -> Any:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(0.1)  # polling the page until the deadline
    raise AssertionError(f"{what} not met in {deadline_s} s")
