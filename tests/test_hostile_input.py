"""Hostile request bodies and arguments get a clear 4xx (a CLI error), never a 500: the one
boundary where a body becomes data (``json_body``) and the CLI's text arguments.

No index is needed: every case is refused before any search (the fast tier)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from assistant.cli import cli
from assistant.errors import InvalidInput
from assistant.safe_text import check_strings, text_problem
from assistant.web import create_app

DEEP = "[" * 20_000  # the 20 KB body that raised RecursionError in json.loads
HEX = "0" * 32


@pytest.fixture
def client(tmp_path):
    app = create_app({"data_dir": str(tmp_path), "database_url": "", "openai_api_key": "",
                      "openai_base_url": "", "TESTING": True})
    yield app.test_client()
    app.extensions["assistant"].close()


def post(client, path: str, raw: str | bytes, query: str = "", **headers):
    return client.post(path + query, data=raw, headers={"Content-Type": "application/json",
                                                        **headers})


def assert_json_400(response, *words: str) -> str:
    assert response.status_code == 400, (response.status_code, response.data[:300])
    assert response.mimetype == "application/json"
    message = response.get_json()["error"]
    for word in words:
        assert word in message, message
    return message


@pytest.mark.parametrize("query, headers", [("", {}), ("?stream=1", {}),
                                            ("", {"Accept": "text/event-stream"})])
def test_deeply_nested_json_is_a_400_on_the_json_and_sse_paths(client, query, headers):
    for path in ("/question", "/feedback"):
        assert_json_400(post(client, path, DEEP, query, **headers), "nested too deeply")
        assert_json_400(post(client, path, '{"question": ' + DEEP), "nested too deeply")


@pytest.mark.parametrize("query, headers", [("", {}), ("?stream=1", {}),
                                            ("", {"Accept": "text/event-stream"})])
def test_lone_surrogates_are_a_400_wherever_they_are(client, query, headers):
    cases = [
        ("/question", r'{"question": "\ud800 vco"}', "'question'"),
        ("/question", r'{"question": "un VCO \udfff ?"}', "'question'"),
        ("/question", r'{"question": "VCO ?", "category": "\ud83d"}', "'category'"),
        ("/question", r'{"question": "VCO ?", "conversation_id": "\ud800"}', "'conversation_id'"),
        ("/question", r'{"question": "VCO ?", "\ud800": 1}', "field name"),
        ("/feedback", r'{"exchange_id": "%s", "feedback": 1, "comment": "bien \ud800"}' % HEX,
         "'comment'"),
    ]
    for path, body, where in cases:
        message = assert_json_400(post(client, path, body, query, **headers), where,
                                  "lone surrogate")
        assert "U+D" in message


def test_nul_characters_are_a_400(client):
    assert_json_400(post(client, "/question", r'{"question": "VCO\u0000 ?"}'), "NUL")
    assert_json_400(post(client, "/feedback",
                         r'{"exchange_id": "%s", "feedback": -1, "comment": "a\u0000b"}' % HEX),
                    "'comment'", "NUL")


def test_a_valid_surrogate_pair_is_fine(client):
    # "\ud83c\udfb9" is one character (a keyboard emoji): it must not be mistaken for a lone one.
    response = post(client, "/feedback",
                    r'{"exchange_id": "%s", "feedback": 1, "comment": "\ud83c\udfb9"}' % HEX)
    assert response.status_code == 404  # valid: refused only because the exchange is unknown


def test_bad_encodings_of_the_body_are_400s(client):
    assert_json_400(post(client, "/question", b'{"question": "\xff\xfe"}'), "UTF-8")
    # json.loads decodes bytes with "surrogatepass": the UTF-8 form of a surrogate slips
    # through it as a lone surrogate, which the Unicode check then refuses.
    assert_json_400(post(client, "/question", b'{"question": "\xed\xa0\x80"}'), "surrogate")


def test_query_strings_never_carry_surrogates_to_the_app(client):
    # Percent-encoded UTF-8 of a surrogate (or any invalid sequence) decodes as U+FFFD: the
    # flag is then not a known value and the Accept header decides; the body is still checked.
    response = post(client, "/question", r'{"question": "\ud800"}', "?stream=%ED%A0%80%00")
    assert_json_400(response, "lone surrogate")


def test_safe_text_rules():
    assert text_problem("Réglage du compresseur 🎹") is None
    assert "surrogate U+D800" in text_problem("a\ud800")
    assert "NUL" in text_problem("a\x00")
    with pytest.raises(InvalidInput, match=r"'q'\[1\]\.k"):
        check_strings({"q": ["ok", {"k": "\udc80"}]})
    check_strings([[[[[[["deep but fine"]]]]]]])


@pytest.mark.parametrize("args, named", [
    (["ask", "VCO \udcff ?"], "question"),  # an undecodable byte of argv (surrogateescape)
    (["ask", "VCO ?", "--category", "\udcff"], "category"),
    (["search", "filtre \ud800"], "question"),
])
def test_cli_refuses_text_that_is_not_unicode(tmp_path, args, named):
    env = {"DATA_DIR": str(tmp_path), "OPENAI_API_KEY": "", "DATABASE_URL": ""}
    result = CliRunner().invoke(cli, ["--env-file", "/nonexistent/.env", *args], env=env)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert f"Error: {named} is not valid Unicode" in result.output
