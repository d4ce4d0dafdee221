"""The embeddable widget and the framing rules in a real browser (Debian's Chromium through
Playwright), against the real app over the embedded demo index (extractive answers) and a real
conversation log.

The blog is played by :class:`Blog`: a tiny ``http.server`` on another port of 127.0.0.1 (so
another origin) serving HTML pages that carry the widget's tag. The app's ``ALLOWED_ORIGINS``
lists that blog; a second blog, not listed, plays a site that may not frame the assistant.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

pytestmark = pytest.mark.slow

from playwright.sync_api import expect  # noqa: E402

from assistant.conversation_log import open_store  # noqa: E402
from tests.fixtures_browser import ANSWER_TIMEOUT, cited_numbers  # noqa: E402
from tests.test_browser import cited_by_article, query, watch_errors  # noqa: E402

BUTTON = "#arsonor-widget-button"
PANEL = "#arsonor-widget-panel"
IFRAME = "#arsonor-widget-panel iframe"

# The blog's own styles, as hostile as a theme can be: none of it may reach the widget.
HOSTILE_CSS = """
* { font-family: "Comic Sans MS", cursive !important; color: rgb(0, 128, 0) !important;
    letter-spacing: 3px !important; }
button { padding: 40px !important; background: rgb(255, 255, 0) !important; display: none !important; }
iframe { border: 12px solid red !important; width: 20px !important; height: 20px !important; }
div, [role=dialog] { display: none !important; }
arsonor-widget { display: none !important; }
"""
# Class names the app's stylesheet uses: the blog's elements with these names keep its look.
HOST_BODY = """
<main><p class="intro">Un article du blog.</p><div class="msg">msg</div>
<button class="send example" id="host-button">Bouton du blog</button>
<a href="#top" id="host-link">Un lien du blog</a></main>
"""


def page_html(*, lang: str = "fr", tag: str = "", css: str = "", body: str = HOST_BODY) -> str:
    style = f"<style>{css}</style>" if css else ""
    return (f"<!doctype html><html lang=\"{lang}\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>Blog</title>{style}</head><body>{body}{tag}</body></html>")


def widget_tag(app_url: str, lang: str | None = "fr") -> str:
    data_lang = f' data-lang="{lang}"' if lang else ""
    return f'<script src="{app_url}/widget.js"{data_lang} async></script>'


class Blog:
    """Pages (path -> HTML) served by http.server on 127.0.0.1:<free port> in a thread."""

    def __init__(self):
        self.pages: dict[str, str] = {"/favicon.ico": ""}
        pages = self.pages

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                body = pages.get(self.path.split("?")[0])
                data = (body or "not found").encode("utf-8")
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


@pytest.fixture
def blogs():
    """Two blogs: ``allowed`` (in ALLOWED_ORIGINS) and ``refused`` (not)."""
    allowed, refused = Blog(), Blog()
    yield allowed, refused
    allowed.close()
    refused.close()


@pytest.fixture
def sqlite_settings(demo_index_settings, tmp_path):
    return demo_index_settings.replace(data_dir=str(tmp_path / "var"), database_url="",
                                       openai_api_key="", openai_base_url="")


def open_widget(page):
    """Click the button; the panel's frame once its question box has the focus."""
    page.click(BUTTON)
    expect(page.locator(PANEL)).to_be_visible()
    frame = page.frame_locator(IFRAME)
    expect(frame.locator("#question")).to_be_focused(timeout=20_000)
    return frame


def ask_in(frame, question: str, index: int):
    frame.locator("#question").fill(question)
    frame.locator("#question").press("Enter")
    answer = frame.locator(".msg-bot").nth(index)
    expect(answer.locator(".meta")).to_be_visible(timeout=ANSWER_TIMEOUT)
    return answer


# -- the widget on another origin ---------------------------------------------------------


