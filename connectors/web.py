"""Web sites: start URLs, same-site links to a depth and page limit, sitemap.xml, robots.txt.

Every request goes through ``SafeClient`` (address checks after DNS resolution and on each
redirect, size and time caps). Discovery has to download pages anyway to find their links, so the
bodies it read are kept (up to ``CACHE_BYTES``) and ``fetch`` serves them without a second request.

Conditional GET: with a ``cache_dir`` (the appliance gives ``<data_dir>/cache/web``) the connector
remembers, per page, the validators the server sent (ETag, Last-Modified), the version it listed
and the page's links. The next crawl asks with If-None-Match / If-Modified-Since; a 304 lists the
page under its remembered version (the pipeline then skips it as unchanged) and follows its
remembered links, so an unchanged site is re-crawled without downloading its pages. Remembering
is only an optimisation: the ledger still decides what to ingest, and ``fetch`` of a page that
answered 304 (because the ledger lacks that version, e.g. after a crash) downloads it in full.

Failure semantics, chosen so that nothing is deleted by accident: a start URL that can't be fetched
aborts discovery (an empty result would make the pipeline delete the whole site); a linked page
that fails (timeout, 5xx, size cap, refused redirect) is still listed, and its ``fetch`` raises the
reason, so it shows up as failed and keeps its indexed copy; a page that answers 404/410 is gone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import cast
from urllib.parse import unquote, urldefrag, urljoin, urlsplit
from urllib.robotparser import RobotFileParser

from appliance.domain import MAX_FILE_SETTING, InvalidRequest, SourceItem
from connectors._net import AllowList, FetchFailed, FetchRefused, Response, SafeClient

log = logging.getLogger(__name__)

CACHE_BYTES = 64 * 2**20
MAX_SITEMAPS = 20

# Content types worth indexing, and the file name extension the parser sees for each.
DOCUMENT_TYPES = {
    "text/html": ".html",
    "application/xhtml+xml": ".html",
    "text/plain": ".txt",
    "text/markdown": ".md",
    "text/x-markdown": ".md",
    "text/csv": ".csv",
    "application/pdf": ".pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": ".docx",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": ".pptx",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": ".xlsx",
}
_HTML = ("text/html", "application/xhtml+xml")
_FILE_SUFFIXES = frozenset(
    e for e in DOCUMENT_TYPES.values() if e != ".html"
)  # links that name a file, not a page
_LOC = re.compile(rb"<loc>\s*([^<\s]+)\s*</loc>", re.IGNORECASE)


def _normalise(url: str) -> str:
    url, _ = urldefrag(url.strip())
    parts = urlsplit(url)
    path = parts.path or "/"
    query = f"?{parts.query}" if parts.query else ""
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}{path}{query}"


def _host(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}"


class WebConnector:
    kind = "web"

    def __init__(
        self,
        start_urls: Sequence[str] | str,
        allowed_domains: Sequence[str] = (),
        max_pages: int = 200,
        max_depth: int = 3,
        max_bytes: int = 10 * 2**20,
        timeout_s: float = 20.0,
        allow_private: Sequence[str] = (),
        user_agent: str = "kb-appliance-crawler/0.1",
        sitemap: bool = True,
        acl: Sequence[str] = (),
        max_file_bytes: int | None = None,
        cache_dir: str | None = None,
    ) -> None:
        urls = [start_urls] if isinstance(start_urls, str) else list(start_urls)
        if not urls:
            raise InvalidRequest("a web source needs at least one start URL")
        for url in urls:
            if urlsplit(url).scheme not in ("http", "https") or not _host(url):
                raise InvalidRequest(f"not an http(s) URL: {url}")
        self.start_urls = [_normalise(u) for u in urls]
        self.allowed_domains = sorted(
            {d.lower().lstrip(".") for d in allowed_domains} or {_host(u) for u in self.start_urls}
        )
        self.max_pages = max_pages
        self.max_depth = max_depth
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.allow_private = list(allow_private)
        self.user_agent = user_agent
        self.sitemap = sitemap
        self.acl = tuple(acl)
        self.max_file_bytes = max_file_bytes
        self.root = " ".join(sorted(self.start_urls))
        key = hashlib.sha256(self.root.encode()).hexdigest()[:24]
        self.state_path = Path(cache_dir) / f"{key}.json" if cache_dir else None
        self._known: dict[str, dict[str, object]] = {}  # last crawl's pages (see the docstring)
        self._seen_pages: dict[str, dict[str, object]] = {}  # this crawl's
        self._cache: dict[str, Response] = {}
        self._cached_bytes = 0
        self._client: SafeClient | None = None
        self._robots_down: dict[str, str] = {}

    # -- the Connector contract ------------------------------------------------------------------

    def options(self) -> dict[str, object]:
        return {
            "start_urls": self.start_urls,
            "allowed_domains": self.allowed_domains,
            "max_pages": self.max_pages,
            "max_depth": self.max_depth,
            "max_bytes": self.max_bytes,
            "timeout_s": self.timeout_s,
            "allow_private": self.allow_private,
            "user_agent": self.user_agent,
            "sitemap": self.sitemap,
            "acl": list(self.acl),
        }

    def hosts(self) -> list[str]:
        """Hosts this source connects to (for the egress allow-list)."""
        return sorted({_host(u) for u in self.start_urls} | set(self.allowed_domains))

    def local_paths(self) -> list[Path]:
        return []  # its cache_dir is the appliance's own, not a source

    def discover(self) -> Iterator[SourceItem]:
        self._cache.clear()
        self._cached_bytes = 0
        self._robots_down = {}
        self._known, self._seen_pages = self._load_state(), {}
        yield from self._crawl()
        self._save_state()

    def _crawl(self) -> Iterator[SourceItem]:
        robots: dict[str, RobotFileParser | None] = {}
        queue: deque[tuple[str, int]] = deque((u, 0) for u in self.start_urls)
        if self.sitemap:
            for url in self._sitemap_urls(robots):
                queue.append((url, 1))
        starts = set(self.start_urls)
        seen: set[str] = set()
        fetched = 0
        while queue and fetched < self.max_pages:
            url, depth = queue.popleft()
            url = _normalise(url)
            if url in seen or not self._on_site(url):
                continue
            seen.add(url)
            if not self._robots_allow(url, robots):
                if url in starts and (down := self._robots_down.get(_origin(url))):
                    raise FetchFailed(f"robots.txt of {_origin(url)} unreachable ({down}): not crawling")
                log.info("robots.txt disallows %s", url)
                continue
            fetched += 1
            try:
                if head := self._head_document(url):
                    yield head
                    continue
                known = self._known.get(url)
                response = self._get(url, _validators(known))
            except (FetchRefused, FetchFailed) as exc:
                if url in starts:
                    raise
                yield self._failed(url, exc)
                continue
            if response.status == 304 and known:
                # Unchanged since the last crawl: its remembered version and links stand in.
                self._seen_pages[url] = known
                if depth < self.max_depth:
                    remembered = cast(list[str], known["links"])
                    queue.extend((link, depth + 1) for link in remembered if link not in seen)
                kind = str(known["content_type"])
                yield SourceItem(
                    uri=url,
                    version=str(known["version"]),
                    acl=self.acl,
                    metadata={"filename": _filename(url, kind), "content_type": kind, "depth": depth},
                )
                continue
            if response.status == 304:
                response = self._get(url)  # a 304 we did not ask for: ask again without validators
            if response.status in (404, 410) and url not in starts:
                continue  # gone: its indexed copy is deleted
            if response.status >= 400:
                error = FetchFailed(f"{url}: HTTP {response.status}")
                if url in starts:
                    raise error
                yield self._failed(url, error)
                continue
            final = _normalise(response.url)
            if final != url:
                if final in seen:
                    continue
                seen.add(final)
            kind = response.content_type or "text/html"
            links = self._links(response) if kind in _HTML else []
            if depth < self.max_depth:
                queue.extend((link, depth + 1) for link in links if link not in seen)
            if kind not in DOCUMENT_TYPES:
                continue
            self._remember(final, response)
            version = _version(response)
            if final == url and ("etag" in response.headers or "last-modified" in response.headers):
                self._seen_pages[url] = {
                    "etag": response.headers.get("etag"),
                    "last_modified": response.headers.get("last-modified"),
                    "version": version,
                    "content_type": kind,
                    "links": links,
                }
            yield SourceItem(
                uri=final,
                version=version,
                acl=self.acl,
                metadata={"filename": _filename(final, kind), "content_type": kind, "depth": depth},
            )

    def fetch(self, item: SourceItem) -> bytes:
        if error := item.metadata.get("error"):
            raise (FetchRefused if item.metadata.get("refused") else FetchFailed)(error)
        cached = self._cache.pop(item.uri, None)
        if cached is not None:
            self._cached_bytes -= len(cached.body)
            return cached.body
        response = self._get(item.uri)
        if response.status >= 400:
            raise FetchFailed(f"{item.uri}: HTTP {response.status}")
        return response.body

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()
        self._cache.clear()
        self._cached_bytes = 0

    # -- helpers ---------------------------------------------------------------------------------

    @property
    def client(self) -> SafeClient:
        if self._client is None:
            # The ingestion's file size limit caps responses too when it is the lower one.
            cap, setting = self.max_bytes, "connectors.web.max_bytes"
            if self.max_file_bytes is not None and self.max_file_bytes < cap:
                cap, setting = self.max_file_bytes, MAX_FILE_SETTING
            self._client = SafeClient(
                AllowList.parse(self.allow_private),
                cap,
                self.timeout_s,
                self.user_agent,
                limit_setting=setting,
            )
        return self._client

    def _on_site(self, url: str) -> bool:
        host = _host(url)
        return urlsplit(url).scheme in ("http", "https") and any(
            host == d or host.endswith("." + d) for d in self.allowed_domains
        )

    def _hop(self, url: str) -> None:
        if not self._on_site(url):
            raise FetchRefused(
                f"refused {url}: off-site (allowed domains: {', '.join(self.allowed_domains)})"
            )

    def _get(self, url: str, headers: dict[str, str] | None = None) -> Response:
        return self.client.get(url, headers=headers, hop_check=self._hop)

    def _load_state(self) -> dict[str, dict[str, object]]:
        if self.state_path is None:
            return {}
        try:
            data = json.loads(self.state_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:  # unreadable: crawl in full, and rewrite it after
            log.warning("web source: ignoring %s (%s)", self.state_path, exc)
            return {}
        return data.get("pages", {}) if data.get("root") == self.root else {}

    def _save_state(self) -> None:
        """After a whole crawl: the pages this one saw, so gone pages are forgotten."""
        if self.state_path is None:
            return
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"root": self.root, "pages": self._seen_pages}), encoding="utf-8")
        os.replace(tmp, self.state_path)

    def _head_document(self, url: str) -> SourceItem | None:
        """A linked file (PDF, DOCX...) is listed from a HEAD when the server gives a version, so
        an unchanged one is never downloaded: the pipeline skips ``fetch`` for a known version."""
        suffix = PurePosixPath(unquote(urlsplit(url).path)).suffix.lower()
        if suffix not in _FILE_SUFFIXES:
            return None
        response = self.client.get(url, method="HEAD", hop_check=self._hop)
        kind = response.content_type
        has_version = "etag" in response.headers or "last-modified" in response.headers
        if response.status >= 300 or not has_version or kind not in DOCUMENT_TYPES or kind in _HTML:
            return None  # a GET decides
        final = _normalise(response.url)
        return SourceItem(
            uri=final,
            version=_version(response),
            acl=self.acl,
            metadata={"filename": _filename(final, kind), "content_type": kind},
        )

    def _failed(self, url: str, exc: FetchRefused | FetchFailed) -> SourceItem:
        log.warning("web source: %s", exc.message)
        return SourceItem(
            uri=url,
            version="unavailable",
            acl=self.acl,
            metadata={"error": exc.message, "refused": isinstance(exc, FetchRefused)},
        )

    def _remember(self, url: str, response: Response) -> None:
        if self._cached_bytes + len(response.body) <= CACHE_BYTES:
            self._cache[url] = response
            self._cached_bytes += len(response.body)

    def _robots_allow(self, url: str, robots: dict[str, RobotFileParser | None]) -> bool:
        origin = _origin(url)
        if origin not in robots:
            robots[origin] = self._load_robots(origin)
        parser = robots[origin]
        return parser is None or parser.can_fetch(self.user_agent, url)

    def _load_robots(self, origin: str) -> RobotFileParser | None:
        """RFC 9309: a missing robots.txt (4xx) allows everything; an unreachable one (5xx,
        network error) means nothing may be crawled."""
        parser = RobotFileParser(origin + "/robots.txt")
        try:
            response = self._get(origin + "/robots.txt")
        except FetchFailed as exc:
            return self._robots_unreachable(origin, exc.message)
        if 400 <= response.status < 500:
            return None
        if response.status >= 500:
            return self._robots_unreachable(origin, f"HTTP {response.status}")
        parser.parse(response.body.decode("utf-8", "replace").splitlines())
        return parser

    def _robots_unreachable(self, origin: str, reason: str) -> RobotFileParser:
        log.warning("robots.txt of %s unreachable (%s): not crawling it", origin, reason)
        self._robots_down[origin] = reason
        parser = RobotFileParser(origin + "/robots.txt")
        parser.parse(["User-agent: *", "Disallow: /"])
        return parser

    def _sitemap_urls(self, robots: dict[str, RobotFileParser | None]) -> list[str]:
        sitemaps: list[str] = []
        for origin in dict.fromkeys(_origin(u) for u in self.start_urls):
            self._robots_allow(origin + "/", robots)  # loads robots.txt, which may name sitemaps
            if parser := robots.get(origin):
                sitemaps.extend(parser.site_maps() or [])
            sitemaps.append(origin + "/sitemap.xml")
        found: list[str] = []
        done: set[str] = set()
        while sitemaps and len(done) < MAX_SITEMAPS:
            url = sitemaps.pop(0)
            if url in done or not self._on_site(url):
                continue
            done.add(url)
            try:
                response = self._get(url)
            except (FetchFailed, FetchRefused) as exc:
                log.info("sitemap %s: %s", url, exc.message)
                continue
            if response.status != 200:
                continue
            locs = [m.decode("utf-8", "replace") for m in _LOC.findall(response.body)]
            # A sitemap index lists further sitemaps rather than pages.
            if b"<sitemapindex" in response.body[:2048].lower():
                sitemaps.extend(locs)
            else:
                found.extend(locs)
        return found

    def _links(self, response: Response) -> list[str]:
        from bs4 import BeautifulSoup

        soup = BeautifulSoup(response.body, "html.parser")
        base = response.url
        if (tag := soup.find("base", href=True)) is not None:
            base = urljoin(base, str(tag["href"]))
        links = []
        for a in soup.find_all("a", href=True):
            href = str(a["href"]).strip()
            if not href or href.startswith(("#", "mailto:", "javascript:", "tel:", "data:")):
                continue
            url = urljoin(base, href)
            if self._on_site(url):
                links.append(_normalise(url))
        return list(dict.fromkeys(links))


def _validators(known: dict[str, object] | None) -> dict[str, str] | None:
    """The conditional-GET headers for a page seen in the last crawl."""
    if not known:
        return None
    headers = {}
    if known.get("etag"):
        headers["If-None-Match"] = str(known["etag"])
    if known.get("last_modified"):
        headers["If-Modified-Since"] = str(known["last_modified"])
    return headers or None


def _version(response: Response) -> str:
    if etag := response.headers.get("etag"):
        return f"etag:{etag}"
    if modified := response.headers.get("last-modified"):
        return f"modified:{modified}"
    return "sha256:" + hashlib.sha256(response.body).hexdigest()


def _filename(url: str, content_type: str) -> str:
    name = PurePosixPath(unquote(urlsplit(url).path)).name or "index"
    ext = DOCUMENT_TYPES.get(content_type, "")
    if ext and not name.lower().endswith(ext) and not (ext == ".html" and name.lower().endswith(".htm")):
        name += ext
    return name
