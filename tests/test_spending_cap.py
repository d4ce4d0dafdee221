"""LLM_DAILY_BUDGET_USD: today's (UTC) LLM cost from the log, and answers turning extractive
once it reaches the budget — against the local OpenAI-compatible server, with a priced model
(gpt-4: $30 / $60 per million tokens) and a budget one answer exhausts."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from assistant.conversation_log import Exchange, open_store
from assistant.spending import NOTICE_CODE, SpendingCap
from assistant.web import create_app

UTC = timezone.utc


class Clock:
    """The cap's idea of now, moved by the test (the log's rows carry their own times)."""

    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def store(tmp_path):
    with open_store("", data_dir=tmp_path) as store:
        yield store


def test_today_is_read_from_the_log_answers_and_judge(store):
    now = datetime(2026, 12, 2, 15, 0, tzinfo=UTC)
    store.save_exchange(Exchange(question="hier", cost=5.0, created_at=now - timedelta(days=1)))
    store.save_exchange(Exchange(question="juste avant minuit", cost=1.0,
                                 created_at=datetime(2026, 12, 1, 23, 59, 59, tzinfo=UTC)))
    store.save_exchange(Exchange(question="ce matin", cost=0.25, judge_cost=0.05,
                                 created_at=datetime(2026, 12, 2, 0, 0, 1, tzinfo=UTC)))
    store.save_exchange(Exchange(question="coût inconnu", cost=None, created_at=now))
    cap = SpendingCap(store, 0.5, clock=Clock(now))
    assert cap.spent_today() == pytest.approx(0.30)
    assert cap.allows_llm()
    assert cap.status() == {"budget_usd": 0.5, "spent_today_usd": 0.3, "capped": False}


def test_logged_exchanges_count_at_once_and_the_read_is_cached(store):
    now = datetime(2026, 12, 2, 15, 0, tzinfo=UTC)
    cap = SpendingCap(store, 1.0, clock=Clock(now), read_every=3600)
    assert cap.spent_today() == 0
    exchange = Exchange(question="q", cost=0.6, created_at=now)
    store.save_exchange(exchange)
    assert cap.spent_today() == 0  # the cached read does not see it...
    cap.exchange(exchange, True)  # ...but the observer does
    cap.judged("RELEVANT", None, 0.4)
    assert cap.spent_today() == pytest.approx(1.0)
    assert not cap.allows_llm() and cap.status()["capped"]


def test_the_cap_lifts_the_next_utc_day(store):
    clock = Clock(datetime(2026, 12, 2, 23, 59, tzinfo=UTC))
    store.save_exchange(Exchange(question="q", cost=2.0, created_at=clock.now))
    cap = SpendingCap(store, 1.0, clock=clock, read_every=3600)
    assert not cap.allows_llm()
    clock.now = datetime(2026, 12, 3, 0, 0, 1, tzinfo=UTC)
    assert cap.allows_llm() and cap.spent_today() == 0


def test_a_log_outage_keeps_counting_in_memory(tmp_path):
    store = open_store("postgresql://nobody@127.0.0.1:1/none?connect_timeout=1", data_dir=tmp_path)
    cap = SpendingCap(store, 1.0, read_every=0)
    assert cap.spent_today() == 0  # unreadable: nothing known yet, answers go on
    cap.exchange(Exchange(question="q", cost=1.5), False)
    assert not cap.allows_llm()
    store.close()


# -- against the local OpenAI-compatible server ---------------------------------------------


@pytest.fixture
def capped_app(demo_index_settings, tmp_path, openai_stub, llm_reply):
    openai_stub.model = "gpt-4"
    openai_stub.reply = llm_reply(answer="Un VCO est un oscillateur commandé en tension [1].")
    settings = demo_index_settings.replace(
        data_dir=str(tmp_path / "var"), openai_base_url=openai_stub.url, llm_model="gpt-4",
        judge_enabled=False, llm_daily_budget_usd=0.001, rate_limit="off")
    app = create_app({"SETTINGS": settings, "TESTING": True})
    yield app
    app.extensions["assistant"].close()


def answer_requests(stub) -> int:
    return sum(1 for body in stub.requests if "expert evaluator" not in json.dumps(body))


def test_the_cap_bites_then_answers_are_extractive(capped_app, openai_stub):
    client = capped_app.test_client()
    first = client.post("/question", json={"question": "Qu'est-ce qu'un VCO ?"}).get_json()
    assert first["mode"] == "llm" and first["model"] == "gpt-4"
    assert first["cost"] > 0.001  # gpt-4's price: one answer spends the whole budget
    assert first["notices"] == []
    assert answer_requests(openai_stub) == 1

    health = client.get("/health").get_json()["llm"]
    assert health["budget_usd"] == 0.001 and health["capped"] is True
    assert health["spent_today_usd"] == pytest.approx(first["cost"], rel=1e-3)

    second = client.post("/question",
                         json={"question": "Comment régler un compresseur ?"}).get_json()
    assert second["mode"] == "extractive" and second["cost"] in (0, 0.0, None)
    assert second["answer"] and second["sources"]
    assert [n["code"] for n in second["notices"]] == [NOTICE_CODE]
    assert "budget" in second["notices"][0]["message"]
    assert answer_requests(openai_stub) == 1  # no LLM call at all: no rewrite, no answer

    english = client.post("/question", json={"question": "What is a VCO and how does it work?"})
    notice = english.get_json()["notices"][-1]
    assert notice["code"] == NOTICE_CODE and "Today's budget" in notice["message"]

    # A follow-up of the first (LLM) conversation is answered too, extractively.
    follow = client.post("/question", json={"question": "et le VCF ?",
                                            "conversation_id": first["conversation_id"]})
    assert follow.status_code == 200 and follow.get_json()["turn"] == 2

    # The stream's done event carries the notice as well.
    stream = client.post("/question?stream=1", json={"question": "Qu'est-ce qu'un LFO ?"})
    events = [block for block in stream.get_data(as_text=True).split("\n\n") if block]
    done = json.loads(events[-1].split("data: ", 1)[1])
    assert events[-1].startswith("event: done") and done["notices"][-1]["code"] == NOTICE_CODE
    assert answer_requests(openai_stub) == 1

    metrics = client.get("/metrics").get_data(as_text=True)
    assert "arsonor_llm_budget_capped 1.0" in metrics
    assert "arsonor_llm_budget_usd 0.001" in metrics

    store = capped_app.extensions["assistant"].store
    modes = [e.mode for e in store.recent(10)]
    assert modes.count("llm") == 1 and modes.count("extractive") == 4


def test_under_the_budget_nothing_changes(demo_index_settings, tmp_path, openai_stub, llm_reply):
    openai_stub.reply = llm_reply()
    settings = demo_index_settings.replace(
        data_dir=str(tmp_path / "var"), openai_base_url=openai_stub.url, llm_model="gpt-4o-mini",
        judge_enabled=False, llm_daily_budget_usd=5.0, rate_limit="off")
    app = create_app({"SETTINGS": settings, "TESTING": True})
    try:
        client = app.test_client()
        for question in ("Qu'est-ce qu'un VCO ?", "Comment régler un compresseur ?"):
            reply = client.post("/question", json={"question": question}).get_json()
            assert reply["mode"] == "llm" and reply["notices"] == []
        assert client.get("/health").get_json()["llm"]["capped"] is False
    finally:
        app.extensions["assistant"].close()


def prompt_tokens(body: dict) -> int:
    """What the stub counts for a request's prompt (evaluation.openai_stub)."""
    return max(1, len("".join(str(m.get("content") or "") for m in body["messages"])) // 4)


def test_the_llm_reranker_is_billed_to_the_exchange_and_stops_at_the_cap(
        demo_index_settings, tmp_path, openai_stub, llm_reply):
    from evaluation.openai_stub import rerank_reply

    openai_stub.model = "gpt-4"
    openai_stub.reply = llm_reply(answer="Un VCO est un oscillateur commandé en tension [1].")
    openai_stub.script(rerank_reply())
    settings = demo_index_settings.replace(
        data_dir=str(tmp_path / "var"), openai_base_url=openai_stub.url, llm_model="gpt-4",
        judge_enabled=False, llm_daily_budget_usd=0.001, rate_limit="off", llm_rerank=True)
    app = create_app({"SETTINGS": settings, "TESTING": True})
    try:
        client = app.test_client()
        first = client.post("/question", json={"question": "Qu'est-ce qu'un VCO ?"}).get_json()
        rerank, answer = openai_stub.requests
        assert "<passage number=" in rerank["messages"][-1]["content"]
        both = prompt_tokens(rerank) + prompt_tokens(answer)
        assert first["mode"] == "llm" and first["tokens"]["prompt"] == both
        assert first["cost"] > 30 * both / 1e6  # gpt-4: $30 per million prompt tokens, + replies
        logged = app.extensions["assistant"].store.recent(1)[0]
        assert (logged.prompt_tokens, logged.cost) == (both, pytest.approx(first["cost"]))

        second = client.post("/question", json={"question": "Comment régler un compresseur ?"})
        assert [n["code"] for n in second.get_json()["notices"]] == [NOTICE_CODE]
        assert len(openai_stub.requests) == 2  # past the budget: no rerank call either
    finally:
        app.extensions["assistant"].close()
