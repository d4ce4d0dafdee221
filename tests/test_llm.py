"""The LLM client against a real local OpenAI-compatible server (evaluation/openai_stub.py)."""

from __future__ import annotations

import socket
import time

import pytest

from assistant.answering import prices
from assistant.answering.llm import (Completion, LLMClient, LLMError, LLMUnavailable, Usage, _Failure,
                                     llm_from_settings)
from assistant.config import Settings
from evaluation.openai_stub import OpenAIStub, delay, status, stream, stream_break

MESSAGES = [{"role": "system", "content": "Tu réponds en français."},
            {"role": "user", "content": "Quel niveau viser pour le streaming ?"}]


@pytest.fixture
def stub():
    with OpenAIStub(api_key="sk-test", reply="Visez -14 LUFS [1].") as s:
        yield s


def make(stub, **kw) -> LLMClient:
    options = {"api_key": "sk-test", "base_url": stub.url, "model": "gpt-4o-mini", "timeout": 5.0,
               "max_retries": 2, "backoff": 0.01}
    options.update(kw)
    return LLMClient(**options)


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


# -- plain completions --------------------------------------------------------------------

def test_complete_returns_text_usage_model_and_cost(stub):
    client = make(stub)
    result = client.complete(MESSAGES, max_tokens=200)

    assert isinstance(result, Completion)
    assert result.text == "Visez -14 LUFS [1]."
    assert result.model == "gpt-4o-mini"
    assert result.usage.known and result.usage.prompt_tokens > 0 and result.usage.completion_tokens > 0
    assert result.usage.total_tokens == result.usage.prompt_tokens + result.usage.completion_tokens
    expected = (result.usage.prompt_tokens * 0.15 + result.usage.completion_tokens * 0.60) / 1e6
    assert prices.cost(result.model, result.usage) == pytest.approx(expected)
    assert result.cost == pytest.approx(expected)

    (body,) = stub.requests
    assert body["model"] == "gpt-4o-mini" and body["messages"] == MESSAGES
    assert body["temperature"] == 0.2 and body["max_tokens"] == 200 and not body.get("stream")
    assert stub.calls[0]["headers"]["authorization"] == "Bearer sk-test"


def test_client_is_built_lazily_and_never_at_construction():
    client = LLMClient(api_key="", base_url=closed_port_url())  # nothing listens: no error yet
    assert client._client is None
    assert "127.0.0.1" in repr(client) and "sk-" not in repr(client)


def test_reply_function_answers_from_the_prompt(stub):
    stub.script(lambda body: "écho : " + body["messages"][-1]["content"])
    assert make(stub).complete(MESSAGES).text == "écho : Quel niveau viser pour le streaming ?"


def test_reasoning_models_get_max_completion_tokens_and_no_temperature(stub):
    make(stub, model="o4-mini").complete(MESSAGES, max_tokens=50)
    body = stub.requests[0]
    assert body["max_completion_tokens"] == 50 and "max_tokens" not in body and "temperature" not in body


# -- streaming --------------------------------------------------------------------------------

def test_stream_yields_deltas_then_one_completion_with_usage(stub):
    items = list(make(stub).stream(MESSAGES))
    *deltas, final = items

    assert len(deltas) > 1 and all(isinstance(d, str) for d in deltas)
    assert isinstance(final, Completion)
    assert "".join(deltas) == final.text == "Visez -14 LUFS [1]."
    assert final.usage.known and final.usage.completion_tokens > 0 and final.cost is not None
    assert final.finish_reason == "stop"
    body = stub.requests[0]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


def test_stream_without_usage_reports_unknown_usage_not_estimates(stub):
    stub.script(stream(usage=False))
    final = list(make(stub).stream(MESSAGES))[-1]
    assert final.text == "Visez -14 LUFS [1]."
    assert final.usage == Usage(0, 0, 0, known=False)
    assert final.cost is None


def test_stream_is_retried_before_the_first_token(stub):
    stub.script(503, stream())
    final = list(make(stub).stream(MESSAGES))[-1]
    assert final.text == "Visez -14 LUFS [1]." and len(stub.requests) == 2


def test_stream_is_not_retried_after_the_first_token(stub):
    stub.script(stream_break("un deux trois quatre", after=2))  # then "ok" would succeed
    received = []
    with pytest.raises(LLMError, match="broke off the answer") as caught:
        for item in make(stub).stream(MESSAGES):
            received.append(item)
    assert "".join(received) == "un deux"
    assert len(stub.requests) == 1
    assert isinstance(caught.value, LLMUnavailable)


def test_stream_falls_back_when_the_server_refuses_stream_options(stub):
    stub.script(status(400, message="Unrecognized request argument supplied: stream_options"), stream())
    final = list(make(stub).stream(MESSAGES))[-1]
    assert final.text == "Visez -14 LUFS [1]." and not final.usage.known
    assert "stream_options" in stub.requests[0] and "stream_options" not in stub.requests[1]


# -- retries and errors ---------------------------------------------------------------------

