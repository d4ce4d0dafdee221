"""Crawl a blog's sitemap into Articles: bounded concurrency, retries with backoff, robots.txt,
change detection, and an on-disk cache so an interrupted crawl resumes. Standard library only,
plus tqdm.

A re-crawl downloads only what changed. A page whose sitemap ``<lastmod>`` is the one it had
when it was cached is not requested at all; other cached pages get a conditional request
(``If-None-Match`` / ``If-Modified-Since``) and a ``304`` reuses the cached copy; a page with
neither is downloaded again (the index job still skips its chunks if their text is unchanged).

What a crawl says about each page (:class:`CrawlResult`): its article, or that it is gone
(``404``/``410``, or no longer in the sitemap: it leaves the index), or that it could not be
had this time (timeouts, ``5xx`` after retries, the crawl's page or time budget ran out): its
indexed version is kept, never deleted, and the page is reported.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import json
import logging
import os
import re
import tempfile
import threading
import time
import urllib.error
import urllib.request
import urllib.robotparser
import xml.etree.ElementTree as ET
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from html.parser import HTMLParser
from pathlib import Path
from typing import NamedTuple
from urllib.parse import quote, urldefrag, urljoin, urlparse

from tqdm import tqdm

from assistant.documents import CATEGORIES, Article, stable_id
from assistant.errors import SourceError

log = logging.getLogger(__name__)

MIN_WORDS = 30
MAX_SITEMAP_DEPTH = 3
MAX_RETRY_AFTER = 30.0
# A page larger than this is not a blog article; refusing it protects memory.
MAX_BODY_BYTES = 20 * 1024 * 1024

_ASSET_EXTENSIONS = (
    ".jpg", ".jpeg", ".png", ".gif", ".webp", ".svg", ".ico", ".bmp", ".avif",
    ".pdf", ".zip", ".rar", ".7z", ".gz", ".mp3", ".wav", ".flac", ".ogg", ".aif", ".aiff",
    ".mp4", ".mov", ".avi", ".webm", ".css", ".js", ".json", ".xml", ".txt", ".doc", ".docx",
)
# Listing pages, not articles: they would pollute the index with lists of excerpts.
_ARCHIVE_PARTS = ("/category/", "/tag/", "/author/", "/page/", "/feed/")
_FAILURES = (OSError, http.client.HTTPException, ValueError)

_DROPPED = frozenset({
    "script", "style", "nav", "header", "footer", "aside", "form", "noscript", "figcaption",
    "head", "title", "template", "svg", "iframe", "button", "select",
})
_BLOCKS = frozenset({
    "p", "div", "section", "article", "main", "h1", "h2", "h3", "h4", "h5", "h6", "li", "ul",
    "ol", "dl", "dt", "dd", "blockquote", "pre", "table", "tr", "td", "th", "br", "hr",
    "figure", "header", "footer",
})
_BREAK = "\x00"  # block boundary marker; NUL never survives in page text (stripped on input)
_CACHE_MARK = b"<!-- arsonor-crawler "
_SESSION_FILE = "crawl-session.json"
_GONE = (404, 410)
# An unchanged <lastmod> spares the request for at most this long: then the page is
# revalidated anyway (cheap with validators), which catches a page gone while still listed.
LASTMOD_TRUST_SECONDS = 7 * 86400
DEFAULT_USER_AGENT = "ArsonorAssistant/1.0 (+indexing)"
# What happened to each listed page, in the order summaries show them.
OUTCOMES = ("fetched", "not_modified", "unchanged", "gone", "failed", "deferred", "disallowed",
            "skipped")


# --- public API -------------------------------------------------------------------------


@dataclass(frozen=True)
class CrawlResult:
    """What one crawl found.

    ``articles``: the site's articles, in sitemap order (unchanged ones from the cache).
    ``keep``: ids of the articles whose page could not be had this time (transient failure,
    or the page/time budget ran out): the index keeps their previous version. An indexed
    article that is in neither set has left the site (out of the sitemap, ``404``/``410``,
    disallowed by robots.txt, no longer an article) and leaves the index.
    ``pages``: how many listed pages had each outcome of :data:`OUTCOMES`.
    ``failures``: ``"url: reason"`` of each page that failed or was deferred.
    ``complete``: every listed page was visited (no budget ran out); an incomplete crawl is
    resumed by the next one (pages it already fetched are not requested again).
    """

    articles: list[Article]
    keep: frozenset[str] = frozenset()
    pages: dict[str, int] = field(default_factory=dict)
    failures: tuple[str, ...] = ()
    complete: bool = True


def crawl(start_url: str, **options) -> list[Article]:
    """The articles of :func:`crawl_site` (same options), for callers that only want them."""
    return crawl_site(start_url, **options).articles


def crawl_site(start_url: str, *, cache_dir: str | Path | None = None, concurrency: int = 4,
               timeout: float = 10.0, retries: int = 3, backoff: float = 0.5,
               user_agent: str = DEFAULT_USER_AGENT, limit: int | None = None,
               max_pages: int | None = None, max_seconds: float | None = None,
               robots: bool = True, progress: bool = True) -> CrawlResult:
    """Fetch the sitemap (XML or HTML plan du site) at start_url and return its articles.

    ``limit`` caps the URLs taken from the sitemap (the rest are ignored, as if unlisted);
    ``max_pages`` caps the page requests of this crawl and ``max_seconds`` its duration: pages
    not reached are deferred (kept in the index, fetched by the next crawl). robots.txt
    (Disallow, Crawl-delay) is obeyed for ``user_agent`` unless ``robots`` is false.

    Raises SourceError if the sitemap (or robots.txt) is unusable or no article comes out.
    """
    _check_options(concurrency, timeout, retries, backoff, limit, max_pages, max_seconds)
    fetcher = _Fetcher(timeout, retries, backoff, user_agent)
    cache = _Cache(Path(cache_dir) if cache_dir is not None else None)
    session = cache.begin(start_url)
    rules = _Robots(fetcher) if robots else None
    deadline = None if max_seconds is None else time.monotonic() + max_seconds
    run = _Run(fetcher, cache, session, rules, _Budget(max_pages, deadline))
    listing = _collect_urls(run, start_url, limit)
    if not listing:
        raise SourceError(f"No article URL found in {start_url} (expected an XML sitemap "
                          "or an HTML page linking to the articles).")
    visits = _visit_all(run, listing, concurrency, progress)
    result = _result(visits, cache)
    if not result.articles:
        counts = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in result.pages.items() if n)
        raise SourceError(f"None of the {len(listing)} pages listed in {start_url} gave an "
                          f"article ({counts}); see the warnings.")
    if result.complete:
        cache.finish(prune=limit is None)
    return result


def parse_sitemap(body: bytes, base_url: str) -> tuple[list[str], list[str]]:
    """Return (article urls, nested sitemap urls) from an XML sitemap or an HTML page.
    The format is detected from the content, not from the URL."""
    pages, nested = sitemap_entries(body, base_url)
    return list(pages), list(nested)


def sitemap_entries(body: bytes, base_url: str) -> tuple[dict[str, str], dict[str, str]]:
    """Like :func:`parse_sitemap`, with each URL's ``<lastmod>`` ("" when there is none)."""
    root = _parse_xml(body)
    if root is None:
        urls = _filter_urls(_html_links(_decode(body, None), base_url), base_url)
        return dict.fromkeys(urls, ""), {}
    index = _local(root.tag) == "sitemapindex"
    entries: dict[str, str] = {}
    for loc, lastmod in _xml_entries(root, "sitemap" if index else "url"):
        url = urldefrag(urljoin(base_url, loc))[0]
        if (index or _looks_like_article(url)) and url not in entries:
            entries[url] = lastmod
    return ({}, entries) if index else (entries, {})


