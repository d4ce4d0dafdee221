"""The OpenAPI document is complete (every route of the app, pages included; every response
with its X-Request-ID header; errors as JSON) and describes the SSE reply event by event, with
a checker for the stream's grammar and order. No index needed (the fast tier)."""

from __future__ import annotations

import json
import re

import jsonschema_rs
import pytest

from assistant.web import create_app
from assistant.web.openapi import SSE_EVENTS, SSE_PATTERN, check_sse, openapi_document


@pytest.fixture
def app(tmp_path):
    app = create_app({"data_dir": str(tmp_path), "TESTING": True})
    yield app
    app.extensions["assistant"].close()


def validate_with(document):
    def validate(data, schema):
        jsonschema_rs.validator_for({**schema, "components": document["components"]}).validate(data)
    return validate


def test_every_route_is_documented_with_its_methods(app):
    paths = app.test_client().get("/openapi.json").get_json()["paths"]
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        assert path in paths, f"{path} missing from /openapi.json"
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert method.lower() in paths[path], f"{method} {path} undocumented"


def test_every_response_names_its_headers_and_errors_are_json():
    document = openapi_document()
    for path, item in document["paths"].items():
        for method, operation in item.items():
            responses = operation["responses"]
            assert {"400", "405", "413", "431", "500"} <= set(responses), (method, path)
            for code, response in responses.items():
                assert "X-Request-ID" in response["headers"], (method, path, code)
                if int(code) >= 400 and path not in ("/articles/{article_id}", "/login"):
                    # JSON for machines; a person's browser may get the page instead
                    assert "application/json" in response["content"], (path, code)
                    assert set(response["content"]) <= {"application/json", "text/html"}
    assert "Allow" in document["paths"]["/health"]["get"]["responses"]["405"]["headers"]


def test_the_sse_reply_is_described_event_by_event():
    document = openapi_document()
    media = document["paths"]["/question"]["post"]["responses"]["200"]["content"]
    stream = media["text/event-stream"]
    events = {branch["properties"]["event"]["const"]: branch["properties"]["data"]
              for branch in stream["schema"]["oneOf"]}
    assert set(events) == set(SSE_EVENTS) == {"sources", "token", "done", "error"}
    assert all(d["contentMediaType"] == "application/json" for d in events.values())
    assert stream["x-sse-grammar"] == SSE_PATTERN

    validate = validate_with(document)
    sources = {"conversation_id": "a" * 32, "exchange_id": "b" * 32, "covered": True,
               "sources": [], "related": []}
    answer = {"conversation_id": "a" * 32, "exchange_id": "b" * 32, "question": "q",
              "answer": "a [1]", "sources": [], "mode": "extractive", "model": None,
              "response_time": 0.1, "tokens": {"prompt": 0, "completion": 0, "total": 0},
              "cost": 0.0, "notices": [], "covered": True, "related": []}

    def sse(*events):
        return "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events)

    good = sse(("sources", sources), ("token", {"text": "a"}), ("done", answer))
    assert [name for name, _ in check_sse(good, validate)] == ["sources", "token", "done"]
    check_sse(sse(("sources", sources), ("error", {"error": "LLM down", "status": 502})), validate)
    check_sse(sse(("sources", sources), ("token", {"text": "a"})), validate, complete=False)
    for bad in (sse(("token", {"text": "a"}), ("done", answer)),  # no sources first
                sse(("sources", sources), ("token", {"text": "a"})),  # no end
                sse(("sources", sources), ("done", answer), ("token", {"text": "late"})),
                sse(("sources", sources), ("token", {"text": 3}), ("done", answer)),  # schema
                sse(("sources", sources), ("done", {**answer, "mode": "magic"})),
                "event: sources\ndata: {}\n",  # the grammar
                sse(("sources", sources)) + "event: weird\ndata: {}\n\n"):
        with pytest.raises((ValueError, jsonschema_rs.ValidationError)):
            check_sse(bad, validate)