def test_widget_on_another_origin_asks_streams_groups_sources_and_stores_feedback(
        browser, serve, app_settings, blogs):
    blog, _ = blogs
    served = serve(app_settings.replace(allowed_origins=blog.origin))
    assert blog.origin != served.url
    blog.pages["/"] = page_html(tag=widget_tag(served.url))
    store = open_store(app_settings.database_url, data_dir=app_settings.data_dir)
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="fr-FR")
    page = context.new_page()
    errors = watch_errors(page)
    page.goto(blog.origin + "/")
    expect(page.locator(BUTTON)).to_have_text("Demandez au blog")
    expect(page.locator(BUTTON)).to_have_attribute("aria-expanded", "false")
    assert page.locator(IFRAME).count() == 0  # nothing loaded until the reader comes near

    frame = open_widget(page)
    expect(page.locator(BUTTON)).to_have_attribute("aria-expanded", "true")
    assert page.get_attribute(PANEL, "role") == "dialog"
    assert page.get_attribute(PANEL, "aria-modal") == "true"
    assert page.get_attribute(IFRAME, "src") == served.url + "/embed?lang=fr"
    expect(frame.locator(".example")).to_have_count(3)
    expect(frame.locator("#new-conversation")).to_have_text("Nouvelle conversation")

    # the blog's scripts cannot read the conversation: the panel is another origin
    assert page.evaluate("""() => {
        const iframe = document.querySelector('arsonor-widget').shadowRoot.querySelector('iframe');
        let blocked = false;
        try { iframe.contentWindow.document.body; } catch (e) { blocked = e.name === 'SecurityError'; }
        return iframe.contentDocument === null && blocked;
    }""")

    answer = ask_in(frame, "Comment régler l'attaque et le release d'un compresseur ?", 0)
    assert int(answer.get_attribute("data-tokens")) > 1  # streamed
    assert answer.get_attribute("data-mode") == "extractive"
    exchange_id = answer.get_attribute("data-exchange-id")
    conversation_id = answer.get_attribute("data-conversation-id")
    (text,) = query(store, "SELECT answer FROM conversations WHERE id = %s", (exchange_id,))[0]
    sources = store.get(exchange_id).sources
    cited = cited_numbers(text)
    assert cited, text

    # sources grouped by article, each with its cited passages' numbers; links to the blog
    expected = cited_by_article(sources, cited)
    items = answer.locator(".sources-list > li.source")
    expect(items).to_have_count(len(expected))
    for i, (article_id, numbers) in enumerate(expected.items()):
        item = items.nth(i)
        assert item.get_attribute("data-article-id") == article_id
        expect(item.locator(".passage-n")).to_have_text([str(n) for n in numbers])
        link = item.locator(".source-title a")
        source = sources[numbers[0] - 1]
        expect(link).to_have_text(source["title"])
        assert link.get_attribute("href") == source["url"]
        assert link.evaluate("(a) => a.href") == served.url + source["url"]  # the app's origin
        assert link.get_attribute("target") == "_blank"

    # thumbs up: the feedback row is in the database
    answer.locator(".thumb-up").click()
    expect(answer.locator(".thanks")).to_have_text("Merci pour votre avis !")
    assert query(store, "SELECT conversation_id, exchange_id, feedback FROM feedback") == [
        (conversation_id, exchange_id, 1)]

    # a follow-up stays in the conversation; "new conversation" starts another one
    second = ask_in(frame, "Et le ratio ?", 1)
    assert second.get_attribute("data-conversation-id") == conversation_id
    frame.locator("#new-conversation").click()
    expect(frame.locator(".msg")).to_have_count(0)
    expect(frame.locator("#intro")).to_be_visible()
    frame.locator(".example").first.click()
    third = frame.locator(".msg-bot").first
    expect(third.locator(".meta")).to_be_visible(timeout=ANSWER_TIMEOUT)
    assert third.get_attribute("data-conversation-id") not in ("", conversation_id)
    assert errors == []
    context.close()
    store.close()


