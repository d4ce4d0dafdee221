"""``GET /metrics``: Prometheus counters and histograms move with questions, feedback and LLM
use; each app has its own registry."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from assistant.web import create_app


def scrape(client) -> dict:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    samples = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def make_app(settings, tmp_path, name="var", **overrides):
    return create_app({"SETTINGS": settings.replace(data_dir=str(tmp_path / name), **overrides),
                       "TESTING": True})


def test_counters_move_after_a_question_and_feedback(demo_index_settings, tmp_path):
    app = make_app(demo_index_settings, tmp_path)
    client = app.test_client()
    before = scrape(client)
    body = client.post("/question", json={"question": "What is a VCO?"}).get_json()
    client.post("/feedback", json={"conversation_id": body["conversation_id"], "feedback": 1})
    client.post("/feedback", json={"conversation_id": body["conversation_id"], "feedback": -1})
    client.post("/question", json={"question": ""})
    after = scrape(client)

    def moved(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("arsonor_http_requests_total", endpoint="/question", method="POST", status="200") == 1
    assert moved("arsonor_http_requests_total", endpoint="/question", method="POST", status="400") == 1
    assert moved("arsonor_http_requests_total", endpoint="/feedback", method="POST", status="200") == 2
    assert moved("arsonor_exchanges_total", mode="extractive", status="ok") == 1
    assert moved("arsonor_feedback_total", value="1") == 1
    assert moved("arsonor_feedback_total", value="-1") == 1
    assert moved("arsonor_retrieval_seconds_count") == 1
    assert moved("arsonor_retrieval_seconds_sum") > 0
    assert moved("arsonor_answer_seconds_count", mode="extractive") == 1
    assert moved("arsonor_http_request_seconds_count", endpoint="/question") == 2
    assert moved("arsonor_llm_tokens_total", kind="prompt", purpose="answer") == 0
    app.extensions["assistant"].close()


def test_llm_tokens_and_cost_are_counted(demo_index_settings, tmp_path, openai_stub, llm_reply):
    openai_stub.reply = llm_reply()
    app = make_app(demo_index_settings, tmp_path, openai_base_url=openai_stub.url,
                   openai_api_key="sk-test", judge_enabled=False)
    client = app.test_client()
    body = client.post("/question", json={"question": "Qu'est-ce qu'un VCO ?"}).get_json()
    samples = scrape(client)
    assert value(samples, "arsonor_llm_tokens_total", kind="prompt", purpose="answer") == body["tokens"]["prompt"]
    assert value(samples, "arsonor_llm_tokens_total", kind="completion", purpose="answer") == body["tokens"]["completion"]
    assert value(samples, "arsonor_llm_cost_usd_total", purpose="answer") == body["cost"] > 0
    assert value(samples, "arsonor_llm_seconds_count") == 1
    assert value(samples, "arsonor_exchanges_total", mode="llm", status="ok") == 1
    app.extensions["assistant"].close()


def test_each_app_has_its_own_registry(demo_index_settings, tmp_path):
    first = make_app(demo_index_settings, tmp_path, "a")
    second = make_app(demo_index_settings, tmp_path, "b")
    first.test_client().get("/health")
    first.test_client().get("/health")
    assert value(scrape(first.test_client()), "arsonor_http_requests_total",
                 endpoint="/health", method="GET", status="200") == 2
    assert value(scrape(second.test_client()), "arsonor_http_requests_total",
                 endpoint="/health", method="GET", status="200") == 0
