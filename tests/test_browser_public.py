"""Issue 9 in a real browser (Debian's Chromium through Playwright): CORS from an allowed and a
refused origin, and the admin login form. The app (no index needed) and a page server run on
127.0.0.1 on two free ports; ``http://127.0.0.1:<page port>`` is the allowed origin and
``http://localhost:<page port>`` — same server, another origin — the refused one."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

pytestmark = pytest.mark.slow

from playwright.sync_api import expect  # noqa: E402
from werkzeug.serving import make_server  # noqa: E402

from assistant.config import Settings  # noqa: E402
from assistant.conversation_log import Exchange  # noqa: E402
from assistant.web import create_app  # noqa: E402

TOKEN = "browser-admin-token-0123456789abcdef"
PAGE = b"<!doctype html><html lang='fr'><head><meta charset='utf-8'><title>Blog</title></head>" \
       b"<body><h1>Un article du blog</h1></body></html>"


class _Page(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's name
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, *args):
        pass


@pytest.fixture
def blog():
    """A stand-in for the blog: a page server on another port (another origin)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
def served(tmp_path, blog):
    settings = Settings(data_dir=str(tmp_path / "var"), embedded_path=str(tmp_path / "none.sqlite"),
                        allowed_origins=f"http://127.0.0.1:{blog}", admin_token=TOKEN,
                        secret_key="k" * 32, rate_limit="off", openai_api_key="",
                        openai_base_url="", database_url="")
    app = create_app({"SETTINGS": settings})
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield app, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(10)
    server.server_close()
    app.extensions["assistant"].close()


FETCH = """async ([url, body, token]) => {
  const headers = {"Content-Type": "application/json"};
  if (token) headers["Authorization"] = "Bearer " + token;
  try {
    const r = await fetch(url, {method: body ? "POST" : "GET", headers,
                                body: body ? JSON.stringify(body) : undefined});
    return {status: r.status, body: await r.text()};
  } catch (e) { return {blocked: String(e)}; }
}"""


def feedback_count(store) -> int:
    return store.read(lambda cur: cur.execute("SELECT COUNT(*) FROM feedback").fetchone()[0])


def test_cors_from_an_allowed_and_a_refused_origin(browser, served, blog):
    app, api = served
    store = app.extensions["assistant"].store
    exchange = Exchange(question="Qu'est-ce qu'un VCO ?", answer="Un oscillateur [1].")
    assert store.save_exchange(exchange)
    body = {"exchange_id": exchange.id, "feedback": 1, "comment": "depuis le blog"}
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"http://127.0.0.1:{blog}/")
        allowed = page.evaluate(FETCH, [f"{api}/feedback", body, None])
        assert allowed.get("status") == 200, allowed  # preflight passed, POST read
        assert feedback_count(store) == 1
        health = page.evaluate(FETCH, [f"{api}/health", None, None])
        assert health.get("status") in (200, 503), health  # answered and readable
        # Admin endpoints are never cross-origin, even with the right token.
        metrics = page.evaluate(FETCH, [f"{api}/metrics", None, TOKEN])
        assert "blocked" in metrics, metrics

        page.goto(f"http://localhost:{blog}/")  # another origin, not in ALLOWED_ORIGINS
        refused = page.evaluate(FETCH, [f"{api}/feedback", body, None])
        assert "blocked" in refused, refused
        assert feedback_count(store) == 1  # the preflight failed: the POST was never sent
    finally:
        context.close()


def test_the_login_form(browser, served):
    app, api = served
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"{api}/dashboard")
        assert page.url == f"{api}/login?next=/dashboard"
        page.fill("#token", "not the token")
        page.click("#login-submit")
        expect(page.locator("#login-error")).to_contain_text("Jeton incorrect")

        page.fill("#token", TOKEN)
        with page.expect_response(lambda r: "/dashboard/data" in r.url) as data:
            page.click("#login-submit")
        assert page.url == f"{api}/dashboard"
        assert data.value.status == 200
        expect(page.locator("#dashboard")).to_be_visible()
        (cookie,) = [c for c in context.cookies() if c["name"] == "arsonor_admin"]
        assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
        assert cookie["secure"] is False  # plain http here; https sets it (test_public_access)
        assert page.evaluate("document.cookie") == ""  # HttpOnly: out of the scripts' reach

        page.goto(f"{api}/login")
        page.click("#logout")
        assert page.url == f"{api}/login"
        page.goto(f"{api}/dashboard")
        assert page.url == f"{api}/login?next=/dashboard"  # logged out
    finally:
        context.close()