@pytest.mark.parametrize("page_lang, data_lang, expected", [
    ("en", None, "en"),  # no data-lang: the page's language
    ("en-GB", "fr", "fr"),  # data-lang wins
    ("de", None, "fr"),  # neither French nor English: French
    ("fr", "en", "en"),
])
def test_widget_language_from_data_lang_else_the_page(browser, serve, sqlite_settings, blogs,
                                                      page_lang, data_lang, expected):
    blog, _ = blogs
    served = serve(sqlite_settings.replace(allowed_origins=blog.origin))
    blog.pages["/"] = page_html(lang=page_lang, tag=widget_tag(served.url, data_lang))
    page = browser.new_page(locale="fr-FR" if expected == "en" else "en-US")  # not the browser's
    page.goto(blog.origin + "/")
    button = {"fr": "Demandez au blog", "en": "Ask the blog"}[expected]
    title = {"fr": "Posez votre question sur le home studio",
             "en": "Ask your home-studio question"}[expected]
    expect(page.locator(BUTTON)).to_have_text(button)
    frame = open_widget(page)
    assert page.get_attribute(IFRAME, "src").endswith(f"/embed?lang={expected}")
    expect(frame.locator("h1")).to_have_text(title)
    expect(frame.locator("#widget-title")).to_have_text(button)
    assert page.evaluate("document.documentElement.lang") == page_lang  # the blog's is untouched
    page.close()


def test_widget_on_a_phone(browser, serve, sqlite_settings, blogs):
    blog, _ = blogs
    served = serve(sqlite_settings.replace(allowed_origins=blog.origin))
    blog.pages["/"] = page_html(tag=widget_tag(served.url, "en"))
    context = browser.new_context(viewport={"width": 375, "height": 812}, locale="en-US",
                                  is_mobile=True, has_touch=True, device_scale_factor=2)
    page = context.new_page()
    page.goto(blog.origin + "/")
    button = page.locator(BUTTON).bounding_box()
    assert button["x"] + button["width"] <= 375 and button["y"] + button["height"] <= 812
    page.tap(BUTTON)
    frame = page.frame_locator(IFRAME)
    expect(frame.locator("#question")).to_be_visible(timeout=20_000)
    box = page.locator(IFRAME).bounding_box()
    assert (box["x"], box["y"], box["width"], box["height"]) == (0, 0, 375, 812)  # full screen
    expect(page.locator(BUTTON)).to_be_hidden()  # under the panel; its close button closes it
    frame.locator(".example").first.tap()
    answer = frame.locator(".msg-bot").first
    expect(answer.locator(".meta")).to_be_visible(timeout=ANSWER_TIMEOUT)
    expect(answer.locator(".sources-list a").first).to_be_visible()
    embed = next(f for f in page.frames if f.url.startswith(served.url + "/embed"))
    assert embed.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    composer = frame.locator("#ask-form").bounding_box()
    assert composer["y"] + composer["height"] <= 812 + 0.5  # the question box stays on screen
    assert frame.locator(".thumb-up").first.bounding_box()["width"] >= 30
    frame.locator("#widget-close").tap()
    expect(page.locator(PANEL)).to_be_hidden()
    expect(page.locator(BUTTON)).to_be_visible()
    context.close()


def focus_in_frame(page) -> bool:
    """Is the keyboard focus inside the widget's frame?"""
    embed = next(f for f in page.frames if "/embed" in f.url)
    return embed.evaluate("document.hasFocus() && document.activeElement !== document.body")


