"""Crawler tests against a real local HTTP server with scripted pages and failures."""

from __future__ import annotations

import hashlib
import logging
import socket
import threading
import time
from collections import Counter, defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from assistant.documents import stable_id
from assistant.errors import SourceError
from evaluation.local_blog import send
from indexing import crawler
from indexing.crawler import crawl, extract_article, parse_sitemap

FAST = dict(backoff=0.01, progress=False, timeout=5.0)
WORDS = " ".join(f"mot{i}" for i in range(40))  # enough words to count as an article


class Site:
    """Pages served by path, with hit counters, scripted failures and delays."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, bytes, dict]] = {}
        self.hits: Counter[str] = Counter()
        self.hit_times: dict[str, list[float]] = defaultdict(list)
        self.fail_first: dict[str, tuple[int, int, dict]] = {}  # path -> (count, status, headers)
        self.delays: dict[str, float] = {}
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()
        self.stop = threading.Event()  # wakes sleeping handlers at teardown
        self.base = ""

    def url(self, path: str) -> str:
        return self.base + path

    def add(self, path: str, body: str | bytes, status: int = 200, headers: dict | None = None,
            content_type: str = "text/html; charset=utf-8") -> None:
        data = body.encode("utf-8") if isinstance(body, str) else body
        self.routes[path] = (status, data, {"Content-Type": content_type, **(headers or {})})

    def article(self, path: str, title: str, extra: str = "") -> None:
        self.add(path, f"<html><head><title>{title} - Arsonor</title></head><body>"
                       f"<article><h1>{title}</h1><p>{title} : {WORDS}</p>{extra}</article>"
                       "</body></html>")

    def sitemap(self, path: str, paths: list[str], lastmod: str = "") -> None:
        mod = f"<lastmod>{lastmod}</lastmod>" if lastmod else ""
        entries = "".join(f"<url><loc>{self.url(p)}</loc>{mod}</url>" for p in paths)
        xmlns = "http://www.sitemaps.org/schemas/sitemap/0.9"
        self.add(path, f'<?xml version="1.0"?><urlset xmlns="{xmlns}">{entries}</urlset>',
                 content_type="application/xml")

    def arrive(self, path: str) -> int:
        """Count a request as it arrives (before any delay); returns its rank for this path."""
        with self.lock:
            self.hits[path] += 1
            self.hit_times[path].append(time.monotonic())
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            return self.hits[path]

    def respond(self, path: str, rank: int) -> tuple[int, bytes, dict]:
        count, status, headers = self.fail_first.get(path, (0, 0, {}))
        if rank <= count:
            return status, b"scripted failure", headers
        return self.routes.get(path, (404, b"not found", {}))


def _handler(site: Site) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            rank = site.arrive(self.path)
            try:
                site.stop.wait(site.delays.get(self.path, 0))
                status, body, headers = site.respond(self.path, rank)
            finally:
                # Done before sending: once the client has the answer it may send its next
                # request before this thread would get to count this one out.
                with site.lock:
                    site.in_flight -= 1
            try:
                send(self, status, body, headers)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout test)

        def log_message(self, *args) -> None:
            pass

    return Handler


@pytest.fixture
def site(monkeypatch):
    monkeypatch.setenv("no_proxy", "*")  # never route 127.0.0.1 through a proxy from the env
    state = Site()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield state
    state.stop.set()
    server.shutdown()
    server.server_close()


def _blog(site: Site, n: int = 3) -> list[str]:
    paths = [f"/a{i}/" for i in range(1, n + 1)]
    for i, path in enumerate(paths, 1):
        site.article(path, f"Article {i}")
    site.sitemap("/sitemap.xml", paths)
    return paths


# --- sitemaps ---------------------------------------------------------------------------


def test_xml_sitemap_keeps_sitemap_order(site):
    paths = _blog(site, 4)
    site.delays["/a1/"] = 0.3  # finishes last: output must still follow the sitemap
    articles = crawl(site.url("/sitemap.xml"), **FAST)
    assert [a.url for a in articles] == [site.url(p) for p in paths]
    assert [a.title for a in articles] == ["Article 1", "Article 2", "Article 3", "Article 4"]


def test_sitemap_index_is_followed(site):
    for i in range(1, 5):
        site.article(f"/p{i}/", f"Post {i}")
    site.sitemap("/post-sitemap.xml", ["/p1/", "/p2/"])
    site.sitemap("/page-sitemap.xml", ["/p3/", "/p4/"])
    nested = "".join(f"<sitemap><loc>{site.url(p)}</loc></sitemap>"
                     for p in ("/post-sitemap.xml", "/page-sitemap.xml", "/missing.xml"))
    site.add("/sitemap_index.xml", '<?xml version="1.0"?><sitemapindex xmlns='
             f'"http://www.sitemaps.org/schemas/sitemap/0.9">{nested}</sitemapindex>')
    articles = crawl(site.url("/sitemap_index.xml"), **FAST)
    assert [a.title for a in articles] == ["Post 1", "Post 2", "Post 3", "Post 4"]


def test_limit_caps_urls(site):
    _blog(site, 5)
    articles = crawl(site.url("/sitemap.xml"), limit=2, **FAST)
    assert [a.title for a in articles] == ["Article 1", "Article 2"]
    assert site.hits["/a3/"] == 0


def test_parse_sitemap_ignores_image_locs_and_archives():
    body = b"""<?xml version="1.0"?>
    <urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"
            xmlns:image="http://www.google.com/schemas/sitemap-image/1.1">
      <url><loc> https://arsonor.com/eq/ </loc>
        <image:image><image:loc>https://arsonor.com/eq.png</image:loc></image:image></url>
      <url><loc>https://arsonor.com/category/le-home-studio/</loc></url>
      <url><loc>https://arsonor.com/eq/#top</loc></url>
      <url><loc>https://arsonor.com/reverb/</loc></url>
    </urlset>"""
    assert parse_sitemap(body, "https://arsonor.com/sitemap.xml") == (
        ["https://arsonor.com/eq/", "https://arsonor.com/reverb/"], [])


def test_html_plan_du_site_filters_links():
    page = b"""<html><body><h1>Plan du site</h1><ul>
      <li><a href="/eq/">EQ</a></li>
      <li><a href="https://arsonor.com/reverb/">Reverb</a></li>
      <li><a href="https://www.arsonor.com/delay/">Delay (www)</a></li>
      <li><a href="/eq/#part2">EQ again</a></li>
      <li><a href="https://other.com/x/">Elsewhere</a></li>
      <li><a href="#top">Top</a></li>
      <li><a href="mailto:a@b.c">Mail</a></li>
      <li><a href="/wp-content/uploads/cover.jpg">Image</a></li>
      <li><a href="/guide.PDF">PDF</a></li>
      <li><a href="/plan-du-site/">This page</a></li>
      <li><a href="/category/le-home-studio/">Category</a></li>
      <li><a href="/tag/eq/">Tag</a></li>
      <li><a href="/">Home</a></li>
      <li><a href="compression/">Relative</a></li>
    </ul></body></html>"""
    urls, nested = parse_sitemap(page, "https://arsonor.com/plan-du-site/")
    assert nested == []
    assert urls == ["https://arsonor.com/eq/", "https://arsonor.com/reverb/",
                    "https://www.arsonor.com/delay/",
                    "https://arsonor.com/plan-du-site/compression/"]


def test_format_detected_by_content_not_name(site):
    _blog(site, 2)
    site.add("/plan.xml", '<html><body><a href="/a1/">1</a><a href="/a2/">2</a>'
                          '<a href="http://localhost:1/a3/">other host</a></body></html>')
    site.add("/plan-du-site", site.routes["/sitemap.xml"][1], content_type="text/html")
    from_html = crawl(site.url("/plan.xml"), **FAST)
    from_xml = crawl(site.url("/plan-du-site"), **FAST)
    assert [a.title for a in from_html] == [a.title for a in from_xml] == ["Article 1", "Article 2"]


def test_sitemap_without_articles_raises(site):
    site.sitemap("/sitemap.xml", [])
    with pytest.raises(SourceError, match="No article URL"):
        crawl(site.url("/sitemap.xml"), **FAST)


def test_all_pages_failing_raises(site):
    site.sitemap("/sitemap.xml", ["/gone1/", "/gone2/"])
    with pytest.raises(SourceError, match="None of the 2 pages"):
        crawl(site.url("/sitemap.xml"), **FAST)


def test_malformed_xml_sitemap_raises(site):
    site.add("/sitemap.xml", '<?xml version="1.0"?><urlset><url><loc>x</loc></url>',
             content_type="application/xml")
    with pytest.raises(SourceError, match=r"Cannot read the sitemap .*Malformed XML sitemap"):
        crawl(site.url("/sitemap.xml"), **FAST)


def test_unreachable_sitemap_raises_clear_error():
    with socket.socket() as sock:  # a port that nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/sitemap.xml"
    with pytest.raises(SourceError, match=r"Cannot fetch the sitemap http://127\.0\.0\.1:\d+/"
                                          r"sitemap\.xml: .*refused"):
        crawl(url, retries=1, **FAST)


def test_sitemap_http_error_raises(site):
    with pytest.raises(SourceError, match="HTTP 404"):
        crawl(site.url("/sitemap.xml"), **FAST)


# --- extraction -------------------------------------------------------------------------

PAGE = """<!DOCTYPE html><html lang="fr"><head>
<meta charset="utf-8"><title>Ignored &amp; title | Arsonor</title>
<meta property="og:site_name" content="Arsonor">
<meta property="og:title" content="L&#8217;égaliseur &amp; ses secrets - Arsonor">
<meta property="article:section" content="le home studio">
<meta property="article:tag" content="EQ"><meta property="article:tag" content="Mixage">
<style>body { color: red }</style><script>var secret = "SCRIPT";</script>
</head><body>
<header id="site-header"><a href="/">Arsonor</a><nav><a href="/category/la-post-prod/">
La Post-Prod</a> MENU</nav></header>
<main><article>
<nav class="toc"><a href="#filtres">SOMMAIRE</a></nav>
<h1>L'égaliseur</h1>
<p>Un <strong>égaliseur</strong> (EQ) sert à&nbsp;sculpter
   le   spectre.</p>