def test_429_waits_retry_after_then_succeeds(stub):
    stub.script(status(429, retry_after=0.3), "ok")
    result = make(stub).complete(MESSAGES)
    assert result.text == "Visez -14 LUFS [1]."
    first, second = stub.request_times
    assert len(stub.requests) == 2 and second - first >= 0.28


def test_retry_after_is_capped_and_backoff_grows(stub):
    client = make(stub, backoff=0.5)
    assert client._delay(0, _Failure("status", True, Exception(), 429, retry_after=120.0)) == 20.0
    no_header = _Failure("status", True, Exception(), 503)
    assert 0.5 <= client._delay(0, no_header) <= 0.75
    assert 2.0 <= client._delay(2, no_header) <= 3.0


def test_429_every_time_is_unavailable(stub):
    stub.script(*[status(429, retry_after=0)] * 3)
    with pytest.raises(LLMUnavailable, match="HTTP 429") as caught:
        make(stub).complete(MESSAGES)
    assert caught.value.status == 429 and len(stub.requests) == 3


def test_server_errors_after_every_retry_are_unavailable(stub):
    stub.script(500, 500, 500, "ok")
    with pytest.raises(LLMUnavailable) as caught:
        make(stub, max_retries=2).complete(MESSAGES)
    message = str(caught.value)
    assert stub.url in message and "HTTP 500" in message and "3 tries" in message
    assert caught.value.status == 500 and len(stub.requests) == 3


def test_503_then_success(stub):
    stub.script(503, "ok")
    assert make(stub).complete(MESSAGES).text == "Visez -14 LUFS [1]." and len(stub.requests) == 2


def test_timeout_is_unavailable_quickly(stub):
    stub.script(delay(5), delay(5))
    client = make(stub, timeout=0.3, max_retries=1)
    start = time.monotonic()
    with pytest.raises(LLMUnavailable, match="timed out after 2 tries"):
        client.complete(MESSAGES)
    assert time.monotonic() - start < 2.5
    assert len(stub.requests) == 2


def test_unreachable_server_is_unavailable():
    client = LLMClient(api_key="x", base_url=closed_port_url(), max_retries=1, backoff=0.01, timeout=2)
    with pytest.raises(LLMUnavailable, match="could not be reached after 2 tries"):
        client.complete(MESSAGES)


def test_bad_key_is_an_error_and_not_retried(stub):
    with pytest.raises(LLMError) as caught:
        make(stub, api_key="sk-wrong").complete(MESSAGES)
    assert not isinstance(caught.value, LLMUnavailable)
    assert caught.value.status == 401 and "OPENAI_API_KEY" in str(caught.value)
    assert len(stub.calls) == 1


def test_other_4xx_are_not_retried(stub):
    stub.script(status(400, message="messages: invalid role"))
    with pytest.raises(LLMError, match="HTTP 400.*invalid role") as caught:
        make(stub).complete(MESSAGES)
    assert caught.value.status == 400 and len(stub.requests) == 1


# -- ping and settings ----------------------------------------------------------------------

def test_ping(stub):
    make(stub).ping()
    assert stub.calls[-1]["path"] == "/v1/models"
    with pytest.raises(LLMUnavailable, match="401"):
        make(stub, api_key="sk-wrong").ping()
    with pytest.raises(LLMUnavailable, match="could not be reached"):
        LLMClient(api_key="x", base_url=closed_port_url()).ping()


def test_llm_from_settings(stub):
    assert llm_from_settings(Settings()) is None

    local = llm_from_settings(Settings(openai_base_url=stub.url, llm_model="llama3.1:8b",
                                       llm_timeout=7.0, llm_max_retries=1))
    assert local.url == stub.url and local.model == "llama3.1:8b"
    assert local.timeout == 7.0 and local.max_retries == 1
    stub.api_key = None  # a local server without keys
    result = local.complete(MESSAGES)
    assert result.model == "llama3.1:8b" and result.cost is None  # unknown model: no cost

    hosted = llm_from_settings(Settings(openai_api_key="sk-abc"))
    assert hosted.url == "https://api.openai.com/v1" and hosted.model == "gpt-4o-mini"


# -- prices ---------------------------------------------------------------------------------------

def test_prices():
    usage = Usage(prompt_tokens=1_000_000, completion_tokens=1_000_000, total_tokens=2_000_000)
    assert prices.cost("gpt-4o-mini", usage) == pytest.approx(0.75)
    assert prices.cost("gpt-4o-mini-2024-07-18", usage) == pytest.approx(0.75)
    assert prices.cost("gpt-4.1-nano", usage) == pytest.approx(0.50)
    assert prices.cost("o4-mini", {"prompt_tokens": 1000, "completion_tokens": 0}) == pytest.approx(0.0011)
    assert prices.cost("gpt-4o-2024-05-13", usage) == pytest.approx(20.0)  # snapshot with its own price
    assert prices.cost("llama3.1:8b", usage) is None
    assert prices.cost("gpt-4o-mini-search-preview", usage) is None  # not guessed from a prefix
    assert prices.cost("gpt-4o-mini", Usage.unknown()) is None
