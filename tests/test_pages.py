"""The web pages through Flask's test client, on the real app (``create_app``): the chat page,
the dashboard and its data, the demo articles and their 404; every asset is served by the app
(no CDN, no external font), nothing is injected as HTML, and both languages have every label.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from assistant.config import REPO_DIR, Settings
from assistant.conversation_log import Exchange
from assistant.web import create_app
from evaluation.ports import free_port

WEB = REPO_DIR / "assistant" / "web"
STATIC = WEB / "static"
TEMPLATES = WEB / "templates"
ARTICLES = json.loads((REPO_DIR / "data" / "articles.json").read_text(encoding="utf-8"))
UTC = timezone.utc
# The one absolute URL allowed in what the app serves: the SVG namespace (an identifier that
# browsers never fetch).
ALLOWED_URLS = {"http://www.w3.org/2000/svg"}


def make_app(tmp_path, **settings):
    values = {"data_dir": str(tmp_path / "var"), "source": str(REPO_DIR / "data" / "articles.json"),
              "openai_api_key": "", "openai_base_url": "", "database_url": ""}
    values.update(settings)
    return create_app({"SETTINGS": Settings(**values), "TESTING": True})


@pytest.fixture
def app(tmp_path):
    app = make_app(tmp_path)
    yield app
    app.extensions["assistant"].close()


@pytest.fixture
def client(app):
    return app.test_client()


class Links(HTMLParser):
    """Every src/href of a page, and the text of its inline scripts and styles."""

    def __init__(self):
        super().__init__()
        self.urls: list[str] = []
        self.inline: list[str] = []
        self._in = None

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("src", "href", "action", "poster", "data") and value:
                self.urls.append(value)
            if name == "style" and value:
                self.inline.append(value)
        if tag in ("script", "style"):
            self._in = tag

    def handle_endtag(self, tag):
        if tag == self._in:
            self._in = None

    def handle_data(self, data):
        if self._in:
            self.inline.append(data)


def links(html: str) -> Links:
    parser = Links()
    parser.feed(html)
    return parser


def external_references(text: str) -> list[str]:
    """Absolute or protocol-relative URLs in served text (HTML, CSS, JS)."""
    found = re.findall(r"""(?:https?:)?//[A-Za-z0-9.\-]+(?::\d+)?[^\s"'()<>]*""", text)
    return [u for u in found if u not in ALLOWED_URLS and not u.startswith("//-")]


# -- pages -----------------------------------------------------------------------------------


def test_chat_page(client):
    response = client.get("/")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in html
    assert '<html lang="fr">' in html
    for needed in ('id="ask-form"', 'id="question"', 'id="category"', 'id="new-conversation"',
                   'id="thread"', 'id="tpl-answer"', 'class="thumb thumb-up"',
                   'class="thumb thumb-down"', 'id="lang-toggle"'):
        assert needed in html, needed
    # the category select: Tous + the three blog categories, as the API expects them
    options = re.findall(r'<option value="([^"]*)"', html)
    assert options == ["", "LE HOME STUDIO", "LE SOUND DESIGN", "LA POST-PROD"]
    assert ">Tous<" in html
    page = links(html)
    assert "/static/pages/chat.js" in page.urls and "/static/pages/app.css" in page.urls


def test_embed_page_is_the_chat_in_the_chosen_language(client):
    """The widget's panel: the chat page's own markup and scripts, its language fixed by ?lang=."""
    chat = client.get("/").get_data(as_text=True)
    for lang in ("fr", "en"):
        response = client.get(f"/embed?lang={lang}")
        assert response.status_code == 200 and response.mimetype == "text/html"
        html = response.get_data(as_text=True)
        assert f'<html lang="{lang}" data-ui-lang="{lang}">' in html
        for needed in ('id="ask-form"', 'id="question"', 'id="new-conversation"', 'id="thread"',
                       'id="tpl-answer"', 'class="example"', 'id="widget-close"'):
            assert needed in html, needed
        assert 'id="lang-toggle"' not in html and 'class="topbar"' not in html
        page = links(html)
        shared = {"/static/pages/i18n.js", "/static/pages/chat.js", "/static/pages/app.css"}
        assert shared <= set(page.urls) and shared <= set(links(chat).urls)
        assert "/static/pages/embed.js" in page.urls
    assert client.get("/embed?lang=fr-CA").status_code == 200
    assert client.get("/embed").get_data(as_text=True).count('data-ui-lang="fr"') == 1
    refused = client.get("/embed?lang=de")
    assert refused.status_code == 400
    assert refused.get_json() == {"error": "lang must be one of fr, en"}


