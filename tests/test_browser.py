"""The pages in a real browser (Debian's Chromium through Playwright) against the real app:
``create_app`` over an embedded index of the demo corpus (``demo_index_settings``), extractive
answers, and a real conversation log (SQLite file and PostgreSQL).

The app is served by werkzeug on 127.0.0.1 (a free port) in a thread. Screenshots go to
``$ARSONOR_SCREENSHOTS`` (else a temporary directory): chat page on desktop and at 375 px,
dashboard on desktop and at 375 px.
"""

from __future__ import annotations

import os
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

pytestmark = pytest.mark.slow

from playwright.sync_api import expect  # noqa: E402

from assistant.conversation_log import Exchange, open_store  # noqa: E402
from tests.fixtures_browser import ANSWER_TIMEOUT, CITATION, cited_numbers  # noqa: E402,F401

UTC = timezone.utc


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    directory = os.environ.get("ARSONOR_SCREENSHOTS")
    path = Path(directory) if directory else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


def query(store, sql: str, params: tuple = ()) -> list[tuple]:
    return store.read(lambda cur: cur.execute(sql, params).fetchall())


def watch_errors(page) -> list[str]:
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}")
            if m.type == "error" else None)
    page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
    return errors


def ask(page, question: str, index: int):
    """Type a question, send it with Enter, wait for the index-th answer to be complete."""
    page.fill("#question", question)
    page.press("#question", "Enter")
    answer = page.locator(".msg-bot").nth(index)
    expect(answer.locator(".meta")).to_be_visible(timeout=ANSWER_TIMEOUT)
    return answer


def shown_text(answer: str) -> str:
    """The answer as the page shows it: each citation [n] (or [n, m]) becomes its number badge."""
    return CITATION.sub(lambda m: "".join(re.split(r"\s*[,;]\s*", m.group(1))), answer)


def cited_by_article(sources: list[dict], cited: list[int]) -> dict[str, list[int]]:
    """The cited passage numbers of each article, articles in the order of their first passage
    in the reply (how the page lists them)."""
    order = dict.fromkeys(s["article_id"] for s in sources)
    grouped = {a: [n for n in cited if sources[n - 1]["article_id"] == a] for a in order}
    return {a: numbers for a, numbers in grouped.items() if numbers}


def no_horizontal_scroll(page) -> None:
    width = page.evaluate("window.innerWidth")
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    assert page.evaluate("document.body.scrollWidth") <= width
    overflowing = page.evaluate("""(w) => Array.from(document.querySelectorAll('body *'))
        .filter(e => e.offsetParent !== null && !e.closest('.table-wrap'))
        .filter(e => { const r = e.getBoundingClientRect(); return r.right > w + 1 || r.left < -1; })
        .map(e => e.tagName + '.' + e.className).slice(0, 5)""", width)
    assert overflowing == []


# -- the chat ---------------------------------------------------------------------------------


