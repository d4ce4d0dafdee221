"""Crawl a blog's sitemap into Articles: bounded concurrency, retries with backoff, and an
on-disk cache so an interrupted crawl resumes. Standard library only, plus tqdm."""

from __future__ import annotations

import gzip
import hashlib
import http.client
import logging
import os
import re
import tempfile
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
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
_CACHE_HEADER = "<!-- arsonor-crawler url: {} -->\n"


# --- public API -------------------------------------------------------------------------


def crawl(start_url: str, *, cache_dir: str | Path | None = None, concurrency: int = 4,
          timeout: float = 10.0, retries: int = 3, backoff: float = 0.5,
          user_agent: str = "ArsonorAssistant/1.0 (+indexing)", limit: int | None = None,
          progress: bool = True) -> list[Article]:
    """Fetch the sitemap (XML or HTML plan du site) at start_url and return its articles,
    in sitemap order. Raises SourceError if the sitemap is unusable or yields no article."""
    _check_options(concurrency, timeout, retries, backoff, limit)
    fetcher = _Fetcher(timeout, retries, backoff, user_agent)
    urls = _collect_urls(fetcher, start_url, limit)
    if not urls:
        raise SourceError(f"No article URL found in {start_url} (expected an XML sitemap "
                          "or an HTML page linking to the articles).")
    cache = Path(cache_dir) if cache_dir is not None else None
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    articles = _fetch_all(fetcher, urls, cache, concurrency, progress)
    if not articles:
        raise SourceError(f"None of the {len(urls)} pages listed in {start_url} gave an "
                          "article (all failed or had no title/text); see the warnings.")
    return articles


def parse_sitemap(body: bytes, base_url: str) -> tuple[list[str], list[str]]:
    """Return (article urls, nested sitemap urls) from an XML sitemap or an HTML page.
    The format is detected from the content, not from the URL."""
    root = _parse_xml(body)
    if root is None:
        return _filter_urls(_html_links(_decode(body, None), base_url), base_url), []
    locs = _xml_locs(root, "sitemap" if _local(root.tag) == "sitemapindex" else "url")
    locs = [urljoin(base_url, loc) for loc in locs]
    if _local(root.tag) == "sitemapindex":
        return [], _dedupe(urldefrag(u)[0] for u in locs)
    return _filter_urls(locs, None), []


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
                   limit: int | None) -> None:
    """Reject nonsense early, with the option's name, rather than failing deep in a thread."""
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    if timeout <= 0:
        raise ValueError(f"timeout must be > 0, got {timeout}")
    if retries < 0 or backoff < 0:
        raise ValueError(f"retries and backoff must be >= 0, got {retries} and {backoff}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")


def _collect_urls(fetcher: _Fetcher, start_url: str, limit: int | None) -> list[str]:
    """Article URLs of the sitemap and its nested sitemaps, deduplicated, capped at limit."""
    try:
        response = fetcher.fetch(start_url)
    except _FAILURES as exc:
        raise SourceError(f"Cannot fetch the sitemap {start_url}: {_describe(exc)}") from exc
    final_url = response.url
    try:
        urls, nested = parse_sitemap(response.body, final_url)
    except SourceError as exc:
        raise SourceError(f"Cannot read the sitemap {start_url}: {exc}") from exc
    urls += _follow_nested(fetcher, nested, {start_url, final_url}, 1, _left(limit, urls))
    urls = _dedupe(urls)
    return urls if limit is None else urls[:limit]


def _left(limit: int | None, urls: list[str]) -> int | None:
    """How many more URLs are wanted (None: no limit)."""
    return None if limit is None else max(limit - len(urls), 0)


def _follow_nested(fetcher: _Fetcher, sitemaps: list[str], seen: set[str], depth: int,
                   limit: int | None) -> list[str]:
    """Article URLs of nested sitemaps, depth-first; a broken nested sitemap is only a warning."""
    urls: list[str] = []
    for sitemap in sitemaps:
        if sitemap in seen or _left(limit, urls) == 0:
            continue  # cycles between sitemaps, or enough URLs already
        if depth > MAX_SITEMAP_DEPTH:
            log.warning("Not following %s: sitemaps nested deeper than %d.", sitemap, depth - 1)
            continue
        seen.add(sitemap)
        try:
            response = fetcher.fetch(sitemap)
            found, deeper = parse_sitemap(response.body, response.url)
        except (*_FAILURES, SourceError) as exc:
            log.warning("Skipping nested sitemap %s: %s", sitemap, _describe(exc))
            continue
        urls += found
        urls += _follow_nested(fetcher, deeper, seen, depth + 1, _left(limit, urls))
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


def _xml_locs(root: ET.Element, entry: str) -> list[str]:
    """The <loc> of each <url>/<sitemap> entry; image or video <loc>s deeper down are ignored."""
    locs = []
    for item in root:
        if _local(item.tag) != entry:
            continue
        loc = next((c for c in item if _local(c.tag) == "loc"), None)
        if loc is not None and (loc.text or "").strip():
            locs.append(loc.text.strip())
    return locs


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


