"""A small blog served on 127.0.0.1 for the freshness tests and benchmark: a sitemap with
``<lastmod>`` (optionally behind a sitemap index), articles answering ``ETag`` /
``Last-Modified`` and ``304``, a robots.txt, and scripted trouble (a page that fails, a page
that is gone, the whole site going dark). It counts every answer by path and status."""

from __future__ import annotations

import hashlib
import threading
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import formatdate, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_WORDS = ("compresseur seuil ratio attaque relâchement gain égaliseur fréquence filtre "
          "résonance réverbération délai panoramique micro préampli convertisseur latence "
          "monitoring enceinte acoustique absorbant diffuseur basse aigu médium synthèse "
          "oscillateur enveloppe modulation saturation limiteur mastering mixage piste bus "
          "départ retour automation tempo").split()


def article_text(n: int, version: int = 1, words: int = 120) -> str:
    """Deterministic French-looking text for article n (a new version changes its words)."""
    out, k = [], n * 7919 + version * 104729
    sentence: list[str] = []
    for i in range(words):
        k = (k * 1103515245 + 12345) % 2**31
        sentence.append(_WORDS[k % len(_WORDS)])
        if len(sentence) == 12 or i == words - 1:
            out.append(" ".join(sentence).capitalize() + ".")
            sentence = []
    return f"Article {n}, version {version}. " + " ".join(out)


def send(handler: BaseHTTPRequestHandler, status: int, body: bytes, headers: dict) -> None:
    """Write one whole answer (status, headers, Content-Length, body)."""
    handler.send_response(status)
    for name, value in headers.items():
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


@dataclass
class Page:
    title: str
    text: str
    modified: float  # time.time() of the last edit: Last-Modified, lastmod and ETag follow it
    status: int = 200  # 404/410 once gone, 503 while failing

    @property
    def etag(self) -> str:
        return '"' + hashlib.sha1(f"{self.title}\n{self.text}".encode()).hexdigest()[:16] + '"'

    def html(self) -> bytes:
        return (f"<!DOCTYPE html><html lang='fr'><head><meta charset='utf-8'>"
                f"<title>{self.title} - Arsonor</title>"
                "<meta property='article:section' content='LE HOME STUDIO'></head><body>"
                f"<nav>MENU</nav><article><h1>{self.title}</h1><p>{self.text}</p></article>"
                "</body></html>").encode("utf-8")


class LocalBlog:
    """``with LocalBlog(n) as blog:`` serves n articles at ``blog.url('/sitemap.xml')``."""

    def __init__(self, n: int = 3, *, nested: bool = False, lastmod: bool = True,
                 validators: bool = True, robots: str = "User-agent: *\nDisallow: /private/\n",
                 words: int = 120) -> None:
        self.pages = {f"/articles/a{i}/": Page(f"Article {i}", article_text(i, words=words),
                                               1_700_000_000.0 + i)
                      for i in range(1, n + 1)}
        self.listed = list(self.pages)
        self.nested, self.lastmod, self.validators, self.robots = nested, lastmod, validators, robots
        self.words = words
        self.answers: Counter[tuple[str, int]] = Counter()
        self.dark = False  # True: every request is dropped (connection closed, no answer)
        self.dark_after: int | None = None  # go dark after this many article pages answered
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None
        self.base = ""

    # -- editing the blog

    def edit(self, path: str, version: int) -> None:
        page = self.pages[path]
        n = int(path.strip("/").rsplit("a", 1)[-1])
        page.text, page.modified = article_text(n, version, self.words), page.modified + 1000 * version

    def unlist(self, path: str) -> None:
        self.listed.remove(path)

    def add(self, path: str, title: str, text: str) -> None:
        self.pages[path] = Page(title, text, 1_800_000_000.0)
        self.listed.append(path)

    def url(self, path: str) -> str:
        return self.base + path

    def article_answers(self, status: int) -> int:
        """How many times article pages were answered with ``status``."""
        return sum(n for (path, code), n in self.answers.items()
                   if code == status and path.startswith("/articles/"))

    # -- serving

    def sitemap(self, paths: list[str]) -> bytes:
        entries = []
        for path in paths:
            stamp = datetime.fromtimestamp(self.pages[path].modified, timezone.utc) \
                if path in self.pages else None
            mod = (f"<lastmod>{stamp:%Y-%m-%dT%H:%M:%S+00:00}</lastmod>"
                   if self.lastmod and path in self.pages else "")
            entries.append(f"<url><loc>{self.url(path)}</loc>{mod}</url>")
        return ('<?xml version="1.0" encoding="UTF-8"?><urlset xmlns="http://www.sitemaps.org/'
                f'schemas/sitemap/0.9">{"".join(entries)}</urlset>').encode()

    def route(self, path: str) -> tuple[int, bytes, dict]:
        if path == "/robots.txt":
            return (200, self.robots.encode(), {"Content-Type": "text/plain"}) if self.robots \
                else (404, b"", {})
        if path == "/sitemap.xml" and self.nested:
            body = ('<?xml version="1.0"?><sitemapindex xmlns="http://www.sitemaps.org/schemas/'
                    f'sitemap/0.9"><sitemap><loc>{self.url("/post-sitemap.xml")}</loc>'
                    "</sitemap></sitemapindex>").encode()
            return 200, body, {"Content-Type": "application/xml"}
        if path in ("/sitemap.xml", "/post-sitemap.xml"):
            return 200, self.sitemap(self.listed), {"Content-Type": "application/xml"}
        page = self.pages.get(path)
        if page is None:
            return 404, b"not found", {}
        headers = {"Content-Type": "text/html; charset=utf-8"}
        if self.validators:
            headers.update(ETag=page.etag, **{"Last-Modified": formatdate(page.modified,
                                                                          usegmt=True)})
        return page.status, page.html() if page.status == 200 else b"", headers

    def _not_modified(self, headers, answer_headers: dict) -> bool:
        etag = answer_headers.get("ETag")
        if etag and headers.get("If-None-Match"):
            return headers["If-None-Match"] == etag
        since, modified = headers.get("If-Modified-Since"), answer_headers.get("Last-Modified")
        if since and modified:
            try:
                return parsedate_to_datetime(modified) <= parsedate_to_datetime(since)
            except (TypeError, ValueError):
                return False
        return False

    def __enter__(self) -> LocalBlog:
        blog = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def do_GET(self) -> None:
                with blog.lock:
                    if blog.dark_after is not None and blog.article_answers(200) >= blog.dark_after:
                        blog.dark = True
                if blog.dark:
                    self.close_connection = True
                    return  # nothing sent: the client sees the connection drop
                with blog.lock:
                    status, body, headers = blog.route(self.path)
                if status == 200 and blog.validators and self._conditional(headers):
                    status, body = 304, b""
                with blog.lock:
                    blog.answers[(self.path, status)] += 1
                send(self, status, body, headers)

            def _conditional(self, headers: dict) -> bool:
                return blog._not_modified(self.headers, headers)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