def test_chat_streams_cites_takes_feedback_and_follows_up(browser, serve, app_settings, shots):
    served = serve(app_settings)
    store = open_store(app_settings.database_url, data_dir=app_settings.data_dir)
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="fr-FR")
    page = context.new_page()
    errors = watch_errors(page)
    page.goto(served.url + "/")
    expect(page.locator("h1")).to_have_text("Posez votre question sur le home studio")
    assert page.evaluate("document.documentElement.lang") == "fr"

    # -- first question: streamed, then its cited sources as links ----------------------------
    first = ask(page, "Comment régler l'attaque et le release d'un compresseur ?", 0)
    expect(page.locator(".msg-user .bubble").first).to_have_text(
        "Comment régler l'attaque et le release d'un compresseur ?")
    conversation_id = page.evaluate("window.ArsonorChat.conversationId()")
    assert re.fullmatch(r"[0-9a-f]{32}", conversation_id)
    assert int(first.get_attribute("data-tokens")) > 1  # the answer came in token events
    assert first.get_attribute("data-mode") == "extractive"
    expect(first.locator(".mode")).to_contain_text("Extraits des articles")
    expect(first.locator(".answer")).not_to_have_class(re.compile("streaming"))

    rows = query(store, "SELECT id, turn, answer, sources, mode FROM conversations "
                        "WHERE conversation_id = %s ORDER BY turn", (conversation_id,))
    assert len(rows) == 1
    exchange_id, turn, answer, sources, mode = rows[0]
    assert (turn, mode) == (1, "extractive")
    assert first.get_attribute("data-exchange-id") == exchange_id
    assert first.locator(".answer").text_content() == shown_text(answer)

    sources = store.get(exchange_id).sources
    cited = cited_numbers(answer)
    assert cited, answer
    # one entry per cited article, its cited passages' numbers under it
    by_article = cited_by_article(sources, cited)
    items = first.locator(".sources-list > li.source")
    expect(items).to_have_count(len(by_article))
    for i, (article_id, numbers) in enumerate(by_article.items()):
        item = items.nth(i)
        source = sources[numbers[0] - 1]
        assert item.get_attribute("data-article-id") == article_id
        expect(item.locator(".passage-n")).to_have_text([str(n) for n in numbers])
        link = item.locator(".source-title a")
        expect(link).to_have_text(source["title"])
        assert link.get_attribute("href") == source["url"] == f"/articles/{source['article_id']}"
        assert link.get_attribute("target") == "_blank"
        assert "noopener" in link.get_attribute("rel")
    citations = first.locator(".answer a.cite")
    assert citations.count() >= len(cited)
    for i in range(citations.count()):
        badge = citations.nth(i)
        number = int(badge.text_content())
        assert badge.get_attribute("href") == sources[number - 1]["url"]
        assert badge.get_attribute("target") == "_blank"

    # a source opens its article in a new tab
    with context.expect_page() as new_tab:
        items.first.locator(".source-title a").click()
    article = new_tab.value
    article.wait_for_load_state()
    first_cited = sources[next(iter(by_article.values()))[0] - 1]
    assert article.url == served.url + first_cited["url"]
    expect(article.locator("h1")).to_have_text(first_cited["title"])
    article.close()

    # -- follow-up in the same conversation -----------------------------------------------------
    second = ask(page, "Et le ratio, quelle valeur choisir ?", 1)
    assert page.evaluate("window.ArsonorChat.conversationId()") == conversation_id
    assert second.get_attribute("data-conversation-id") == conversation_id
    rows = query(store, "SELECT conversation_id, turn FROM conversations ORDER BY turn")
    assert rows == [(conversation_id, 1), (conversation_id, 2)]
    expect(second.locator(".thumb-up")).to_be_enabled()

    # -- thumbs up on the older answer: stored on that answer, thanked, buttons disabled -------
    expect(first.locator(".thumb-up")).to_be_enabled()
    first.locator(".thumb-up").click()
    expect(first.locator(".thanks")).to_have_text("Merci pour votre avis !")
    expect(first.locator(".thumb-up")).to_be_disabled()
    expect(first.locator(".thumb-down")).to_be_disabled()
    assert query(store, "SELECT conversation_id, exchange_id, feedback FROM feedback") == [
        (conversation_id, exchange_id, 1)]
    # a viewport shot at the end of the thread (full-page captures misplace the sticky composer)
    page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    page.screenshot(path=str(shots / f"chat-desktop-{store.backend}.png"))

    # -- thumbs down on the follow-up, then a new conversation ----------------------------------
    second.locator(".thumb-down").click()
    expect(second.locator(".thanks")).to_be_visible()
    feedback = query(store, "SELECT exchange_id, feedback FROM feedback ORDER BY id")
    assert feedback[-1] == (second.get_attribute("data-exchange-id"), -1)

    page.click("#new-conversation")
    expect(page.locator(".msg")).to_have_count(0)
    expect(page.locator("#intro")).to_be_visible()
    assert page.evaluate("window.ArsonorChat.conversationId()") is None
    page.select_option("#category", "LE SOUND DESIGN")
    third = ask(page, "Qu'est-ce qu'un LFO ?", 0)
    new_id = page.evaluate("window.ArsonorChat.conversationId()")
    assert new_id and new_id != conversation_id
    assert query(store, "SELECT turn, category FROM conversations WHERE conversation_id = %s",
                 (new_id,)) == [(1, "LE SOUND DESIGN")]
    expect(third.locator(".sources-list li").first).to_be_visible()
    assert errors == []
    context.close()
    store.close()


