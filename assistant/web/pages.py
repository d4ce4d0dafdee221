"""The web pages: the chat (``/``), the demo articles (``/articles/<id>``), the monitoring
dashboard (``/dashboard``, its data at ``/dashboard/data``) and the embeddable widget (its loader
``/widget.js``, pasted on the blog, and the chat panel it frames, ``/embed?lang=fr|en``).

Everything the pages need is served by the app itself (templates, CSS, JS, the chart drawing
script): no CDN, no external font. The pages talk to the JSON API (``POST /question``,
``POST /feedback``) from the browser. The app's services object lives in
``current_app.extensions["assistant"]`` (``.settings``, ``.store``).
"""

from __future__ import annotations

import logging
import math
import threading
from pathlib import Path

from flask import Blueprint, current_app, jsonify, render_template, request

from assistant.config import REPO_DIR
from assistant.conversation_log import StoreUnavailable
from assistant.conversation_log.reports import MAX_BUCKETS, RANGES, dashboard_for_hours
from assistant.errors import AssistantError
from assistant.web.admin import admin_required
from assistant.web.security import allow_framing

log = logging.getLogger(__name__)

bp = Blueprint("pages", __name__, template_folder="templates", static_folder="static",
               static_url_path="/static/pages")

CATEGORIES = ("LE HOME STUDIO", "LE SOUND DESIGN", "LA POST-PROD")
INTERFACE_LANGUAGES = ("fr", "en")
WIDGET_MAX_AGE = 3600  # seconds a browser may keep /widget.js before asking again
MAX_HOURS = 24 * 366


def _services():
    return current_app.extensions["assistant"]


def _store():
    return _services().store


def _settings():
    return _services().settings


# -- articles --------------------------------------------------------------------------------


def _source_path(source: str) -> Path | None:
    """The local JSON file named by ``settings.source`` (relative to the working directory,
    else to the repository), or None for a sitemap URL / anything else."""
    if not source or source.startswith(("http://", "https://")) \
            or not source.lower().endswith(".json"):
        return None
    path = Path(source)
    if not path.is_absolute() and not path.is_file():
        path = REPO_DIR / path
    return path if path.is_file() else None


def read_articles(path: Path) -> dict[str, dict]:
    """Articles by id, ready for the article page, from an articles (or chunks) JSON file."""
    from indexing.sources import (articles_from_records, chunks_from_records,
                                  is_chunk_records, read_json_records)

    records = read_json_records(path)
    articles: dict[str, dict] = {}
    if is_chunk_records(records):
        for chunk in chunks_from_records(records, str(path)):
            article = articles.setdefault(chunk.article_id, {
                "article_id": chunk.article_id, "title": chunk.title, "url": chunk.url,
                "category": chunk.category, "tags": chunk.tags, "paragraphs": []})
            article["paragraphs"].append(chunk.text)
    else:
        for a in articles_from_records(records, str(path)):
            articles[a.article_id] = {
                "article_id": a.article_id, "title": a.title, "url": a.url,
                "category": a.category, "tags": a.tags,
                "paragraphs": [p.strip() for p in a.text.split("\n\n") if p.strip()]}
    for article in articles.values():
        article["tag_list"] = [t.strip() for t in article["tags"].split(",") if t.strip()]
    return articles


class ArticleShelf:
    """The source's articles for ``/articles/<id>``, read again when the file changes (one
    per app, in ``app.extensions["articles"]``)."""

    def __init__(self, source: str):
        self.source = source
        self._lock = threading.Lock()
        self._version: tuple[int, int] | None = None
        self._articles: dict[str, dict] = {}

    def get(self, article_id: str) -> dict | None:
        path = _source_path(self.source)
        if path is None:
            return None
        stat = path.stat()
        version = (stat.st_mtime_ns, stat.st_size)
        with self._lock:
            if version != self._version:
                self._articles, self._version = read_articles(path), version
            return self._articles.get(article_id)


def init_app(app) -> None:
    app.extensions["articles"] = ArticleShelf(app.config["SETTINGS"].source)
    app.register_blueprint(bp)


# -- pages -----------------------------------------------------------------------------------


@bp.get("/")
def chat():
    return render_template("chat.html", categories=CATEGORIES)


@bp.get("/widget.js")
def widget_script():
    response = bp.send_static_file("widget.js")
    response.headers["Cache-Control"] = f"public, max-age={WIDGET_MAX_AGE}"
    return response


@bp.get("/embed")
@allow_framing
def embed():
    lang = request.args.get("lang", "fr").strip().lower()[:2]
    if lang not in INTERFACE_LANGUAGES:
        return jsonify(error=f"lang must be one of {', '.join(INTERFACE_LANGUAGES)}"), 400
    return render_template("embed.html", categories=CATEGORIES, lang=lang)


@bp.get("/articles/<article_id>")
def article(article_id: str):
    shelf = current_app.extensions["articles"]
    try:
        found = shelf.get(article_id)
    except AssistantError as e:
        log.warning("articles unavailable from %s: %s", shelf.source, e)
        found = None
    if found is None:
        return render_template("not_found.html", article_id=article_id), 404
    return render_template("article.html", article=found)


@bp.get("/dashboard")
@admin_required
def dashboard():
    return render_template("dashboard.html", ranges=sorted(RANGES))


@bp.get("/dashboard/data")
@admin_required
def dashboard_data_view():
    try:
        hours = float(request.args.get("hours", "24"))
        bucket = request.args.get("bucket")
        bucket_seconds = int(bucket) if bucket else None
    except ValueError:
        return jsonify(error="hours and bucket must be numbers"), 400
    if not math.isfinite(hours) or not 0 < hours <= MAX_HOURS:
        return jsonify(error=f"hours must be between 0 and {MAX_HOURS}"), 400
    if bucket_seconds is not None and (
            bucket_seconds < 1 or hours * 3600 / bucket_seconds > MAX_BUCKETS):
        return jsonify(error=f"bucket must be at least 1 second and give at most "
                             f"{MAX_BUCKETS} points"), 400
    if hours.is_integer():
        hours = int(hours)
    try:
        # Content gaps grouped by meaning, as `assistant gaps` groups them (the query memo
        # keeps each question's vector).
        data = dashboard_for_hours(_store(), hours, bucket_seconds,
                                   embed=_services().query_embeddings)
    except StoreUnavailable as e:
        log.warning("dashboard: conversation log unavailable: %s", e)
        return jsonify(error="the conversation log is unavailable right now"), 503
    response = jsonify(data)
    response.headers["Cache-Control"] = "no-store"
    return response
