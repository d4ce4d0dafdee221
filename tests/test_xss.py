"""Whatever came from a reader or from the corpus is rendered as text, never as HTML: questions
and feedback comments carrying script payloads, and an article whose title is markup and whose
URL is ``javascript:``, shown on the chat page and on the dashboard in Chromium. No script of
the payloads runs (``window.__pwned`` never set, no dialog) and the payloads show as text.

The app (``create_app``) over a tiny real index (real embedder), extractive answers, a real
SQLite log; Chromium through Playwright as in tests/test_browser.py."""

from __future__ import annotations

import pytest

from tests.conftest import index_corpus

pytestmark = pytest.mark.slow

from playwright.sync_api import expect

from assistant.web import create_app
from tests.fixtures_browser import ANSWER_TIMEOUT, Served

PWN = "window.__pwned=1"
PAYLOADS = [
    f'<img src=x onerror="{PWN};alert(1)"> le compresseur ?',
    f"</script><script>{PWN};alert(2)</script> attaque du compresseur ?",
    f"[clique ici](javascript:{PWN}) javascript:{PWN} compresseur ?",
    f'"><svg onload="{PWN}"> compresseur <a href="javascript:{PWN}">lien</a> ?',
]
ARTICLES = [
    {"article_id": "cc000001", "title": f'Le compresseur <img src=x onerror="{PWN}">',
     "url": f"javascript:{PWN}", "category": "LA POST-PROD", "tags": "compression",
     "text": "L'attaque d'un compresseur règle la vitesse à laquelle il réagit. "
             f"<script>{PWN}</script> Une attaque lente laisse passer les transitoires."},
    {"article_id": "cc000002", "title": "Le filtre passe-bas", "url": "/articles/cc000002",
     "category": "LE SOUND DESIGN", "tags": "filtre",
     "text": "Le filtre passe-bas atténue les aigus au-dessus de la fréquence de coupure."},
]


@pytest.fixture(scope="module")
def hostile_corpus(tmp_path_factory):
    return index_corpus(tmp_path_factory.mktemp("xss"), ARTICLES)


def watch(page) -> list[str]:
    """Dialogs opened and script errors: both must stay empty."""
    seen: list[str] = []
    page.on("dialog", lambda d: (seen.append(f"dialog: {d.message}"), d.dismiss()))
    page.on("pageerror", lambda e: seen.append(f"page error: {e}"))
    return seen


def assert_nothing_ran(page, seen: list[str]) -> None:
    assert page.evaluate("window.__pwned") is None
    assert seen == []
    # No element of a payload became markup: no injected img/svg/script, no javascript: link.
    assert page.evaluate("""() => Array.from(document.querySelectorAll(
        'img[src="x"], svg[onload], [onerror], [onload], body script:not([src])')).length""") == 0
    assert page.evaluate("""() => Array.from(document.querySelectorAll('a[href]'))
        .filter(a => a.href.trim().toLowerCase().startsWith('javascript:')).length""") == 0


def test_script_payloads_show_as_text_on_the_chat_page_and_the_dashboard(
        browser, hostile_corpus, tmp_path):
    settings = hostile_corpus.replace(data_dir=str(tmp_path / "var"))
    served = Served(create_app({"SETTINGS": settings, "TESTING": True}))
    try:
        context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="fr-FR")
        page = context.new_page()
        seen = watch(page)
        page.goto(served.url + "/")
        for n, payload in enumerate(PAYLOADS):
            page.fill("#question", payload)
            page.press("#question", "Enter")
            answer = page.locator(".msg-bot").nth(n)
            expect(answer.locator(".meta")).to_be_visible(timeout=ANSWER_TIMEOUT)
            expect(page.locator(".msg-user .bubble").nth(n)).to_have_text(payload)
        # The hostile article is a source: its title shows as text, its javascript: URL is no link.
        expect(page.locator(".msg-bot").first).to_contain_text("Le compresseur <img src=x")
        assert_nothing_ran(page, seen)

        # Feedback comments with payloads, on the answers just given.
        store = served.app.extensions["assistant"].store
        recent = store.recent(limit=10)
        assert len(recent) == len(PAYLOADS)
        for exchange, payload in zip(recent, PAYLOADS):
            status = page.evaluate("""async ([id, comment]) => (await fetch('/feedback', {
                method: 'POST', headers: {'Content-Type': 'application/json'},
                body: JSON.stringify({exchange_id: id, feedback: -1, comment})})).status""",
                                   [exchange.id, payload])
            assert status == 200

        page.goto(served.url + "/dashboard")
        expect(page.locator("#dashboard")).to_have_attribute("data-loaded", "true")
        questions = page.locator("#last-table tbody tr .c-question")
        expect(questions).to_have_count(len(PAYLOADS))
        shown = sorted(questions.all_text_contents())
        assert shown == sorted(PAYLOADS)
        assert_nothing_ran(page, seen)

        # The control: the same payload inserted as HTML runs on a page without our CSP, so the
        # checks above can fail ...
        insert = "html => document.body.insertAdjacentHTML('beforeend', html)"
        bare = context.new_page()
        bare.set_content("<!doctype html><html><body></body></html>")
        bare.evaluate(insert, PAYLOADS[0])
        bare.wait_for_function("() => window.__pwned === 1", timeout=5000)
        # ... while on our page the CSP stops it even inserted as HTML: the second line of defence.
        page.evaluate(insert, PAYLOADS[0])
        page.wait_for_timeout(500)
        assert page.evaluate("() => window.__pwned") is None
        context.close()
    finally:
        served.close()