def test_widget_with_the_keyboard_only(browser, serve, sqlite_settings, blogs):
    blog, _ = blogs
    served = serve(sqlite_settings.replace(allowed_origins=blog.origin))
    blog.pages["/"] = page_html(tag=widget_tag(served.url), body='<a href="#x" id="first">x</a>')
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(blog.origin + "/")
    expect(page.locator(BUTTON)).to_be_visible()
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "first"
    page.keyboard.press("Tab")
    expect(page.locator(BUTTON)).to_be_focused()
    page.keyboard.press("Enter")
    frame = page.frame_locator(IFRAME)
    expect(frame.locator("#question")).to_be_focused(timeout=20_000)
    page.keyboard.type("Qu'est-ce qu'un compresseur ?")
    page.keyboard.press("Enter")
    expect(frame.locator(".msg-bot .meta")).to_be_visible(timeout=ANSWER_TIMEOUT)
    # Tab and Shift+Tab go round inside the panel (focus trap), never back to the blog
    for key in ["Tab"] * 25 + ["Shift+Tab"] * 25:
        page.keyboard.press(key)
        assert focus_in_frame(page), key
    # the thumbs are reachable and work with Enter
    frame.locator(".thumb-up").focus()
    page.keyboard.press("Enter")
    expect(frame.locator(".thanks")).to_be_visible()
    # Escape closes the panel and gives the focus back to the button
    page.keyboard.press("Escape")
    expect(page.locator(PANEL)).to_be_hidden()
    expect(page.locator(BUTTON)).to_be_focused()
    expect(page.locator(BUTTON)).to_have_attribute("aria-expanded", "false")
    page.keyboard.press("Enter")  # opens again, the conversation kept
    expect(frame.locator("#question")).to_be_focused()
    expect(frame.locator(".msg-bot")).to_have_count(1)
    page.close()


HOST_PROBES = """() => {
    const look = (el) => { const s = getComputedStyle(el);
        return [s.textAlign, s.backgroundColor, s.padding, s.borderRadius, s.display, s.fontSize,
                s.boxShadow, s.margin]; };
    return ['body', '.intro', '.msg', '#host-button', '#host-link']
        .map((q) => look(document.querySelector(q)));
}"""


def test_no_style_leaks_either_way(browser, serve, sqlite_settings, blogs):
    blog, _ = blogs
    served = serve(sqlite_settings.replace(allowed_origins=blog.origin))
    plain_css = HOSTILE_CSS.replace("div, [role=dialog] { display: none !important; }", "")
    plain_css = plain_css.replace("arsonor-widget { display: none !important; }", "")
    blog.pages["/"] = page_html(tag=widget_tag(served.url), css=HOSTILE_CSS)
    blog.pages["/without"] = page_html(css=plain_css.replace("display: none !important;", ""))
    blog.pages["/with"] = page_html(tag=widget_tag(served.url),
                                    css=plain_css.replace("display: none !important;", ""))
    page = browser.new_page(viewport={"width": 1280, "height": 900})

    # blog -> widget: the hostile theme changes nothing in the button or the panel
    page.goto(blog.origin + "/")
    button = page.locator(BUTTON)
    expect(button).to_be_visible()
    look = button.evaluate("""(b) => { const s = getComputedStyle(b);
        return [s.color, s.backgroundColor, s.paddingTop, s.paddingLeft, s.fontFamily, s.letterSpacing]; }""")
    assert look[:4] == ["rgb(255, 255, 255)", "rgb(194, 65, 12)", "12px", "18px"]
    assert "Comic" not in look[4] and look[5] == "normal"
    frame = open_widget(page)
    box = page.locator(IFRAME).bounding_box()
    assert box["width"] == 400 and box["height"] == 640
    assert page.locator(IFRAME).evaluate("(f) => getComputedStyle(f).borderTopWidth") == "0px"
    inside = frame.locator("body").evaluate("""(b) => { const s = getComputedStyle(b);
        return [s.color, s.fontFamily, s.letterSpacing]; }""")
    assert inside[0] == "rgb(31, 35, 40)" and "Comic" not in inside[1] and inside[2] == "normal"
    send = frame.locator("#send").evaluate("(b) => getComputedStyle(b).backgroundColor")
    assert send == "rgb(194, 65, 12)"

    # widget -> blog: the blog's elements look the same with and without the widget open
    page.goto(blog.origin + "/without")
    without = page.evaluate(HOST_PROBES)
    page.goto(blog.origin + "/with")
    open_widget(page)
    assert page.evaluate(HOST_PROBES) == without
    assert page.evaluate("document.styleSheets.length") == 1  # only the blog's own
    page.close()


