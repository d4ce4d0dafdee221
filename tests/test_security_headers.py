"""Security headers (assistant/web/security.py) on every page and endpoint, through Flask's test
client on the real app: the CSP allows no inline script or style, nothing is framed except the
widget's /embed page, which the app and the ALLOWED_ORIGINS sites may frame. In Chromium:
tests/test_widget_browser.py."""

from __future__ import annotations

import pytest

from assistant.config import load_settings
from assistant.errors import ConfigError
from tests.test_pages import TEMPLATES, links, make_app

BLOG = "https://www.arsonor.com"
OTHER_BLOG = "http://127.0.0.1:8081"


@pytest.fixture
def client(tmp_path):
    app = make_app(tmp_path, allowed_origins=f"{BLOG}, {OTHER_BLOG}/")
    yield app.test_client()
    app.extensions["assistant"].close()


def directives(response) -> dict[str, str]:
    policy = response.headers["Content-Security-Policy"]
    parts = [p.strip().split(None, 1) for p in policy.split(";") if p.strip()]
    return {p[0]: (p[1] if len(p) > 1 else "") for p in parts}


PATHS = ["/", "/dashboard", "/dashboard/data", "/articles/nope", "/widget.js",
         "/static/pages/app.css", "/static/pages/chat.js", "/health", "/openapi.json",
         "/metrics", "/no-such-page"]


@pytest.mark.parametrize("path", PATHS)
def test_every_response_carries_the_headers_and_refuses_framing(client, path):
    response = client.get(path)
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "strict-origin-when-cross-origin"
    assert response.headers["X-Frame-Options"] == "DENY"
    policy = directives(response)
    assert policy["frame-ancestors"] == "'none'"
    assert policy["script-src"] == "'self'" and policy["style-src"] == "'self'"
    assert policy["object-src"] == "'none'" and policy["base-uri"] == "'none'"
    assert "unsafe-inline" not in response.headers["Content-Security-Policy"]


def test_post_endpoints_and_errors_carry_them_too(client):
    for response in (client.post("/question", json={}), client.post("/feedback", data="x"),
                     client.delete("/")):
        assert response.status_code in (400, 405, 415)
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert directives(response)["frame-ancestors"] == "'none'"


def test_the_embed_page_may_be_framed_by_the_app_and_the_allowed_origins(client):
    response = client.get("/embed?lang=fr")
    assert response.status_code == 200
    assert "X-Frame-Options" not in response.headers  # it would override frame-ancestors
    assert directives(response)["frame-ancestors"] == f"'self' {BLOG} {OTHER_BLOG}"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert directives(response)["script-src"] == "'self'"


def test_without_allowed_origins_only_the_app_frames_the_embed_page(tmp_path):
    app = make_app(tmp_path)
    response = app.test_client().get("/embed")
    assert directives(response)["frame-ancestors"] == "'self'"
    app.extensions["assistant"].close()


@pytest.mark.parametrize("bad", ["www.arsonor.com", "https://www.arsonor.com/blog",
                                 "https://a.com; script-src *", "*", "ftp://a.com"])
def test_an_origin_that_is_not_one_is_refused_at_start(tmp_path, bad):
    with pytest.raises(ConfigError, match="ALLOWED_ORIGINS"):
        make_app(tmp_path, allowed_origins=bad)


def test_allowed_origins_from_the_environment():
    settings = load_settings({"ALLOWED_ORIGINS": " https://a.example , http://localhost:8080/,, "},
                             env_file=None)
    assert settings.allowed_origin_list == ("https://a.example", "http://localhost:8080")
    assert load_settings({}, env_file=None).allowed_origin_list == ()


def test_templates_need_no_inline_script_or_style(client):
    """What the CSP would block: inline <script>/<style>, style="" and on...="" attributes."""
    import re

    for template in TEMPLATES.glob("*.html"):
        text = template.read_text(encoding="utf-8")
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", text), template.name
        assert "<style" not in text and not re.search(r"\sstyle=", text), template.name
        assert not re.search(r"\son[a-z]+=", text), template.name
    for path in ("/", "/dashboard", "/embed", "/articles/nope"):
        page = links(client.get(path).get_data(as_text=True))
        assert page.inline == [], path