def test_widget_script_is_served_as_javascript(client):
    response = client.get("/widget.js")
    assert response.status_code == 200
    assert response.mimetype in ("text/javascript", "application/javascript")
    assert response.headers["Cache-Control"] == "public, max-age=3600"
    code = response.get_data(as_text=True)
    assert code == (STATIC / "widget.js").read_text(encoding="utf-8")
    assert "/embed?lang=" in code and "attachShadow" in code


def test_dashboard_page(client):
    response = client.get("/dashboard")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    for needed in ('id="range"', 'id="chart-response"', 'id="chart-retrieval"', 'id="chart-cost"',
                   'id="chart-tokens"', 'id="chart-errors"', 'id="chart-relevance"',
                   'id="chart-modes"', 'id="chart-models"', 'id="last-table"',
                   'id="errors-table"', 'id="tile-pos"', 'id="tile-neg"',
                   'id="tile-feedback-rate"', 'id="tile-error-rate"', 'id="tile-cost"',
                   'data-url="/dashboard/data"'):
        assert needed in html, needed
    assert re.findall(r'<option value="(\d+)"', html) == ["1", "24", "168", "720"]
    assert "/static/pages/charts.js" in links(html).urls


def test_every_referenced_asset_is_served(client):
    for path in ("/", "/dashboard", f"/articles/{ARTICLES[0]['article_id']}", "/articles/nope",
                 "/embed?lang=fr"):
        html = client.get(path).get_data(as_text=True)
        for url in links(html).urls:
            assert url.startswith("/"), (path, url)
            response = client.get(url)
            assert response.status_code == 200, (path, url)
    css = client.get("/static/pages/app.css")
    assert css.mimetype == "text/css"
    assert client.get("/static/pages/chat.js").mimetype in ("text/javascript",
                                                             "application/javascript")
    assert client.get("/static/pages/missing.js").status_code == 404


def test_nothing_is_fetched_from_another_host(client):
    """No CDN, no external font, no absolute URL at all in the HTML, CSS and JS served."""
    served = {}
    for path in ("/", "/dashboard", f"/articles/{ARTICLES[0]['article_id']}", "/articles/nope",
                 "/embed?lang=en", "/widget.js"):
        served[path] = client.get(path).get_data(as_text=True)
    for asset in sorted(STATIC.iterdir()):
        path = f"/static/pages/{asset.name}"
        response = client.get(path)
        assert response.status_code == 200
        served[path] = response.get_data(as_text=True)
    assert len(served) >= 10
    for path, text in served.items():
        assert external_references(text) == [], path
        assert not re.search(r"@import|fonts\.googleapis|cdn\.|unpkg|jsdelivr", text), path
        for url in re.findall(r"url\(([^)]*)\)", text):
            assert not urlsplit(url.strip("'\" ")).netloc, (path, url)
    # the check itself does find external references
    assert external_references('<script src="https://cdn.example.org/x.js">') != []
    assert external_references("@font-face { src: url(//fonts.example.com/a.woff2) }") != []


def test_scripts_never_inject_html():
    """Text from the server or the user only ever goes in through textContent/createTextNode."""
    for script in STATIC.glob("*.js"):
        code = script.read_text(encoding="utf-8")
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                     "new Function"):
            assert sink not in code, (script.name, sink)
    for template in TEMPLATES.glob("*.html"):
        text = template.read_text(encoding="utf-8")
        assert "|safe" not in text.replace(" ", "") and "autoescape false" not in text