def test_a_question_the_blog_does_not_cover_is_declined_in_the_readers_language(
        browser, serve, app_settings):
    served = serve(app_settings)
    store = open_store(app_settings.database_url, data_dir=app_settings.data_dir)
    page = browser.new_page(viewport={"width": 1000, "height": 800}, locale="en-US")
    errors = watch_errors(page)
    page.goto(served.url + "/")
    declined = ask(page, "How do I bake a chocolate cake without eggs?", 0)
    assert declined.get_attribute("data-covered") == "false"
    expect(declined.locator(".answer")).to_contain_text("The blog does not cover this question")
    expect(declined.locator(".sources-list li")).to_have_count(0)
    assert query(store, "SELECT question, covered FROM conversations") == [
        ("How do I bake a chocolate cake without eggs?", False)]
    # the next question the blog covers is answered, its sources grouped by article
    covered = ask(page, "Qu'est-ce qu'un compresseur ?", 1)
    assert covered.get_attribute("data-covered") == "true"
    expect(covered.locator(".sources-list li").first).to_be_visible()
    numbers = covered.locator(".sources-list > li").evaluate_all(
        "items => items.map(li => li.dataset.numbers)")
    cited = [int(n) for entry in numbers for n in entry.split(",")]
    assert len(cited) == len(set(cited))  # each passage under one article only
    assert errors == []
    page.close()
    store.close()


def test_errors_are_shown_readably(browser, serve, app_settings):
    served = serve(app_settings)
    page = browser.new_page(viewport={"width": 1000, "height": 800}, locale="fr-FR")
    errors = watch_errors(page)
    page.goto(served.url + "/")
    page.fill("#question", "?!?")
    page.press("#question", "Enter")
    box = page.locator(".msg-bot .error")
    expect(box).to_be_visible(timeout=ANSWER_TIMEOUT)
    text = box.text_content()
    assert text.startswith("Désolé, la question n'a pas pu aboutir.")
    assert "only punctuation" in text and "{" not in text
    expect(page.locator(".msg-bot .meta")).to_be_hidden()
    # a server that cannot be reached: a plain sentence too
    page.route("**/question", lambda route: route.abort())
    page.fill("#question", "Qu'est-ce qu'un compresseur ?")
    page.press("#question", "Enter")
    expect(page.locator(".msg-bot .error").nth(1)).to_have_text(
        "Le serveur ne répond pas. Vérifiez votre connexion et réessayez.")
    assert [e for e in errors if e.startswith("page error")] == []
    page.close()


def test_phone_width_english_and_language_toggle(browser, serve, app_settings, shots):
    served = serve(app_settings)
    context = browser.new_context(viewport={"width": 375, "height": 812}, locale="en-US",
                                  is_mobile=True, has_touch=True, device_scale_factor=2)
    page = context.new_page()
    errors = watch_errors(page)
    page.goto(served.url + "/")
    # navigator.language is English: English labels
    expect(page.locator("h1")).to_have_text("Ask your home-studio question")
    expect(page.locator("#new-conversation")).to_have_text("New conversation")
    assert page.get_attribute("#question", "placeholder") == "Your question… (Enter to send)"
    assert page.evaluate("document.documentElement.lang") == "en"
    no_horizontal_scroll(page)
    page.locator(".example").first.click()  # the example questions ask straight away
    answer = page.locator(".msg-bot").first
    expect(answer.locator(".meta")).to_be_visible(timeout=ANSWER_TIMEOUT)
    expect(answer.locator(".mode")).to_contain_text("Excerpts from the articles")
    expect(answer.locator(".sources-list a").first).to_be_visible()
    no_horizontal_scroll(page)
    # viewport shots (a full-page capture would draw the sticky composer mid-page)
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(shots / "chat-phone-top.png"))
    page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    page.screenshot(path=str(shots / "chat-phone-end.png"))

    # FR/EN toggle, remembered across pages
    page.click("#lang-toggle")
    expect(page.locator("#new-conversation")).to_have_text("Nouvelle conversation")
    expect(answer.locator(".mode")).to_contain_text("Extraits des articles")
    expect(page.locator("#lang-toggle")).to_have_text("EN")
    page.goto(served.url + "/dashboard")
    expect(page.locator("h1")).to_have_text("Tableau de bord")
    assert errors == []
    context.close()


# -- the dashboard ----------------------------------------------------------------------------


def seed_log(store, now: datetime) -> list[Exchange]:
    """A day of exchanges written with the store's own calls: both modes, two models, an error,
    judge verdicts and feedback."""
    exchanges = []
    for i in range(12):
        llm = i % 3 != 0
        e = Exchange(conversation_id=f"conv-{i // 2}", turn=i % 2 + 1,
                     question=f"Question n°{i} : <b>pas du HTML</b> & co",
                     answer=f"Réponse n°{i}, citée [1].",
                     mode="llm" if llm else "extractive",
                     model=("gpt-4o-mini" if i % 2 else "gpt-4o") if llm else None,
                     response_time=0.4 + i * 0.3, retrieval_time=0.05 + i * 0.01,
                     llm_time=0.3 + i * 0.25 if llm else None,
                     prompt_tokens=300 + 10 * i if llm else 0,
                     completion_tokens=80 + i if llm else 0,
                     total_tokens=380 + 11 * i if llm else 0,
                     cost=0.0002 * (i + 1) if llm else None,
                     status="llm_error" if i == 7 else "ok",
                     error="timeout" if i == 7 else None,
                     created_at=now - timedelta(hours=23, minutes=7) + timedelta(hours=2 * i))
        store.save_exchange(e)
        exchanges.append(e)
    for i, verdict in ((1, "RELEVANT"), (2, "RELEVANT"), (4, "PARTLY_RELEVANT"),
                       (5, "NON_RELEVANT")):
        store.set_relevance(exchanges[i].id, verdict, "stub", prompt_tokens=200,
                            completion_tokens=30, cost=0.00005)
    for conversation, value in (("conv-0", 1), ("conv-1", 1), ("conv-2", -1)):
        store.save_feedback(value, conversation_id=conversation)
    return exchanges


