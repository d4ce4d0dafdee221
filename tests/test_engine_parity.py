"""Both engines must rank alike: the embedded engine's French analysis and BM25 are built to
match Elasticsearch's, checked here on the demo corpus against the ES test server."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from assistant.engines.analysis import analyze
from assistant.engines.base import LexicalParams
from assistant.engines.elasticsearch import ElasticsearchEngine
from assistant.engines.embedded import EmbeddedEngine
from indexing.chunker import sentence_windows
from indexing.job import unit_vectors
from indexing.sources import load_chunks
from assistant.engines.base import IndexedChunk

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = [json.loads(line)["question"]
             for line in (ROOT / "evaluation" / "demo_questions.jsonl").read_text().splitlines()
             if line.strip()]
PARAMS = LexicalParams(boosts={"title": 1.5, "tags": 0.7, "text": 1.0}, tie_breaker=0.3,
                       windows=0.5)


@pytest.fixture(scope="module")
def demo_items():
    chunks = load_chunks(ROOT / "data" / "articles.json")
    items = []
    for n, chunk in enumerate(chunks):
        chunk = replace(chunk, windows=tuple(sentence_windows(chunk.text, 40)))
        items.append(IndexedChunk(chunk, unit_vectors(1 + len(chunk.windows), 16, seed=n)))
    return items


@pytest.fixture(scope="module")
def both_engines(demo_items, es_url, tmp_path_factory):
    embedded = EmbeddedEngine(tmp_path_factory.mktemp("parity") / "index.sqlite")
    es = ElasticsearchEngine(es_url, "parity-demo", timeout=60)
    for engine in (embedded, es):
        engine.write(demo_items, [], dim=16, model="random", rebuild=True)
    yield embedded, es
    for name in list(es.client.indices.get(index="parity-demo*")):
        es.client.indices.delete(index=name)
    es.close()
    embedded.close()


def test_analysis_matches_the_es_analyzer(both_engines, demo_items):
    _, es = both_engines
    index = es.info().name
    texts = [item.chunk.text for item in demo_items[::7]] + QUESTIONS
    mismatches, total = 0, 0
    for text in texts:
        theirs = [t["token"] for t in es.client.indices.analyze(
            index=index, analyzer="arsonor_french", text=text)["tokens"]]
        ours = analyze(text)
        total += len(theirs)
        mismatches += sum(a != b for a, b in zip(ours, theirs)) + abs(len(ours) - len(theirs))
    assert total > 1500
    assert mismatches / total < 0.002, f"{mismatches} of {total} terms differ"


def test_lexical_scores_match(both_engines):
    embedded, es = both_engines
    compared = 0
    for question in QUESTIONS:
        ours = embedded.lexical_search(question, 10, params=PARAMS)
        theirs = es.lexical_search(question, 10, params=PARAMS)
        assert [h.chunk_id for h in ours][:3] == [h.chunk_id for h in theirs][:3], question
        theirs_by_id = {h.chunk_id: h.score for h in theirs}
        for hit in ours:
            if hit.chunk_id in theirs_by_id:
                assert hit.score == pytest.approx(theirs_by_id[hit.chunk_id], rel=1e-3), question
                compared += 1
    assert compared > 8 * len(QUESTIONS)


def test_vector_rankings_match(both_engines, demo_items):
    embedded, es = both_engines
    for query in unit_vectors(20, 16, seed=11):
        assert [h.chunk_id for h in embedded.vector_search(query, 10)] == \
            [h.chunk_id for h in es.vector_search(query, 10)]


@pytest.mark.parametrize("category", ["LA POST-PROD", "LE SOUND DESIGN"])
def test_category_filters_match(both_engines, category):
    embedded, es = both_engines
    question = "comment régler l'attaque et le release"
    assert [h.chunk_id for h in embedded.lexical_search(question, 5, category=category, params=PARAMS)] == \
        [h.chunk_id for h in es.lexical_search(question, 5, category=category, params=PARAMS)]