def test_both_languages_have_every_label():
    code = (STATIC / "i18n.js").read_text(encoding="utf-8")
    tables = {}
    for lang in ("fr", "en"):
        block = re.search(lang + r": \{(.*?)\n    \}", code, re.S).group(1)
        tables[lang] = dict(re.findall(r'"([a-z0-9_.A-Z]+)": "((?:[^"\\]|\\.)*)"', block))
    assert set(tables["fr"]) == set(tables["en"])
    assert len(tables["fr"]) > 60
    used = set()
    for template in TEMPLATES.glob("*.html"):
        used |= set(re.findall(r'data-i18n(?:-placeholder|-aria|-title)?="([^"]+)"',
                               template.read_text(encoding="utf-8")))
    for script in STATIC.glob("*.js"):
        text = script.read_text(encoding="utf-8")
        used |= set(re.findall(r'\bt\("([a-z0-9_.A-Z]+)"\)', text))
        used |= set(re.findall(r'"((?:chat|dash|rel|mode|article|notfound|nav|lang)\.[a-z0-9_.A-Z]+)"',
                               text))
    used = {k for k in used if not k.endswith(".")}
    missing = sorted(k for k in used if k not in tables["fr"])
    assert missing == []
    # relevance and mode labels are looked up by value
    for key in ("rel.RELEVANT", "rel.PARTLY_RELEVANT", "rel.NON_RELEVANT", "rel.unjudged",
                "mode.llm", "mode.extractive", "mode.unknown"):
        assert key in tables["fr"] and key in tables["en"]
    # the French page is the default: what the server renders is the French table
    chat = (TEMPLATES / "_chat.html").read_text(encoding="utf-8")
    assert tables["fr"]["chat.title"] in chat and tables["fr"]["chat.new"] in chat


# -- articles --------------------------------------------------------------------------------


def test_article_page_renders_a_demo_article(client):
    article = ARTICLES[0]
    response = client.get(article["url"])
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    from markupsafe import escape

    assert f"<h1>{escape(article['title'])}</h1>" in html
    assert escape(article["category"]) in html
    for tag in article["tags"].split(","):
        assert f"<li>{escape(tag.strip())}</li>" in html
    paragraphs = [p for p in article["text"].split("\n\n") if p.strip()]
    assert html.count("<p>") >= len(paragraphs)
    for paragraph in paragraphs:
        assert f"<p>{escape(paragraph.strip())}</p>" in html
    assert 'lang="fr"' in html


def test_every_demo_url_is_served(client):
    for article in ARTICLES:
        assert article["url"] == f"/articles/{article['article_id']}"
        assert client.get(article["url"]).status_code == 200


def test_unknown_article_is_a_404_page(client):
    response = client.get("/articles/deadbeef")
    assert response.status_code == 404
    assert response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    assert "Article introuvable" in html and "<code>deadbeef</code>" in html
    evil = client.get("/articles/%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E")
    assert evil.status_code == 404
    assert "<img src=x" not in evil.get_data(as_text=True)
    assert "<code>&lt;img src=x onerror=alert(1)&gt;</code>" in evil.get_data(as_text=True)


def test_article_text_is_escaped(tmp_path):
    source = tmp_path / "articles.json"
    source.write_text(json.dumps([{
        "article_id": "abc", "title": "<b>Titre</b> & co", "url": "/articles/abc",
        "category": "LA POST-PROD", "tags": ["<i>tag</i>", "eq"],
        "text": "Premier <script>alert(1)</script>\n\nSecond paragraphe."}]), encoding="utf-8")
    app = make_app(tmp_path, source=str(source))
    html = app.test_client().get("/articles/abc").get_data(as_text=True)
    assert "<script>alert(1)" not in html and "<b>Titre</b>" not in html
    assert "&lt;b&gt;Titre&lt;/b&gt; &amp; co" in html
    assert "<li>&lt;i&gt;tag&lt;/i&gt;</li>" in html and "<li>eq</li>" in html
    assert "<p>Second paragraphe.</p>" in html


def test_articles_follow_the_source_file(tmp_path):
    source = tmp_path / "articles.json"

    def write(title):
        source.write_text(json.dumps([{"article_id": "a1", "title": title, "url": "",
                                       "category": "", "tags": "", "text": "Texte."}]),
                          encoding="utf-8")

    write("Première version")
    client = make_app(tmp_path, source=str(source)).test_client()
    assert "Première version" in client.get("/articles/a1").get_data(as_text=True)
    write("Deuxième version, un peu plus longue")  # new size and mtime: the cache is dropped
    assert "Deuxième version" in client.get("/articles/a1").get_data(as_text=True)


