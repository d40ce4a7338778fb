"""Web connector against a real HTTP server on loopback: crawl limits, robots.txt, sitemap,
versions, and refusal of loopback / private / metadata addresses after DNS and on redirects."""

from __future__ import annotations

import json
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

import connectors
from connectors._net import AllowList, FetchFailed, FetchRefused, SafeClient
from connectors.web import WebConnector
from tests.integration.connectors.conftest import Page, Site

LOOPBACK = ["127.0.0.1"]


def build_site(site: Site) -> None:
    u = site.url
    site.pages["/robots.txt"] = Page(
        f"User-agent: *\nDisallow: /private/\nSitemap: {u}/sitemap.xml\n".encode(),
        headers={"Content-Type": "text/plain"},
    )
    site.pages["/sitemap.xml"] = Page(
        f'<?xml version="1.0"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
        f"<url><loc>{u}/orphan.html</loc></url></urlset>".encode(),
        headers={"Content-Type": "application/xml"},
    )
    site.html(
        "/",
        "Home",
        "Welcome to the handbook.",
        [
            "/a.html",
            "/b.txt",
            "/private/secret.html",
            "/deep/1.html",
            "/big.html",
            "/meta",
            "/intranet",
            "/other-loopback",
            "/missing.html",
            "http://example.invalid/offsite.html",
            "/style.css",
            "/manual.pdf",
        ],
    )
    site.pages["/manual.pdf"] = Page(
        b"%PDF-1.4 not really", headers={"Content-Type": "application/pdf", "ETag": '"m1"'}
    )
    site.html("/a.html", "Vacation", "Employees get 30 vacation days.", ETag='"a1"')
    site.pages["/b.txt"] = Page(
        b"plain text page",
        headers={"Content-Type": "text/plain", "Last-Modified": "Mon, 02 Nov 2026 10:00:00 GMT"},
    )
    site.pages["/style.css"] = Page(b"body{}", headers={"Content-Type": "text/css"})
    site.html("/private/secret.html", "Secret", "robots.txt says no")
    site.html("/orphan.html", "Orphan", "only the sitemap lists me")
    site.html("/deep/1.html", "One", "depth one", ["/deep/2.html"])
    site.html("/deep/2.html", "Two", "depth two", ["/deep/3.html"])
    site.html("/deep/3.html", "Three", "depth three")
    site.html("/big.html", "Big", "x" * 300_000)
    site.redirect("/meta", "http://169.254.169.254/latest/meta-data/iam/")
    site.redirect("/intranet", "http://10.20.30.40/admin")
    site.redirect("/other-loopback", f"http://127.0.0.2:{site.port}/")


def crawl(site: Site, **options: object) -> dict[str, object]:
    c = WebConnector(site.url + "/", **{"allow_private": LOOPBACK, "max_bytes": 100_000, **options})  # type: ignore[arg-type]
    return {item.uri.removeprefix(site.url): item for item in c.discover()} | {"_c": c}


def test_crawl_limits_robots_sitemap_and_refusals(site: Site) -> None:
    build_site(site)
    found = crawl(site, max_depth=2)
    c: WebConnector = found.pop("_c")  # type: ignore[assignment]
    ok = {k for k, v in found.items() if "error" not in v.metadata}  # type: ignore[union-attr]
    assert ok == {"/", "/a.html", "/b.txt", "/orphan.html", "/deep/1.html", "/deep/2.html", "/manual.pdf"}
    # A linked file with an ETag is listed from a HEAD: an unchanged one is never downloaded.
    assert found["/manual.pdf"].version == 'etag:"m1"' and "/manual.pdf" not in site.requests  # type: ignore[union-attr]
    assert "/manual.pdf" in site.heads
    assert "/private/secret.html" not in found and "/private/secret.html" not in site.requests
    assert "/deep/3.html" not in found, "beyond max_depth"
    assert "/style.css" not in found and "/missing.html" not in found
    assert not any("offsite" in k for k in found)

    def reason(path: str) -> str:
        with pytest.raises((FetchRefused, FetchFailed)) as err:
            c.fetch(found[path])  # type: ignore[arg-type]
        return err.value.message

    assert "169.254.169.254" in reason("/meta") and "metadata" in reason("/meta")
    assert "10.20.30.40" in reason("/intranet") and "private" in reason("/intranet")
    assert "127.0.0.2" in reason("/other-loopback") and "loopback" in reason("/other-loopback")
    assert "limit" in reason("/big.html")

    assert c.fetch(found["/manual.pdf"]) == b"%PDF-1.4 not really"  # type: ignore[arg-type]
    assert found["/manual.pdf"].metadata["filename"] == "manual.pdf"  # type: ignore[union-attr]
    page = c.fetch(found["/a.html"])  # type: ignore[arg-type]
    assert b"30 vacation days" in page
    assert found["/a.html"].metadata["filename"] == "a.html"  # type: ignore[union-attr]
    assert found["/"].metadata["filename"] == "index.html"  # type: ignore[union-attr]