def extract_article(html: str, url: str) -> Article | None:
    """Build an Article from a page; None (with a warning) if it has no title or too little text."""
    page = _PageParser.run(html)
    title = _title(page)
    text = page.text()
    if not title:
        log.warning("Skipping %s: no title found (not an article).", url)
        return None
    if len(text.split()) < MIN_WORDS:
        log.warning("Skipping %s: only %d words of text (not an article).", url, len(text.split()))
        return None
    return Article(article_id=stable_id(url), title=title, text=text, url=url,
                   category=_category(page), tags=", ".join(_tags(page)))


# --- options and sitemap ----------------------------------------------------------------


def _check_options(concurrency: int, timeout: float, retries: int, backoff: float,
                   limit: int | None, max_pages: int | None = None,
                   max_seconds: float | None = None) -> None:
    """Reject nonsense early, with the option's name, rather than failing deep in a thread."""
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    if timeout <= 0:
        raise ValueError(f"timeout must be > 0, got {timeout}")
    if retries < 0 or backoff < 0:
        raise ValueError(f"retries and backoff must be >= 0, got {retries} and {backoff}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    if max_pages is not None and max_pages < 1:
        raise ValueError(f"max_pages must be >= 1, got {max_pages}")
    if max_seconds is not None and max_seconds <= 0:
        raise ValueError(f"max_seconds must be > 0, got {max_seconds}")


def _collect_urls(run: _Run, start_url: str, limit: int | None) -> dict[str, str]:
    """Article URL -> lastmod, from the sitemap and its nested sitemaps, in sitemap order,
    capped at limit."""
    try:
        _, entry = run.get(start_url, "")
    except _Disallowed:
        raise SourceError(f"robots.txt forbids {run.fetcher.user_agent!r} to fetch the "
                          f"sitemap {start_url}") from None
    except _RobotsUnknown as exc:
        raise SourceError(f"Cannot fetch the sitemap {start_url}: the rules of {exc} are "
                          "unknown") from exc
    except _FAILURES as exc:
        raise SourceError(f"Cannot fetch the sitemap {start_url}: {_describe(exc)}") from exc
    try:
        urls, nested = sitemap_entries(entry.body, entry.url)
    except SourceError as exc:
        raise SourceError(f"Cannot read the sitemap {start_url}: {exc}") from exc
    seen = {start_url, entry.url}
    for url, lastmod in _follow_nested(run, nested, seen, 1, _left(limit, urls)).items():
        urls.setdefault(url, lastmod)
    return urls if limit is None else dict(list(urls.items())[:limit])


def _left(limit: int | None, urls: dict) -> int | None:
    """How many more URLs are wanted (None: no limit)."""
    return None if limit is None else max(limit - len(urls), 0)


def _follow_nested(run: _Run, sitemaps: dict[str, str], seen: set[str], depth: int,
                   limit: int | None) -> dict[str, str]:
    """Article URLs of nested sitemaps, depth-first. A nested sitemap whose ``<lastmod>`` is
    unchanged is read from the cache. One that is gone or broken is only a warning (its
    articles leave the index); one that fails transiently is read from its cached copy, and
    without one the crawl stops: its articles must not be taken for removed."""
    urls: dict[str, str] = {}
    for sitemap, lastmod in sitemaps.items():
        if sitemap in seen or _left(limit, urls) == 0:
            continue  # cycles between sitemaps, or enough URLs already
        if depth > MAX_SITEMAP_DEPTH:
            log.warning("Not following %s: sitemaps nested deeper than %d.", sitemap, depth - 1)
            continue
        seen.add(sitemap)
        try:
            _, entry = run.get(sitemap, lastmod)
        except _Disallowed:
            log.warning("Skipping nested sitemap %s: disallowed by robots.txt.", sitemap)
            continue
        except _FAILURES as exc:
            entry = run.cache.get(sitemap, sitemap=True)
            if _gone(exc) or (entry is None and not _transient(exc)):
                log.warning("Skipping nested sitemap %s: %s", sitemap, _describe(exc))
                continue
            if entry is None:
                raise SourceError(f"Cannot fetch the nested sitemap {sitemap}: {_describe(exc)} "
                                  "(and no cached copy: not updating, so that its articles "
                                  "are not taken for removed)") from exc
            log.warning("Nested sitemap %s failed (%s): using its cached copy.", sitemap,
                        _describe(exc))
        try:
            found, deeper = sitemap_entries(entry.body, entry.url)
        except SourceError as exc:
            log.warning("Skipping nested sitemap %s: %s", sitemap, exc)
            continue
        for url, mod in found.items():
            urls.setdefault(url, mod)
        for url, mod in _follow_nested(run, deeper, seen, depth + 1, _left(limit, urls)).items():
            urls.setdefault(url, mod)
    return urls


def _parse_xml(body: bytes) -> ET.Element | None:
    """The root of an XML sitemap, or None when the body is something else (HTML)."""
    if body[:2] == b"\x1f\x8b":  # sitemap.xml.gz served as is
        try:
            body = gzip.decompress(body)
        except (OSError, EOFError) as exc:
            raise SourceError(f"Corrupt gzipped sitemap: {exc}") from exc
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        if re.search(rb"<(\w+:)?(urlset|sitemapindex)[\s>]", body[:2048]):
            raise SourceError(f"Malformed XML sitemap: {exc}") from exc
        return None  # not XML at all: an HTML page
    return root if _local(root.tag) in ("urlset", "sitemapindex") else None


def _local(tag: str) -> str:
    """Tag name without its XML namespace."""
    return tag.rsplit("}", 1)[-1]


def _xml_entries(root: ET.Element, entry: str) -> list[tuple[str, str]]:
    """``(loc, lastmod)`` of each <url>/<sitemap> entry; image or video <loc>s deeper down are
    ignored."""
    entries = []
    for item in root:
        if _local(item.tag) != entry:
            continue
        children = {_local(c.tag): (c.text or "").strip() for c in reversed(item)}
        if children.get("loc"):
            entries.append((children["loc"], children.get("lastmod", "")))
    return entries


def _html_links(html: str, base_url: str) -> list[str]:
    """Absolute targets of every <a href> of an HTML page."""
    parser = _LinkParser()
    _feed(parser, html)
    return [urljoin(base_url, href.strip()) for href in parser.hrefs if href.strip()]


def _filter_urls(urls: list[str], page_url: str | None) -> list[str]:
    """Keep likely article URLs, without fragments or duplicates. With page_url (an HTML
    plan du site), also keep only links on its host and drop the page itself."""
    kept = []
    for url in urls:
        url = urldefrag(url)[0]
        if not _looks_like_article(url):
            continue
        if page_url is not None and (not _same_host(url, page_url) or _same_page(url, page_url)):
            continue
        kept.append(url)
    return _dedupe(kept)


def _looks_like_article(url: str) -> bool:
    """An http(s) page that is not an asset, the home page or an archive listing."""
    parts = urlparse(url)
    path = parts.path.lower()
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return False  # mailto:, tel:, javascript:, relative junk
    if path in ("", "/") or path.endswith(_ASSET_EXTENSIONS):
        return False
    return not any(part in path + "/" for part in _ARCHIVE_PARTS)


def _same_host(url: str, other: str) -> bool:
    """Same host and port; "www." is ignored because blogs serve both."""
    def host(u: str) -> str:
        netloc = urlparse(u).netloc.lower()
        return netloc[4:] if netloc.startswith("www.") else netloc
    return host(url) == host(other)


def _same_page(url: str, other: str) -> bool:
    """Equal up to fragment and trailing slash."""
    return urldefrag(url)[0].rstrip("/") == urldefrag(other)[0].rstrip("/")


def _dedupe(urls) -> list[str]:
    """Drop repeated URLs, keeping the first occurrence (sitemap order matters)."""
    return list(dict.fromkeys(urls))


# --- fetching ---------------------------------------------------------------------------


class _Response(NamedTuple):
    body: bytes
    url: str  # final URL, after redirects
    content_type: str
    status: int = 200
    etag: str = ""
    last_modified: str = ""


@dataclass
class _Fetcher:
    """HTTP GET with timeout, retries, exponential backoff and a per-host pace (robots.txt
    Crawl-delay): requests to a paced host start at least ``delay`` seconds apart, whatever
    the concurrency."""

    timeout: float
    retries: int
    backoff: float
    user_agent: str
    # Built per crawl so proxy settings are read at crawl time, not at import time.
    opener: urllib.request.OpenerDirector = field(default_factory=urllib.request.build_opener)
    delays: dict[str, float] = field(default_factory=dict)  # host -> seconds between requests
    _next: dict[str, float] = field(default_factory=dict)
    _pace_lock: threading.Lock = field(default_factory=threading.Lock)

    def fetch(self, url: str, headers: dict[str, str] | None = None) -> _Response:
        """GET url, retrying transient failures; raises the last error once retries are spent.
        A ``304`` (answer to conditional ``headers``) is returned, not raised."""
        for attempt in range(self.retries + 1):
            try:
                return self._get(url, headers or {})
            except urllib.error.HTTPError as exc:
                exc.close()
                if not _retryable(exc.code) or attempt == self.retries:
                    raise
                delay = _retry_delay(attempt, self.backoff, exc.headers.get("Retry-After"))
                error = exc
            except (OSError, http.client.HTTPException) as exc:
                # URLError (refused, DNS), TimeoutError, reset connections, truncated bodies.
                if attempt == self.retries:
                    raise
                delay, error = _retry_delay(attempt, self.backoff, None), exc
            log.info("Retrying %s in %.2fs (%s).", url, delay, _describe(error))
            time.sleep(delay)
        raise AssertionError("unreachable")  # the loop always returns or raises

    def _get(self, url: str, headers: dict[str, str]) -> _Response:
        request = urllib.request.Request(_iri_to_uri(url), headers={
            "User-Agent": self.user_agent,
            "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
            **headers,
        })
        self._pace(url)
        try:
            response = self.opener.open(request, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            if exc.code != 304:
                raise
            exc.close()
            return _Response(b"", exc.geturl() or url, "", 304)
        with response:
            body = response.read(MAX_BODY_BYTES + 1)
            if len(body) > MAX_BODY_BYTES:
                raise ValueError(f"response larger than {MAX_BODY_BYTES} bytes")
            get = response.headers.get
            return _Response(body, response.geturl(), get("Content-Type", ""), response.status,
                             get("ETag", ""), get("Last-Modified", ""))

    def _pace(self, url: str) -> None:
        """Wait for this host's next request slot (no wait for hosts without a delay)."""
        host = urlparse(url).netloc.lower()
        delay = self.delays.get(host)
        if not delay:
            return
        with self._pace_lock:
            now = time.monotonic()
            start = max(now, self._next.get(host, now))
            self._next[host] = start + delay
        time.sleep(start - now)


def _iri_to_uri(url: str) -> str:
    """Percent-encode non-ASCII characters (accented French slugs): http.client sends ASCII."""
    return quote(url, safe="/:?#[]@!$&'()*+,;=%~")


def _retryable(status: int) -> bool:
    """Rate limiting and server errors may pass; other 4xx will not."""
    return status == 429 or status >= 500


def _gone(exc: BaseException) -> bool:
    """The server says the page is no more (it leaves the index)."""
    return isinstance(exc, urllib.error.HTTPError) and exc.code in _GONE


def _transient(exc: BaseException) -> bool:
    """A failure that may pass: network errors, timeouts, 429 and 5xx (after retries)."""
    if isinstance(exc, urllib.error.HTTPError):
        return _retryable(exc.code)
    return isinstance(exc, (OSError, http.client.HTTPException))


def _retry_delay(attempt: int, backoff: float, retry_after: str | None) -> float:
    """Exponential backoff, stretched to a numeric Retry-After (capped: a server asking for
    an hour should not hang the crawl)."""
    delay = backoff * 2 ** attempt
    try:
        asked = float(retry_after) if retry_after is not None else 0.0
    except ValueError:
        asked = 0.0  # an HTTP-date: rare, fall back to our own backoff
    if asked != asked or asked < 0:  # NaN or negative
        asked = 0.0
    return max(delay, min(asked, MAX_RETRY_AFTER))


def _describe(exc: BaseException) -> str:
    """A one-line reason for logs and errors."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return f"{exc.reason}"
    return str(exc) or type(exc).__name__


def _decode(body: bytes, content_type: str | None) -> str:
    """Text of a page: charset from the header, else from a <meta>, else UTF-8."""
    match = re.search(r"charset=[\"']?([\w.:-]+)", content_type or "", re.I)
    match = match or re.search(rb"<meta[^>]+charset=[\"']?([\w.:-]+)", body[:4096], re.I)
    charset = match.group(1) if match else "utf-8"
    charset = charset.decode("ascii") if isinstance(charset, bytes) else charset
    try:
        return body.decode(charset, errors="replace")
    except LookupError:  # unknown charset name
        return body.decode("utf-8", errors="replace")


class _Robots:
    """robots.txt rules per host, fetched once per crawl. A missing robots.txt (any 4xx)
    allows everything; one that cannot be fetched (network, 5xx) stops the crawl, since the
    rules are unknown (RFC 9309 says to assume a full disallow, which would look like every
    article leaving the site). A Crawl-delay paces the fetcher."""

    def __init__(self, fetcher: _Fetcher) -> None:
        self.fetcher = fetcher
        self.agent = fetcher.user_agent.split("/")[0]
        self.rules: dict[str, urllib.robotparser.RobotFileParser | _RobotsUnknown | None] = {}
        self.lock = threading.Lock()

    def allows(self, url: str) -> bool:
        rules = self._rules(url)
        return rules is None or rules.can_fetch(self.agent, url)

    def _rules(self, url: str) -> urllib.robotparser.RobotFileParser | None:
        parts = urlparse(url)
        host = parts.netloc.lower()
        with self.lock:  # one fetch per host and crawl, even with concurrent pages
            if host not in self.rules:
                try:
                    self.rules[host] = self._load(f"{parts.scheme}://{parts.netloc}/robots.txt",
                                                  host)
                except _RobotsUnknown as exc:
                    self.rules[host] = exc
            found = self.rules[host]
        if isinstance(found, _RobotsUnknown):
            raise found
        return found

    def _load(self, robots_url: str, host: str) -> urllib.robotparser.RobotFileParser | None:
        try:
            response = self.fetcher.fetch(robots_url)
        except urllib.error.HTTPError as exc:
            if 400 <= exc.code < 500:
                return None
            raise _RobotsUnknown(f"{robots_url}: {_describe(exc)}") from exc
        except _FAILURES as exc:
            raise _RobotsUnknown(f"{robots_url}: {_describe(exc)}") from exc
        rules = urllib.robotparser.RobotFileParser(robots_url)
        rules.parse(_decode(response.body, response.content_type).splitlines())
        rules.modified()  # parse() alone leaves it "never read", and crawl_delay() then says None
        # (robotparser reads whole seconds only: "Crawl-delay: 0.5" is ignored.)
        delay = rules.crawl_delay(self.agent)
        if delay:
            self.fetcher.delays[host] = float(delay)
        return rules


# --- cache ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Entry:
    """One cached response: its body, final URL and the validators to revalidate it with."""

    body: bytes
    url: str
    content_type: str = ""
    etag: str = ""
    last_modified: str = ""
    lastmod: str = ""  # the sitemap's <lastmod> when it was fetched
    fetched: float = 0.0  # time.time() of the last fetch or revalidation

    def validators(self) -> dict[str, str]:
        headers = {}
        if self.etag:
            headers["If-None-Match"] = self.etag
        if self.last_modified:
            headers["If-Modified-Since"] = self.last_modified
        return headers


class _Cache:
    """Responses on disk, one file per URL: a first line of JSON (final URL, validators,
    lastmod, fetch time) then the body as received. Files are written atomically (temp file +
    os.replace), so a killed crawl never leaves half a file.

    A crawl session (``crawl-session.json``) says when the current crawl began and whether it
    finished: a crawl that did not finish (killed, interrupted, out of budget) is resumed by
    the next one, which takes the pages fetched since the session began without asking the
    server again. Without a directory, nothing is cached."""

    def __init__(self, root: Path | None) -> None:
        self.root = root
        self.used: set[str] = set()
        self.lock = threading.Lock()
        if root is not None:
            root.mkdir(parents=True, exist_ok=True)

    def path(self, url: str, sitemap: bool = False) -> Path:
        name = hashlib.sha1(url.encode("utf-8")).hexdigest()
        return self.root / f"{name}{'.sitemap' if sitemap else '.html'}"

    def get(self, url: str, sitemap: bool = False) -> _Entry | None:
        """The cached response for url, or None (not cached, unreadable, an older format)."""
        if self.root is None:
            return None
        path = self.path(url, sitemap)
        with self.lock:
            self.used.add(path.name)
        try:
            head, _, body = path.read_bytes().partition(b"\n")
            if not head.startswith(_CACHE_MARK):
                return None
            fields = json.loads(head[len(_CACHE_MARK):-len(b" -->")])
            return _Entry(body=body, **fields)
        except (OSError, ValueError, TypeError):
            return None

    def put(self, url: str, entry: _Entry, sitemap: bool = False) -> None:
        if self.root is None:
            return
        fields = {k: v for k, v in entry.__dict__.items() if k != "body"}
        head = _CACHE_MARK + json.dumps(fields, ensure_ascii=True).replace(
            "-->", "--\\u003e").encode("ascii") + b" -->\n"
        fd, tmp = tempfile.mkstemp(dir=self.root, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(head + entry.body)
            os.replace(tmp, self.path(url, sitemap))
        except OSError as exc:
            log.warning("Could not cache %s: %s", url, exc)
            Path(tmp).unlink(missing_ok=True)

    def drop(self, url: str) -> None:
        if self.root is not None:
            self.path(url).unlink(missing_ok=True)

    def begin(self, start_url: str) -> float:
        """Start a crawl session, or resume the unfinished one of the same sitemap; returns
        when it began (pages fetched since then are fresh for this crawl)."""
        if self.root is None:
            return time.time()
        session = self._session()
        if session.get("start_url") == start_url and not session.get("finished"):
            log.info("Resuming the crawl of %s begun at %s.", start_url,
                     time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(session["started"])))
            return float(session["started"])
        started = time.time()
        self._write_session({"start_url": start_url, "started": started, "finished": None})
        return started

    def finish(self, prune: bool) -> None:
        """Mark the session finished (the next crawl revalidates everything); with ``prune``,
        delete the files of URLs this crawl did not list any more."""
        if self.root is None:
            return
        session = self._session()
        self._write_session({**session, "finished": time.time()})
        if prune:
            for path in [*self.root.glob("*.html"), *self.root.glob("*.sitemap")]:
                if path.name not in self.used:
                    path.unlink(missing_ok=True)

    def _session(self) -> dict:
        try:
            session = json.loads((self.root / _SESSION_FILE).read_text(encoding="utf-8"))
            return session if isinstance(session, dict) and "started" in session else {}
        except (OSError, ValueError):
            return {}

    def _write_session(self, session: dict) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.root, suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(session, out)
        os.replace(tmp, self.root / _SESSION_FILE)


# --- one crawl ---------------------------------------------------------------------------


class _Budget:
    """The page requests and the time a crawl may still spend (None: unbounded)."""

    def __init__(self, pages: int | None, deadline: float | None) -> None:
        self.pages, self.deadline = pages, deadline
        self.lock = threading.Lock()

    def take(self) -> bool:
        """Claim one page request; False once the pages or the time are spent."""
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return False
        with self.lock:
            if self.pages is None:
                return True
            if self.pages <= 0:
                return False
            self.pages -= 1
            return True


class _RobotsUnknown(SourceError):
    """robots.txt cannot be fetched: the crawl stops (see _Robots)."""


class _Deferred(Exception):
    """The crawl's budget is spent: the page is left for the next crawl."""


class _Disallowed(Exception):
    """robots.txt forbids this page to our User-Agent."""


@dataclass
class _Run:
    fetcher: _Fetcher
    cache: _Cache
    session: float  # pages fetched since this time.time() are fresh for this crawl
    robots: _Robots | None
    budget: _Budget

    def get(self, url: str, lastmod: str, page: bool = False) -> tuple[str, _Entry]:
        """``(outcome, response)`` for url: "unchanged" (cached copy, no request: the sitemap's
        lastmod is the cached one and was checked less than LASTMOD_TRUST_SECONDS ago, or it
        was fetched during this crawl), "not_modified"
        (conditional request answered 304) or "fetched". Raises the fetch error, _Disallowed,
        or _Deferred (page requests only) when the budget is spent."""
        if self.robots is not None and not self.robots.allows(url):
            raise _Disallowed(url)
        cached = self.cache.get(url, sitemap=not page)
        if cached is not None and (cached.fetched >= self.session or (
                lastmod and cached.lastmod == lastmod
                and time.time() - cached.fetched < LASTMOD_TRUST_SECONDS)):
            return "unchanged", cached
        if page and not self.budget.take():
            raise _Deferred(url)
        response = self.fetcher.fetch(url, cached.validators() if cached else None)
        if response.status == 304:
            if cached is None:
                raise ValueError("HTTP 304 to a request without validators")
            entry = replace(cached, lastmod=lastmod or cached.lastmod, fetched=time.time())
            outcome = "not_modified"
        else:
            entry = _Entry(response.body, response.url, response.content_type, response.etag,
                           response.last_modified, lastmod, time.time())
            outcome = "fetched"
        if not page or _is_html(entry.content_type):  # a PDF is not worth keeping
            self.cache.put(url, entry, sitemap=not page)
        return outcome, entry


def _is_html(content_type: str) -> bool:
    return not content_type or "html" in content_type.lower()


@dataclass(frozen=True)
class _Visit:
    outcome: str
    article: Article | None = None
    known_id: str = ""  # the article id this URL had (for pages kept in the index)
    reason: str = ""


def _visit_all(run: _Run, listing: dict[str, str], concurrency: int,
               progress: bool) -> list[tuple[str, _Visit]]:
    """Visit every URL with a bounded pool; results keep the order of the listing."""
    urls = list(listing)
    results: list[_Visit | None] = [None] * len(urls)
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="crawler")
    try:
        futures = {pool.submit(_visit, run, url, listing[url]): i for i, url in enumerate(urls)}
        bar = tqdm(as_completed(futures), total=len(futures), desc="Crawling", unit="page",
                   disable=not progress)
        for future in bar:
            results[futures[future]] = future.result()
    finally:
        # On Ctrl-C or a bug, do not keep crawling the queue before the error surfaces.
        pool.shutdown(wait=True, cancel_futures=True)
    return list(zip(urls, results))


def _visit(run: _Run, url: str, lastmod: str) -> _Visit:
    """What one listed page gives; failures are logged and classified, never raised."""
    cached = run.cache.get(url)
    known_id = stable_id(cached.url if cached else url)
    try:
        outcome, entry = run.get(url, lastmod, page=True)
    except _Disallowed:
        log.warning("Skipping %s: disallowed by robots.txt.", url)
        run.cache.drop(url)
        return _Visit("disallowed")
    except _Deferred:
        return _Visit("deferred", known_id=known_id, reason="crawl budget spent")
    except _RobotsUnknown as exc:
        log.warning("Skipping %s: cannot read %s (its indexed version is kept).", url, exc)
        return _Visit("failed", known_id=known_id, reason=f"robots.txt unknown: {exc}")
    except _FAILURES as exc:
        if _gone(exc):
            log.warning("Skipping %s: %s (removed).", url, _describe(exc))
            run.cache.drop(url)
            return _Visit("gone")
        log.warning("Skipping %s: %s (its indexed version is kept).", url, _describe(exc))
        return _Visit("failed", known_id=known_id, reason=_describe(exc))
    if not _is_html(entry.content_type):
        log.warning("Skipping %s: not an HTML page (%s).", url, entry.content_type)
        return _Visit("skipped")
    article = extract_article(_decode(entry.body, entry.content_type), entry.url)
    return _Visit(outcome, article) if article is not None else _Visit("skipped")


def _result(visits: list[tuple[str, _Visit]], cache: _Cache) -> CrawlResult:
    """Gather the visits: articles (a page reached by two URLs is kept once), the ids to keep
    and the counts."""
    articles: dict[str, Article] = {}
    keep: set[str] = set()
    pages = Counter({outcome: 0 for outcome in OUTCOMES})
    failures = []
    for url, visit in visits:
        pages[visit.outcome] += 1
        if visit.known_id:
            keep.add(visit.known_id)
            failures.append(f"{url}: {visit.reason}")
        article = visit.article
        if article is not None and article.article_id not in articles:
            articles[article.article_id] = article
        elif article is not None:
            log.info("Skipping %s: already crawled under another URL.", article.url)
    return CrawlResult(list(articles.values()), frozenset(keep - set(articles)), dict(pages),
                       tuple(failures), complete=pages["deferred"] == 0)



# --- HTML parsing -----------------------------------------------------------------------


def _feed(parser: HTMLParser, html: str) -> None:
    """Feed a parser, tolerating the AssertionError html.parser raises on broken declarations."""
    try:
        parser.feed(html.replace("\x00", ""))
        parser.close()
    except AssertionError as exc:  # keep what was parsed before the broken markup
        log.debug("HTML parser stopped early: %s", exc)


class _LinkParser(HTMLParser):
    """Collects every <a href>."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        href = dict(attrs).get("href")
        if tag == "a" and href:
            self.hrefs.append(href)


@dataclass
class _Region:
    """Text and taxonomy links inside one candidate content element (article, main, ...)."""

    key: str
    tag: str = ""
    depth: int = 0
    state: str = "pending"  # pending -> open -> done
    parts: list[str] = field(default_factory=list)
    category_links: list[str] = field(default_factory=list)
    tag_links: list[str] = field(default_factory=list)

    def matches(self, tag: str, attrs: dict) -> bool:
        if self.key in ("article", "main"):
            return tag == self.key
        return bool(re.search(r"entry-content|post-content", attrs.get("class") or ""))


class _PageParser(HTMLParser):
    """One pass over an article page: metas, title candidates, taxonomy links and the text of
    each candidate content region (the best non-empty one is chosen at the end)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.meta: dict[str, list[str]] = {}
        self.h1 = self.title = ""
        self.rel_categories: list[str] = []
        self.rel_tags: list[str] = []
        # <body> is open from the start: pages without a <body> tag still have text.
        self.regions = [_Region(k) for k in ("article", "main", "entry")]
        self.regions.append(_Region("body", state="open"))
        self._dropped: Counter[str] = Counter()
        self._capture: dict[str, list[str]] = {}  # "title", "h1", "a" -> text being read
        self._link: dict[str, str] = {}

    @classmethod
    def run(cls, html: str) -> _PageParser:
        parser = cls()
        _feed(parser, html)
        return parser

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attributes = {k: (v or "") for k, v in attrs}
        self._open_regions(tag, attributes)
        if tag in _DROPPED:
            self._dropped[tag] += 1
        if tag in _BLOCKS:
            self._write(_BREAK)
        if tag == "meta":
            self._meta(attributes)
        elif tag in ("title", "h1", "a"):
            self._start_capture(tag, attributes)

    def handle_endtag(self, tag: str) -> None:
        if tag in _DROPPED and self._dropped[tag] > 0:
            self._dropped[tag] -= 1
        if tag in _BLOCKS:
            self._write(_BREAK)
        if tag in self._capture:
            self._end_capture(tag)
        for region in self.regions:
            if region.state == "open" and tag == region.tag:
                region.depth -= 1
                region.state = "done" if region.depth == 0 else "open"

    def handle_data(self, data: str) -> None:
        for parts in self._capture.values():
            parts.append(data)
        self._write(data)

    def _open_regions(self, tag: str, attributes: dict) -> None:
        """Enter a candidate region on its first (visible) occurrence; track nesting depth."""
        visible = not self._hidden()
        for region in self.regions:
            if region.state == "open" and tag == region.tag:
                region.depth += 1
            elif region.state == "pending" and visible and region.matches(tag, attributes):
                region.state, region.tag, region.depth = "open", tag, 1

    def _write(self, data: str) -> None:
        if any(self._dropped.values()):
            return
        for region in self.regions:
            if region.state == "open":
                region.parts.append(data)

    def _hidden(self) -> bool:
        """Inside navigation or a sidebar: links and articles there are not this page's."""
        return any(self._dropped[t] for t in ("nav", "aside", "script", "template", "noscript"))

    def _meta(self, attributes: dict) -> None:
        name = (attributes.get("property") or attributes.get("name") or "").lower()
        content = attributes.get("content", "").strip()
        if name and content:
            self.meta.setdefault(name, []).append(content)

    def _start_capture(self, tag: str, attributes: dict) -> None:
        if tag == "a":
            self._link = attributes
        if not (tag == "h1" and self.h1):
            self._capture[tag] = []

    def _end_capture(self, tag: str) -> None:
        text = " ".join("".join(self._capture.pop(tag)).split())
        if tag == "title" and not self.title:
            self.title = text
        elif tag == "h1" and not self.h1 and not self._hidden():
            self.h1 = text
        elif tag == "a" and text and not self._hidden():
            self._taxonomy_link(text)

    def _taxonomy_link(self, text: str) -> None:
        """File a category/tag link: rel-marked ones anywhere, path-based ones per region."""
        rel = self._link.get("rel", "").lower().split()
        path = urlparse(self._link.get("href", "")).path.lower()
        if "category" in rel:
            self.rel_categories.append(text)
        elif "tag" in rel:
            self.rel_tags.append(text)
        for region in self.regions:
            if region.state == "open":
                if "/category/" in path:
                    region.category_links.append(text)
                elif "/tag/" in path:
                    region.tag_links.append(text)

    def region(self) -> _Region:
        """The main content: article, else main, else .entry-content, else body."""
        for region in self.regions:
            if _join_blocks(region.parts):
                return region
        return self.regions[-1]

    def text(self) -> str:
        return _join_blocks(self.region().parts)


def _join_blocks(parts: list[str]) -> str:
    """Blocks separated by blank lines, whitespace inside each block collapsed."""
    blocks = (" ".join(b.split()) for b in "".join(parts).split(_BREAK))
    return "\n\n".join(b for b in blocks if b)


def _title(page: _PageParser) -> str:
    """og:title, else the first <h1>, else <title> without its " - Site" suffix."""
    site = (page.meta.get("og:site_name") or [""])[0]
    for candidate, strip_any_suffix in (((page.meta.get("og:title") or [""])[0], False),
                                        (page.h1, False), (page.title, True)):
        title = _strip_site(" ".join(candidate.split()), site, strip_any_suffix)
        if title:
            return title
    return ""


def _strip_site(title: str, site: str, strip_any_suffix: bool) -> str:
    """Drop a trailing " - Site name" / " | Site name"."""
    if site and re.search(rf"\s[-|–—:]\s*{re.escape(site)}$", title, re.I):
        return re.sub(rf"\s*[-|–—:]\s*{re.escape(site)}$", "", title, flags=re.I).strip()
    if strip_any_suffix:
        return re.sub(r"\s+[-|–—]\s+[^-|–—]+$", "", title).strip()
    return title


def _category(page: _PageParser) -> str:
    """article:section, else a rel category link, else a /category/ link in the content."""
    candidates = (page.meta.get("article:section", []) + page.rel_categories
                  + page.region().category_links)
    if not candidates:
        return ""
    text = " ".join(candidates[0].split())
    known = {c.casefold(): c for c in CATEGORIES}
    return known.get(text.casefold(), text.upper())


def _tags(page: _PageParser) -> list[str]:
    """article:tag metas, else rel=tag links, else /tag/ links in the content; deduplicated."""
    tags = page.meta.get("article:tag") or page.rel_tags or page.region().tag_links
    return _dedupe(" ".join(t.split()) for t in tags if t.strip())