@dataclass
class _Fetcher:
    """HTTP GET with timeout, retries and exponential backoff."""

    timeout: float
    retries: int
    backoff: float
    user_agent: str
    # Built per crawl so proxy settings are read at crawl time, not at import time.
    opener: urllib.request.OpenerDirector = field(default_factory=urllib.request.build_opener)

    def fetch(self, url: str) -> _Response:
        """GET url, retrying transient failures; raises the last error once retries are spent."""
        for attempt in range(self.retries + 1):
            try:
                return self._get(url)
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

    def _get(self, url: str) -> _Response:
        request = urllib.request.Request(_iri_to_uri(url), headers={
            "User-Agent": self.user_agent,
            "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        })
        with self.opener.open(request, timeout=self.timeout) as response:
            body = response.read(MAX_BODY_BYTES + 1)
            if len(body) > MAX_BODY_BYTES:
                raise ValueError(f"response larger than {MAX_BODY_BYTES} bytes")
            return _Response(body, response.geturl(), response.headers.get("Content-Type", ""))


def _iri_to_uri(url: str) -> str:
    """Percent-encode non-ASCII characters (accented French slugs): http.client sends ASCII."""
    return quote(url, safe="/:?#[]@!$&'()*+,;=%~")


def _retryable(status: int) -> bool:
    """Rate limiting and server errors may pass; other 4xx will not."""
    return status == 429 or status >= 500


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


# --- articles and cache -----------------------------------------------------------------


def _fetch_all(fetcher: _Fetcher, urls: list[str], cache: Path | None, concurrency: int,
               progress: bool) -> list[Article]:
    """Fetch and extract every URL with a bounded pool; results keep the order of urls."""
    results: list[Article | None] = [None] * len(urls)
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="crawler")
    try:
        futures = {pool.submit(_article, fetcher, url, cache): i for i, url in enumerate(urls)}
        bar = tqdm(as_completed(futures), total=len(futures), desc="Crawling", unit="page",
                   disable=not progress)
        for future in bar:
            results[futures[future]] = future.result()
    finally:
        # On Ctrl-C or a bug, do not keep crawling the queue before the error surfaces.
        pool.shutdown(wait=True, cancel_futures=True)
    return _unique_articles(results)


def _unique_articles(results: list[Article | None]) -> list[Article]:
    """Drop failures, and repeats of one page reached by two URLs (redirects, old slugs)."""
    articles: dict[str, Article] = {}
    for article in results:
        if article is not None and article.article_id not in articles:
            articles[article.article_id] = article
        elif article is not None:
            log.info("Skipping %s: already crawled under another URL.", article.url)
    return list(articles.values())


def _article(fetcher: _Fetcher, url: str, cache: Path | None) -> Article | None:
    """One article from the cache or the network; None (logged) when it cannot be had."""
    page = _read_cache(cache, url) if cache is not None else None
    if page is None:
        try:
            page = _fetch_page(fetcher, url)
        except _FAILURES as exc:
            log.warning("Skipping %s: %s", url, _describe(exc))
            return None
        if page is None:
            return None
        if cache is not None:
            _write_cache(cache, url, *page)
    html, final_url = page
    return extract_article(html, final_url)


def _fetch_page(fetcher: _Fetcher, url: str) -> tuple[str, str] | None:
    """HTML and final URL of a page; None (logged) if it is not HTML (a PDF, an image)."""
    response = fetcher.fetch(url)
    if response.content_type and "html" not in response.content_type.lower():
        log.warning("Skipping %s: not an HTML page (%s).", url, response.content_type)
        return None
    return _decode(response.body, response.content_type), response.url


def _cache_path(cache: Path, url: str) -> Path:
    return cache / f"{hashlib.sha1(url.encode('utf-8')).hexdigest()}.html"


def _read_cache(cache: Path, url: str) -> tuple[str, str] | None:
    """A cached page and its final URL, or None when not cached (or unreadable)."""
    path = _cache_path(cache, url)
    try:
        html = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    first, _, rest = html.partition("\n")
    match = re.fullmatch(r"<!-- arsonor-crawler url: (\S+) -->", first)
    return (rest, match.group(1)) if match else (html, url)


def _write_cache(cache: Path, url: str, html: str, final_url: str) -> None:
    """Store a page atomically (temp file + os.replace): a killed crawl never leaves half a
    file. The final URL rides in a first-line comment so redirects keep the same article id."""
    fd, tmp = tempfile.mkstemp(dir=cache, suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(_CACHE_HEADER.format(final_url.replace("-->", "--%3E")) + html)
        os.replace(tmp, _cache_path(cache, url))
    except OSError as exc:
        log.warning("Could not cache %s: %s", url, exc)
        Path(tmp).unlink(missing_ok=True)


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