def test_the_ingestion_file_limit_caps_responses_when_it_is_lower(site: Site) -> None:
    build_site(site)
    found = crawl(site, max_depth=1, sitemap=False, max_file_bytes=200_000)
    c: WebConnector = found.pop("_c")  # type: ignore[assignment]
    with pytest.raises(FetchFailed, match=r"over the 100000-byte limit \(connectors.web.max_bytes\)"):
        c.fetch(found["/big.html"])  # type: ignore[arg-type]
    found = crawl(site, max_depth=1, sitemap=False, max_file_bytes=50_000, max_bytes=10**6)
    c = found.pop("_c")  # type: ignore[assignment]
    with pytest.raises(FetchFailed, match=r"over the 50000-byte limit \(ingestion.max_file_mb\)"):
        c.fetch(found["/big.html"])  # type: ignore[arg-type]
    assert b"30 vacation days" in c.fetch(found["/a.html"])  # type: ignore[arg-type]


def test_page_limit_and_depth_zero(site: Site) -> None:
    build_site(site)
    found = crawl(site, max_pages=3, sitemap=False)
    found.pop("_c")
    assert len(found) == 3
    only_start = crawl(site, max_depth=0, sitemap=False)
    only_start.pop("_c")
    assert list(only_start) == ["/"]


def test_versions_follow_etag_last_modified_or_content(site: Site) -> None:
    build_site(site)
    first = crawl(site, max_depth=1, sitemap=False)
    assert first["/a.html"].version == 'etag:"a1"'  # type: ignore[union-attr]
    assert first["/b.txt"].version.startswith("modified:")  # type: ignore[union-attr]
    assert first["/"].version.startswith("sha256:")  # type: ignore[union-attr]
    site.html("/a.html", "Vacation", "Employees get 31 vacation days.", ETag='"a2"')
    site.pages["/b.txt"].headers["Last-Modified"] = "Tue, 03 Nov 2026 10:00:00 GMT"
    site.html("/", "Home", "Changed home page.", ["/a.html", "/b.txt"])
    second = crawl(site, max_depth=1, sitemap=False)
    for path in ("/", "/a.html", "/b.txt"):
        assert second[path].version != first[path].version, path  # type: ignore[union-attr]
    third = crawl(site, max_depth=1, sitemap=False)
    assert third["/"].version == second["/"].version  # type: ignore[union-attr]


def test_an_unchanged_site_is_recrawled_with_conditional_gets(site: Site, tmp_path: Path) -> None:
    """Pages the server says are unchanged (304) are listed under their last version and their
    remembered links are followed, without their bodies being sent again."""
    u = site.url
    site.html("/", "Home", "Welcome.", ["/a.html", "/b.html", "/plain.html"], ETag='"h1"')
    site.html("/a.html", "Vacation", "Employees get 30 vacation days.", ["/deep.html"], ETag='"a1"')
    site.html("/b.html", "Travel", "Book trains.", **{"Last-Modified": "Mon, 02 Nov 2026 10:00:00 GMT"})
    site.html("/plain.html", "Plain", "No validators: always downloaded.")
    site.html("/deep.html", "Deep", "Only linked from a.html.", ETag='"d1"')

    def run() -> dict[str, str]:
        site.requests.clear()
        site.not_modified.clear()
        c = WebConnector(u + "/", allow_private=LOOPBACK, sitemap=False, cache_dir=str(tmp_path))
        return {item.uri.removeprefix(u): item.version for item in c.discover()}

    first = run()
    assert set(first) == {"/", "/a.html", "/b.html", "/plain.html", "/deep.html"} and not site.not_modified
    second = run()
    assert second == first  # same pages, same versions: the pipeline skips them all
    assert sorted(site.not_modified) == ["/", "/a.html", "/b.html", "/deep.html"]
    assert "/deep.html" in second  # reached through the links remembered for a.html
    site.html("/a.html", "Vacation", "Employees get 31 vacation days.", ["/deep.html"], ETag='"a2"')
    third = run()
    assert third["/a.html"] == 'etag:"a2"' != first["/a.html"]
    assert sorted(site.not_modified) == ["/", "/b.html", "/deep.html"]
    # A page that answered 304 is still fetched in full when the pipeline asks for it.
    c = WebConnector(u + "/", allow_private=LOOPBACK, sitemap=False, cache_dir=str(tmp_path))
    items = {item.uri.removeprefix(u): item for item in c.discover()}
    assert b"Welcome." in c.fetch(items["/"])