def test_dashboard_draws_the_log(browser, serve, app_settings, shots):
    now = datetime.now(UTC)
    store = open_store(app_settings.database_url, data_dir=app_settings.data_dir)
    exchanges = seed_log(store, now)
    served = serve(app_settings)
    zone = "Australia/Adelaide"  # +10:30 / +09:30: times must be shown in the browser's zone
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="fr-FR",
                                  timezone_id=zone)
    page = context.new_page()
    errors = watch_errors(page)
    with page.expect_response(lambda r: "/dashboard/data?hours=24" in r.url) as response:
        page.goto(served.url + "/dashboard")
    assert response.value.status == 200
    expect(page.locator("#dashboard")).to_have_attribute("data-loaded", "true")

    # tiles
    expect(page.locator("#tile-exchanges")).to_have_text("12")
    expect(page.locator("#tile-pos")).to_have_text("2")
    expect(page.locator("#tile-neg")).to_have_text("1")
    expect(page.locator("#tile-error-rate")).to_have_text(re.compile(r"^8,3\s%$"))
    expect(page.locator("#tile-feedback-rate")).to_have_text(re.compile(r"^25\s%$"))

    # charts: one SVG per panel, lines for the time series, bars for the counts
    for chart in ("relevance", "modes", "models", "response", "retrieval", "cost", "tokens",
                  "errors"):
        expect(page.locator(f"#chart-{chart} svg")).to_have_count(1)
    assert page.locator("#chart-response svg path").count() == 2  # avg, p95
    assert page.locator("#chart-response svg circle").count() >= 12
    assert page.locator("#chart-tokens svg path").count() == 3
    assert page.locator("#chart-relevance svg rect.bar").count() == 4
    expect(page.locator("#chart-models svg .bar-label")).to_have_text(
        ["gpt-4o", "gpt-4o-mini", "aucun (extractif)"])

    # last conversations: newest first, times in the browser's zone, text not parsed as HTML
    rows = page.locator("#last-table tbody tr")
    expect(rows).to_have_count(12)
    newest = exchanges[-1]
    local = newest.created_at.astimezone(ZoneInfo(zone)).strftime("%d/%m/%Y %H:%M:%S")
    expect(rows.first.locator(".c-time")).to_have_text(local)
    expect(rows.first.locator(".c-question")).to_have_text(newest.question)
    assert page.locator("#last-table b").count() == 0
    expect(page.locator("#errors-table tbody tr")).to_have_count(1)
    expect(page.locator("#errors-table tbody td").first).to_have_text("llm_error")
    expect(page.locator("#tz-note")).to_contain_text(zone)
    page.screenshot(path=str(shots / f"dashboard-{store.backend}.png"), full_page=True)

    # another range refetches
    with page.expect_response(lambda r: "/dashboard/data?hours=1" in r.url):
        page.select_option("#range", "1")
    expect(page.locator("#tile-exchanges")).to_have_text("0")
    expect(page.locator("#last-table tbody tr")).to_have_count(1)  # the "no data" row
    with page.expect_response(lambda r: "/dashboard/data?hours=720" in r.url):
        page.select_option("#range", "720")
    expect(page.locator("#tile-exchanges")).to_have_text("12")

    # at 375 px: everything fits (wide tables scroll inside their panel)
    phone = context.new_page()
    phone.set_viewport_size({"width": 375, "height": 812})
    phone.goto(served.url + "/dashboard")
    expect(phone.locator("#dashboard")).to_have_attribute("data-loaded", "true")
    no_horizontal_scroll(phone)
    phone.screenshot(path=str(shots / f"dashboard-phone-{store.backend}.png"), full_page=True)
    assert errors == []
    context.close()
    store.close()