# -- framing rules ------------------------------------------------------------------------


def frame_state(page, src: str, timeout: float = 15.0) -> str:
    """"loaded" when the framed page's chat is there, "blocked" when Chromium refused it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for frame in page.frames[1:]:
            if frame.url.startswith("chrome-error://"):
                return "blocked"
            if frame.url == src:
                try:
                    if frame.locator("#question").count():
                        return "loaded"
                except Exception:  # noqa: BLE001 - the frame navigated meanwhile
                    pass
        time.sleep(0.1)
    return "timeout"


def test_framing_allowed_for_the_embed_page_from_allowed_origins_only(browser, serve,
                                                                      sqlite_settings, blogs):
    allowed, refused = blogs
    served = serve(sqlite_settings.replace(allowed_origins=allowed.origin))
    cases = [(allowed, "/embed?lang=fr", "loaded"), (refused, "/embed?lang=fr", "blocked"),
             (allowed, "/", "blocked"), (allowed, "/dashboard", "blocked")]
    for blog, path, expected in cases:
        src = served.url + path
        blog.pages["/frame"] = page_html(body=f'<iframe src="{src}" width="400" height="600"></iframe>')
        page = browser.new_page()
        console: list[str] = []
        page.on("console", lambda m: console.append(m.text))
        page.goto(blog.origin + "/frame")
        assert frame_state(page, src) == expected, (blog.origin, path)
        if expected == "blocked":
            deadline = time.monotonic() + 5
            while not any("frame-ancestors" in m for m in console) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert any("frame-ancestors" in m for m in console), console
        page.close()


# -- hostile text in the widget -----------------------------------------------------------

PAYLOADS = [
    '<img src=x onerror="window.__pwned=1;alert(1)">',
    '</script><script>window.__pwned=2;alert(2)</script>',
    '[clic](javascript:window.__pwned=3) <a href="javascript:alert(3)">lien</a> compresseur',
]


def test_widget_renders_script_payloads_as_text(browser, serve, sqlite_settings, blogs):
    blog, _ = blogs
    served = serve(sqlite_settings.replace(allowed_origins=blog.origin))
    blog.pages["/"] = page_html(tag=widget_tag(served.url))
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(blog.origin + "/")
    frame = open_widget(page)
    embed = next(f for f in page.frames if "/embed" in f.url)
    embed.evaluate("""() => { window.__violations = [];
        document.addEventListener('securitypolicyviolation', (e) => window.__violations.push(e.violatedDirective)); }""")
    for i, payload in enumerate(PAYLOADS):
        frame.locator("#question").fill(payload)
        frame.locator("#question").press("Enter")
        expect(frame.locator(".msg-bot").nth(i).locator(".meta:not([hidden]), .error:not([hidden])")).to_be_visible(
            timeout=ANSWER_TIMEOUT)
        expect(frame.locator(".msg-user .bubble").nth(i)).to_have_text(payload)
    thread = frame.locator("#thread")
    assert thread.locator("img").count() == 0 and thread.locator("script").count() == 0
    assert thread.locator("a[href^='javascript']").count() == 0
    assert embed.evaluate("window.__pwned") is None and page.evaluate("window.__pwned") is None
    assert embed.evaluate("window.__violations") == []  # nothing even tried to run
    assert dialogs == []
    page.close()


# -- the reply contract: sources by article, declined answers, notices ---------------------

GROUPED_REPLY = {
    "answer": "Attaque courte [1], release selon le tempo [3]. Le ratio [2].",
    "conversation_id": "c" * 32, "exchange_id": "e" * 32, "mode": "extractive", "model": None,
    "response_time": 0.2, "language": "en", "covered": True, "related": [],
    "notices": [{"code": "quoted_in_french", "message": "Passages quoted in French"},
                {"code": "something_new", "message": "<b>un avis</b> du serveur"}],
    "sources": [
        {"article_id": "a1", "title": "<img src=x onerror=alert(1)>Compresseur",
         "url": "/articles/a1",
         "passages": [{"n": 1, "chunk_id": "a1-0", "score": 0.9, "excerpt": "L'attaque <script>…"},
                      {"n": 3, "chunk_id": "a1-4", "score": 0.7, "excerpt": "Le release…"}]},
        {"article_id": "a2", "title": "Le ratio", "url": "javascript:alert(2)",
         "passages": [{"n": 2, "chunk_id": "a2-1", "score": 0.8, "excerpt": "Un ratio de 4:1"}]},
    ],
}
DECLINED_REPLY = {
    "answer": "Le blog ne traite pas de cette question.", "conversation_id": "d" * 32,
    "exchange_id": "f" * 32, "mode": "extractive", "model": None, "response_time": 0.1,
    "language": "fr", "covered": False, "sources": [],
    "related": [{"title": "Bien choisir son micro", "url": "/articles/r1"},
                {"title": "Piège", "url": "javascript:alert(3)"}],
    "notices": [{"code": "llm_budget_reached", "message": "Budget atteint"}],
}


@pytest.mark.parametrize("where", ["widget", "chat page"])
def test_the_new_reply_contract_renders(browser, serve, sqlite_settings, blogs, where):
    """Replies of the new contract (grouped sources, covered, related, notices) scripted with
    Playwright's routing: the back-end that sends them is built in another branch."""
    blog, _ = blogs
    served = serve(sqlite_settings.replace(allowed_origins=blog.origin))
    blog.pages["/"] = page_html(tag=widget_tag(served.url, "en"))
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")
    replies = [GROUPED_REPLY, DECLINED_REPLY]
    context.route(served.url + "/question", lambda route: route.fulfill(
        status=200, content_type="application/json", body=json.dumps(replies.pop(0))))
    page = context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    if where == "widget":
        page.goto(blog.origin + "/")
        ui = open_widget(page)
    else:
        page.goto(served.url + "/")
        ui = page
    ui.locator("#question").fill("attack and release?")
    ui.locator("#question").press("Enter")
    first = ui.locator(".msg-bot").first
    expect(first.locator(".meta")).to_be_visible()
    items = first.locator(".sources-list > li.source")
    expect(items).to_have_count(2)
    expect(items.nth(0).locator(".source-title a")).to_have_text(
        "<img src=x onerror=alert(1)>Compresseur")
    expect(items.nth(0).locator(".passage-n")).to_have_text(["1", "3"])
    expect(items.nth(0).locator(".excerpt")).to_have_text(["L'attaque <script>…", "Le release…"])
    expect(items.nth(1).locator(".passage-n")).to_have_text(["2"])
    assert items.nth(1).locator("a").count() == 0  # a javascript: URL is no link
    expect(items.nth(1).locator(".source-title")).to_have_text("Le ratio")
    cites = first.locator(".answer a.cite")
    expect(cites).to_have_text(["1", "3"])  # [2] has no safe link: left as text
    expect(first.locator(".answer")).to_contain_text("Le ratio [2].")
    expect(first.locator(".notice")).to_have_text(["Passages quoted from the blog in French",
                                                   "<b>un avis</b> du serveur"])
    expect(first.locator(".related")).to_be_hidden()
    assert first.get_attribute("data-covered") == "true"

    ui.locator("#question").fill("which microphone for a choir?")
    ui.locator("#question").press("Enter")
    declined = ui.locator(".msg-bot").nth(1)
    expect(declined.locator(".meta")).to_be_visible()
    assert declined.get_attribute("data-covered") == "false"
    expect(declined.locator(".sources")).to_be_hidden()
    expect(declined.locator(".related-title")).to_have_text("Related articles")
    expect(declined.locator(".related-list a")).to_have_text(["Bien choisir son micro"])
    expect(declined.locator(".notice")).to_have_text(
        ["Today's spending cap is reached: the answer is made of excerpts from the articles"])
    assert first.locator("img, b").count() == 0 and declined.locator("img, b").count() == 0
    assert dialogs == []
    context.close()