<h2>Les filtres</h2>
<ul><li>Passe-haut &amp; passe-bas</li><li>Cloche</li></ul>
<figure><img src="eq.png"><figcaption>CAPTION</figcaption></figure>
<p>{words}</p>
<script>document.write("INLINE SCRIPT")</script>
<form><label>NEWSLETTER</label><input name="email"></form>
</article></main>
<aside>SIDEBAR <a href="/tag/zzz/">zzz</a></aside>
<footer>FOOTER © 2024</footer>
</body></html>""".replace("{words}", WORDS)


def test_extract_article_metas_and_text():
    article = extract_article(PAGE, "https://arsonor.com/egaliseur/")
    assert article.title == "L’égaliseur & ses secrets"
    assert article.category == "LE HOME STUDIO"
    assert article.tags == "EQ, Mixage"
    assert article.url == "https://arsonor.com/egaliseur/"
    assert article.article_id == stable_id("https://arsonor.com/egaliseur/")
    blocks = article.text.split("\n\n")
    assert blocks[:5] == ["L'égaliseur", "Un égaliseur (EQ) sert à sculpter le spectre.",
                          "Les filtres", "Passe-haut & passe-bas", "Cloche"]
    assert blocks[5] == WORDS
    for junk in ("SCRIPT", "secret", "color", "MENU", "SOMMAIRE", "CAPTION", "NEWSLETTER",
                 "SIDEBAR", "FOOTER", "&amp;", "&nbsp;", "\xa0"):
        assert junk not in article.text


def test_extract_article_fallbacks():
    html = f"""<html><head><title>Reverb | Arsonor</title></head><body>
    <div class="sidebar"><a href="/tag/ignored/">x</a></div>
    <div class="post-content large">
      <h1>La réverbération</h1><p>{WORDS}</p>
      <span class="cats"><a href="/category/tutos/" rel="category tag">La Post-Prod</a></span>
      <a href="/tag/reverb/" rel="tag">Reverb</a> <a href="/tag/espace/" rel="tag">Espace</a>
      <a href="/tag/reverb/" rel="tag">Reverb</a>
    </div><div class="comments">COMMENTS</div></body></html>"""
    article = extract_article(html, "https://arsonor.com/reverb/")
    assert article.title == "La réverbération"
    assert article.category == "LA POST-PROD"
    assert article.tags == "Reverb, Espace"
    assert article.text.startswith("La réverbération\n\n" + WORDS)
    assert "COMMENTS" not in article.text


def test_extract_article_path_based_taxonomy_and_title_tag():
    html = f"""<html><head><title>Synthèse sonore - Arsonor</title></head><body>
    <nav><a href="/category/le-home-studio/">Le Home Studio</a></nav>
    <article><p>{WORDS}</p>
    <footer><a href="/category/tutoriels/">Tutoriels</a> <a href="/tag/synth/">Synth</a></footer>
    </article></body></html>"""
    article = extract_article(html, "https://arsonor.com/synthese/")
    assert article.title == "Synthèse sonore"
    assert article.category == "TUTORIELS"  # unknown category: upper-cased; nav menu ignored
    assert article.tags == "Synth"
    assert "Tutoriels" not in article.text  # the entry footer is metadata, not text


def test_extract_rejects_non_articles(caplog):
    caplog.set_level(logging.WARNING, logger="indexing.crawler")
    assert extract_article(f"<html><body><p>{WORDS}</p></body></html>", "http://x/a") is None
    assert extract_article("<html><body><h1>Contact</h1><p>Écrivez-nous.</p></body></html>",
                           "http://x/contact") is None
    assert "no title" in caplog.text and "words of text" in caplog.text


# --- network failures -------------------------------------------------------------------


def test_retry_after_503_then_success(site):
    _blog(site, 3)
    site.fail_first["/a3/"] = (2, 503, {})
    articles = crawl(site.url("/sitemap.xml"), retries=3, **FAST)
    assert [a.title for a in articles] == ["Article 1", "Article 2", "Article 3"]
    assert site.hits["/a3/"] == 3


def test_retries_exhausted_skips_page(site, caplog):
    _blog(site, 3)
    site.fail_first["/a2/"] = (99, 500, {})
    articles = crawl(site.url("/sitemap.xml"), retries=2, **FAST)
    assert [a.title for a in articles] == ["Article 1", "Article 3"]
    assert site.hits["/a2/"] == 3
    assert "HTTP 500" in caplog.text and "/a2/" in caplog.text


def test_retry_after_header_is_honoured(site):
    _blog(site, 1)
    site.fail_first["/a1/"] = (1, 429, {"Retry-After": "1"})
    articles = crawl(site.url("/sitemap.xml"), retries=1, **FAST)
    assert len(articles) == 1
    first, second = site.hit_times["/a1/"]
    assert second - first >= 0.95  # backoff alone would wait 0.01 s


def test_retry_delay_rules():
    assert crawler._retry_delay(0, 0.5, None) == 0.5
    assert crawler._retry_delay(3, 0.5, None) == 4.0
    assert crawler._retry_delay(0, 0.5, "2") == 2.0
    assert crawler._retry_delay(0, 0.5, "3600") == 30.0  # capped
    assert crawler._retry_delay(1, 0.5, "Wed, 21 Oct 2015 07:28:00 GMT") == 1.0
    assert crawler._retry_delay(1, 0.5, "-5") == 1.0


def test_timeout_skips_slow_page(site):
    _blog(site, 2)
    site.article("/slow/", "Slow")
    site.delays["/slow/"] = 2.0
    site.sitemap("/sitemap.xml", ["/a1/", "/slow/", "/a2/"])
    start = time.monotonic()
    articles = crawl(site.url("/sitemap.xml"), timeout=0.5, retries=0, backoff=0.01,
                     progress=False)
    assert time.monotonic() - start < 1.8
    assert [a.title for a in articles] == ["Article 1", "Article 2"]
    assert site.hits["/slow/"] == 1


def test_404_is_not_retried(site, caplog):
    _blog(site, 2)
    site.sitemap("/sitemap.xml", ["/a1/", "/gone/", "/a2/"])
    articles = crawl(site.url("/sitemap.xml"), retries=3, **FAST)
    assert [a.title for a in articles] == ["Article 1", "Article 2"]
    assert site.hits["/gone/"] == 1
    assert "HTTP 404" in caplog.text


def test_redirect_uses_final_url(site):
    _blog(site, 1)
    site.add("/old/", b"", status=301, headers={"Location": site.url("/a1/")})
    site.sitemap("/sitemap.xml", ["/old/", "/a1/"])
    [article] = crawl(site.url("/sitemap.xml"), **FAST)  # one page under two URLs: kept once
    assert article.url == site.url("/a1/")
    assert article.article_id == stable_id(site.url("/a1/"))


def test_accented_links_are_percent_encoded(site):
    site.article("/%C3%A9galiseur/", "Égaliseur")
    site.add("/plan-du-site/", '<html><body><a href="/égaliseur/">EQ</a></body></html>')
    [article] = crawl(site.url("/plan-du-site/"), **FAST)
    assert article.title == "Égaliseur"


def test_non_html_page_is_skipped(site):
    _blog(site, 1)
    site.add("/data/", b"%PDF-1.4 " + WORDS.encode(), content_type="application/pdf")
    site.sitemap("/sitemap.xml", ["/a1/", "/data/"])
    assert [a.title for a in crawl(site.url("/sitemap.xml"), **FAST)] == ["Article 1"]


# --- cache, concurrency, ids ------------------------------------------------------------


def test_cache_second_crawl_makes_no_article_request(site, tmp_path):
    paths = _blog(site, 3)
    site.add("/old/", b"", status=301, headers={"Location": site.url("/a3/")})
    site.sitemap("/sitemap.xml", paths[:2] + ["/old/"], lastmod="2024-05-01")
    first = crawl(site.url("/sitemap.xml"), cache_dir=tmp_path / "cache", **FAST)
    hits = dict(site.hits)
    second = crawl(site.url("/sitemap.xml"), cache_dir=tmp_path / "cache", **FAST)
    assert second == first  # same ids and final URLs, even through the redirect
    assert site.hits["/sitemap.xml"] == hits["/sitemap.xml"] + 1  # sitemap always fresh
    fresh = ("/sitemap.xml", "/robots.txt")  # read at each crawl
    assert {p: n for p, n in site.hits.items() if p not in fresh} == {
        p: n for p, n in hits.items() if p not in fresh}
    names = sorted(f.name for f in (tmp_path / "cache").glob("*.html"))
    expected = sorted(hashlib.sha1(site.url(p).encode()).hexdigest() + ".html"
                      for p in paths[:2] + ["/old/"])
    assert names == expected
    assert not list((tmp_path / "cache").glob("*.tmp"))  # no leftover temp files


def test_failed_pages_are_fetched_next_time_and_only_they(site, tmp_path):
    site.sitemap("/sitemap.xml", _blog(site, 4), lastmod="2024-05-01")
    site.fail_first["/a3/"] = (99, 503, {})
    site.fail_first["/a4/"] = (99, 503, {})
    partial = crawl(site.url("/sitemap.xml"), cache_dir=tmp_path, retries=0, **FAST)
    assert [a.title for a in partial] == ["Article 1", "Article 2"]
    assert len(list(tmp_path.glob("*.html"))) == 2  # failed pages are not cached
    site.fail_first.clear()
    full = crawl(site.url("/sitemap.xml"), cache_dir=tmp_path, retries=0, **FAST)
    assert [a.title for a in full] == ["Article 1", "Article 2", "Article 3", "Article 4"]
    assert [site.hits[f"/a{i}/"] for i in range(1, 5)] == [1, 1, 2, 2]


def test_crawl_stopped_by_exception_resumes(site, tmp_path, monkeypatch):
    paths = _blog(site, 8)
    site.delays["/a4/"] = 0.3  # keeps the single worker busy while the interrupt surfaces
    real = crawler.extract_article

    def crash_on_a3(html, url):
        if url.endswith("/a3/"):
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C mid-crawl
        return real(html, url)

    monkeypatch.setattr(crawler, "extract_article", crash_on_a3)
    with pytest.raises(KeyboardInterrupt):
        crawl(site.url("/sitemap.xml"), cache_dir=tmp_path, concurrency=1, **FAST)
    monkeypatch.setattr(crawler, "extract_article", real)
    assert sum(site.hits[p] for p in paths[4:]) == 0  # the queue was cancelled, not drained
    articles = crawl(site.url("/sitemap.xml"), cache_dir=tmp_path, concurrency=1, **FAST)
    assert len(articles) == 8
    assert [site.hits[p] for p in paths] == [1] * 8  # nothing fetched twice


@pytest.mark.parametrize("concurrency, bound", [(1, 1), (2, 2), (4, 4)])
def test_concurrency_is_bounded(site, concurrency, bound):
    paths = _blog(site, 8)
    for path in paths:
        site.delays[path] = 0.1
    crawl(site.url("/sitemap.xml"), concurrency=concurrency, **FAST)
    assert site.max_in_flight == bound  # reached (the pool is used) but never exceeded


def test_ids_are_stable_across_crawls(site):
    paths = _blog(site, 3)
    first = crawl(site.url("/sitemap.xml"), **FAST)
    second = crawl(site.url("/sitemap.xml"), concurrency=1, **FAST)
    assert [a.article_id for a in first] == [a.article_id for a in second]
    assert [a.article_id for a in first] == [stable_id(site.url(p)) for p in paths]
    assert all(len(a.article_id) == 8 for a in first)


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="concurrency"):
        crawl("http://127.0.0.1:1/", concurrency=0)
    with pytest.raises(ValueError, match="limit"):
        crawl("http://127.0.0.1:1/", limit=0)