def test_articles_from_a_chunks_file(tmp_path):
    source = tmp_path / "chunks.json"
    source.write_text(json.dumps([
        {"article_id": "x1", "url": "/articles/x1", "title": "Le gate", "category": "LA POST-PROD",
         "tags": "gate", "chunk_id": "x1-0", "chunk_text": "Un gate coupe le bruit."},
        {"article_id": "x1", "url": "/articles/x1", "title": "Le gate", "category": "LA POST-PROD",
         "tags": "gate", "chunk_id": "x1-1", "chunk_text": "Réglez le seuil."}]),
        encoding="utf-8")
    html = make_app(tmp_path, source=str(source)).test_client().get("/articles/x1") \
        .get_data(as_text=True)
    assert "<p>Un gate coupe le bruit.</p>" in html and "<p>Réglez le seuil.</p>" in html


@pytest.mark.parametrize("source", ["https://example.org/sitemap.xml", "missing.json",
                                    "broken.json"])
def test_no_article_file_gives_404(tmp_path, source):
    (tmp_path / "broken.json").write_text("{not json", encoding="utf-8")
    if source.endswith(".json"):
        source = str(tmp_path / source)
    client = make_app(tmp_path, source=source).test_client()
    assert client.get(f"/articles/{ARTICLES[0]['article_id']}").status_code == 404


# -- dashboard data --------------------------------------------------------------------------


def test_dashboard_data_from_the_log(app, client):
    store = app.extensions["assistant"].store
    now = datetime.now(UTC)
    exchange = Exchange(question="Qu'est-ce qu'un LFO ?", answer="Un oscillateur lent [1].",
                        mode="extractive", response_time=0.4, retrieval_time=0.1,
                        created_at=now - timedelta(minutes=5))
    store.save_exchange(exchange)
    store.save_exchange(Exchange(question="ancienne", answer="x", mode="llm", model="gpt-4o-mini",
                                 created_at=now - timedelta(hours=30)))
    store.save_feedback(1, exchange_id=exchange.id)

    response = client.get("/dashboard/data?hours=24")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    data = response.get_json()
    assert data["hours"] == 24 and data["bucket_seconds"] == 1800
    assert data["totals"] == {"exchanges": 1, "conversations": 1}
    assert data["feedback"] == {"positive": 1, "negative": 0, "total": 1}
    assert data["answer_modes"] == {"extractive": 1, "llm": 0}
    assert [r["question"] for r in data["last_conversations"]] == ["Qu'est-ce qu'un LFO ?"]
    assert data["last_conversations"][0]["time"].endswith("+00:00")
    assert len(data["series"]) in (48, 49)
    assert sum(p["exchanges"] for p in data["series"]) == 1

    week = client.get("/dashboard/data?hours=168").get_json()
    assert week["totals"]["exchanges"] == 2 and week["bucket_seconds"] == 3 * 3600
    assert client.get("/dashboard/data").get_json()["hours"] == 24
    custom = client.get("/dashboard/data?hours=2&bucket=600").get_json()
    assert custom["bucket_seconds"] == 600 and len(custom["series"]) in (12, 13)


@pytest.mark.parametrize("query", ["hours=abc", "hours=0", "hours=-3", "hours=nan", "hours=inf",
                                   "hours=100000", "hours=720&bucket=1", "hours=1&bucket=0",
                                   "hours=1&bucket=x"])
def test_dashboard_data_refuses_bad_ranges(client, query):
    response = client.get(f"/dashboard/data?{query}")
    assert response.status_code == 400
    assert "error" in response.get_json()


def test_dashboard_data_when_the_database_is_down(tmp_path):
    app = make_app(tmp_path, database_url=f"postgresql://postgres@127.0.0.1:{free_port()}/none")
    client = app.test_client()
    response = client.get("/dashboard/data?hours=24")
    assert response.status_code == 503
    assert response.get_json() == {"error": "the conversation log is unavailable right now"}
    # the page itself still renders (it shows the error when its data request fails)
    assert client.get("/dashboard").status_code == 200


def test_pages_read_the_services_of_the_app(app):
    """The pages reach the log and the settings through app.extensions["assistant"]."""
    from assistant.web import pages

    with app.test_request_context("/"):
        assert pages._store() is app.extensions["assistant"].store
        assert pages._settings() is app.extensions["assistant"].settings
    assert Path(pages.bp.static_folder) == STATIC
    assert pages.bp.static_url_path == "/static/pages"
