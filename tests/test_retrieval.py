"""Fusion, question validation, and hybrid retrieval over the real demo index."""

from __future__ import annotations

import json

import pytest

from assistant.config import REPO_DIR
from assistant.engines.base import Hit
from assistant.errors import ConfigError, InvalidQuestion
from assistant.answering.request import validate_question
from assistant.retrieval import RetrievalConfig, rrf, weighted_sum
from assistant.services import Services
from tests.conftest import shipped_config


def _hits(*ids):
    return [Hit(cid, 10.0 - n) for n, cid in enumerate(ids)]


def test_rrf_rewards_agreement_and_respects_weights():
    fused = rrf({"lexical": _hits("a", "b", "c"), "vector": _hits("b", "c", "d")},
                {"lexical": 1.0, "vector": 1.0}, k=60)
    assert [h.chunk_id for h in fused][:2] == ["b", "c"]
    assert fused[0].score == pytest.approx(1 / 62 + 1 / 61)
    vector_only = rrf({"lexical": _hits("a"), "vector": _hits("d")}, {"lexical": 1, "vector": 3})
    assert [h.chunk_id for h in vector_only] == ["d", "a"]


def test_weighted_sum_normalises_each_list():
    lexical = [Hit("a", 30.0), Hit("b", 20.0), Hit("c", 10.0)]
    vector = [Hit("c", 0.9), Hit("a", 0.5), Hit("b", 0.1)]
    fused = weighted_sum({"lexical": lexical, "vector": vector}, {"lexical": 1, "vector": 1})
    scores = {h.chunk_id: h.score for h in fused}
    assert scores == pytest.approx({"a": 1.5, "b": 0.5, "c": 1.0})
    assert weighted_sum({"lexical": [Hit("x", 3.0)], "vector": []}, {})[0].score == 1.0


@pytest.mark.parametrize("question, message", [
    ("", "empty"), ("   \n", "empty"), ("?!…", "only punctuation"), ("x" * 2001, "too long"),
    (42, "must be a string"),
])
def test_bad_questions(question, message):
    with pytest.raises(InvalidQuestion, match=message):
        validate_question(question)


def test_configuration_file_is_checked(tmp_path):
    product = RetrievalConfig.load(REPO_DIR / "assistant" / "retrieval.json")
    assert product.fusion in ("rrf", "weighted")
    bad = tmp_path / "r.json"
    for body, message in [({"fusion": "magic"}, "fusion must be"),
                          ({"lexical": {"boosts": {"body": 1}}}, "title, tags and text"),
                          ({"lexical": {"colour": "red"}}, "unexpected keyword"),
                          ({"ranker": "missing.json"}, "ranker model not found")]:
        bad.write_text(json.dumps(body))
        with pytest.raises(ConfigError, match=message):
            RetrievalConfig.load(bad)
    bad.write_text("{oops")
    with pytest.raises(ConfigError, match="not valid JSON"):
        RetrievalConfig.load(bad)


def test_unknown_top_level_blocks_are_kept(tmp_path):
    """Other parts (the coverage gate) keep their own block in retrieval.json: loading and
    saving the retrieval configuration leaves it as it was."""
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"fusion": "weighted", "coverage": {"min_cosine": 0.8}}))
    config = RetrievalConfig.load(path)
    assert config.fusion == "weighted"
    config.save(path)
    assert json.loads(path.read_text())["coverage"] == {"min_cosine": 0.8}


@pytest.mark.parametrize("question, title_word", [
    ("What is a VCO?", "VCO"),
    ("Comment réduire le bruit de fond d'un podcast ?", "podcast"),
    ("how loud should my master be for spotify", "LUFS"),
    ("c'est quoi le make-up gain", "compress"),
])
def test_hybrid_retrieval_answers_readers_in_both_languages(demo_index_settings, question, title_word):
    with Services(demo_index_settings) as services:
        passages = services.retriever.search(question, 3).passages
    assert passages, question
    titles = " ".join(p.chunk.title for p in passages[:2]).lower()
    assert title_word.lower() in titles, (question, [p.chunk.title for p in passages])


def test_category_filter_keeps_to_the_category(demo_index_settings):
    with Services(demo_index_settings) as services:
        for mode in ("lexical", "vector", "hybrid"):
            passages = services.retriever.search("réglage de l'attaque", 5, mode=mode,
                                                 category="LE SOUND DESIGN").passages
            assert passages and {p.chunk.category for p in passages} == {"LE SOUND DESIGN"}


@pytest.mark.parametrize("text, lang", [
    ("What is a VCO?", "en"), ("how loud should my master be for spotify", "en"),
    ("Comment réduire le bruit de fond d'un podcast ?", "fr"), ("c'est quoi le make-up gain", "fr"),
    ("LFO", "fr"),  # undecided: the blog's language
])
def test_language_detection(text, lang):
    from assistant.language import detect_language

    assert detect_language(text) == lang


def test_foreign_questions_lean_on_vectors():
    config = RetrievalConfig(weights={"lexical": 1.0, "vector": 0.7}, foreign_lexical=0.3)
    assert config.for_question("Comment compresser une voix ?") is config
    english = config.for_question("How do I compress vocals?")
    assert english.weights == {"lexical": pytest.approx(0.3), "vector": 0.7}


def test_a_changed_passage_recipe_asks_to_reindex_at_serve_time(demo_index_settings, tmp_path):
    from assistant.errors import IndexMismatch
    from assistant.web import create_app

    config = shipped_config()
    config["passage"]["window_words"] = 25  # the index was built with 40-word windows
    changed = tmp_path / "retrieval.json"
    changed.write_text(json.dumps(config), encoding="utf-8")
    settings = demo_index_settings.replace(retrieval_config=str(changed), data_dir=str(tmp_path))
    with Services(settings) as services:
        with pytest.raises(IndexMismatch, match=r"windows=25.*assistant index --rebuild"):
            services.retriever
    app = create_app({"SETTINGS": settings, "TESTING": True})
    response = app.test_client().post("/question", json={"question": "Qu'est-ce qu'un VCO ?"})
    assert response.status_code == 503 and "--rebuild" in response.get_json()["error"]
    app.extensions["assistant"].close()


def test_fusion_weighs_the_separate_signals():
    """With the chunk and window cosines weighted apart, a chunk whose own vector matches beats
    one that only has a close window, though their max-pooled scores tie; the fused hits keep
    every signal the engines gave."""
    from assistant.engines.base import Hit
    from assistant.retrieval import fuse

    vector = [Hit("window-only", 0.9, "a", vector_chunk=0.2, vector_window=0.9),
              Hit("chunk", 0.9, "b", vector_chunk=0.9, vector_window=0.3),
              Hit("low", 0.1, "c", vector_chunk=0.1, vector_window=0.1)]
    lexical = [Hit("low", 5.0, "c", bm25_chunk=5.0)]
    pooled = fuse({"vector": vector, "lexical": lexical},
                  RetrievalConfig(fusion="weighted", weights={"vector": 1.0, "lexical": 0.1}))
    split = fuse({"vector": vector, "lexical": lexical},
                 RetrievalConfig(fusion="weighted", weights={
                     "vector": 0.0, "vector_chunk": 1.0, "vector_window": 0.3, "lexical": 0.1}))
    assert {h.chunk_id for h in pooled[:2]} == {"window-only", "chunk"}
    assert pooled[0].score == pooled[1].score
    assert [h.chunk_id for h in split][:2] == ["chunk", "window-only"]
    low = next(h for h in split if h.chunk_id == "low")
    assert (low.vector_chunk, low.bm25_chunk) == (0.1, 5.0)