def test_a_broken_state_file_means_a_full_crawl(site: Site, tmp_path: Path) -> None:
    site.html("/", "Home", "Welcome.", ETag='"h1"')
    c = WebConnector(site.url + "/", allow_private=LOOPBACK, sitemap=False, cache_dir=str(tmp_path))
    list(c.discover())
    assert c.state_path is not None and c.state_path.exists()
    c.state_path.write_text("{not json")
    site.not_modified.clear()
    assert [i.version for i in c.discover()] == ['etag:"h1"'] and not site.not_modified
    pages = json.loads(c.state_path.read_text())["pages"]  # rewritten after the crawl
    assert [p["etag"] for p in pages.values()] == ['"h1"']


def test_start_url_on_loopback_is_refused_without_the_allow_list(site: Site) -> None:
    build_site(site)
    for start in (site.url + "/", f"http://localhost:{site.port}/"):
        c = connectors.for_source(start)
        with pytest.raises(FetchRefused, match="loopback"):
            list(c.discover())
    assert site.requests == [], "no request may reach a refused address"


def test_names_resolving_to_private_addresses_are_refused_after_dns() -> None:
    # A stand-in resolver (the only fake here): real DNS can't be made to answer 10.x in a test.
    def fake_dns(host: str, port: int) -> list[str]:
        return {"intranet.example": ["10.1.2.3"], "mixed.example": ["93.184.216.34", "169.254.169.254"]}[host]

    client = SafeClient(AllowList.parse([]), 1000, 1.0, "t", resolver=fake_dns)
    with pytest.raises(FetchRefused, match="private"):
        client.check("http://intranet.example/")
    with pytest.raises(FetchRefused, match="metadata"):
        client.check("https://mixed.example/")

    def guarded_dns(host: str, port: int) -> list[str]:
        raise PermissionError(f"name lookup of {host!r} refused: the appliance runs offline")

    guarded = SafeClient(AllowList.parse([]), 1000, 1.0, "t", resolver=guarded_dns)
    with pytest.raises(FetchRefused, match="egress.allow"):
        guarded.check("https://docs.intranet.example/")
    allowed = SafeClient(AllowList.parse(["intranet.example"]), 1000, 1.0, "t", resolver=fake_dns)
    target, host = allowed.check("http://intranet.example:8080/x?y=1")
    assert (str(target), host) == ("http://10.1.2.3:8080/x?y=1", "intranet.example")
    # A range that holds a metadata address does not open it; naming the address does.
    wide = SafeClient(AllowList.parse(["169.254.0.0/16"]), 1000, 1.0, "t")
    with pytest.raises(FetchRefused):
        wide.check("http://169.254.169.254/")
    SafeClient(AllowList.parse(["169.254.169.254"]), 1000, 1.0, "t").check("http://169.254.169.254/")
    with pytest.raises(FetchRefused, match="http and https"):
        allowed.check("file:///etc/passwd")


def test_slow_response_hits_the_time_cap(site: Site) -> None:
    def drip(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "text/html")
        handler.end_headers()
        try:
            for _ in range(40):
                handler.wfile.write(b"<p>still here</p>")
                handler.wfile.flush()
                time.sleep(0.1)
        except OSError:
            pass

    build_site(site)
    site.pages["/slow.html"] = Page(drip)
    c = WebConnector(site.url + "/slow.html", allow_private=LOOPBACK, timeout_s=0.5, sitemap=False)
    with pytest.raises(FetchFailed, match="took over"):
        list(c.discover())


def test_undeclared_body_is_cut_at_the_size_cap(site: Site) -> None:
    def endless(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "text/html")
        handler.end_headers()  # no Content-Length: the body ends when the connection closes
        try:
            for _ in range(100):
                handler.wfile.write(b"<p>" + b"y" * 10_000 + b"</p>")
        except OSError:
            pass
        handler.close_connection = True

    build_site(site)
    site.pages["/endless.html"] = Page(endless)
    c = WebConnector(site.url + "/endless.html", allow_private=LOOPBACK, max_bytes=50_000, sitemap=False)
    with pytest.raises(FetchFailed, match="over the 50000-byte limit"):
        list(c.discover())


def test_a_failing_start_url_aborts_instead_of_emptying_the_source(site: Site) -> None:
    build_site(site)
    c = WebConnector(site.url + "/missing.html", allow_private=LOOPBACK, sitemap=False)
    with pytest.raises(FetchFailed, match="HTTP 404"):
        list(c.discover())
    site.pages["/robots.txt"] = Page(b"", status=503)
    c = WebConnector(site.url + "/", allow_private=LOOPBACK, sitemap=False)
    with pytest.raises(FetchFailed, match="robots.txt"):
        list(c.discover())
