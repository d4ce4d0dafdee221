"""The English→French glossary bridge: the embedded expansion, the synonym_graph rules made from
the same file, and (against the Elasticsearch test server, or a real ES with ``ES_URL``) the
two compared term by term through ``_analyze``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from assistant.engines.analysis import analyze
from assistant.engines.base import IndexedChunk
from assistant.engines.elasticsearch import FRENCH_ANALYSIS
from assistant.engines.embedded import EmbeddedEngine
from assistant.errors import ConfigError
from assistant.glossary import expand, french_terms, load_glossary, synonym_filter, synonym_rules
from assistant.retrieval import RetrievalConfig, Retriever
from tests.engine_contract import CHUNKS, DIM, MODEL, _unit

ROOT = Path(__file__).resolve().parent.parent
ENGLISH = [json.loads(line)["question"]
           for name in ("crosslingual_questions.jsonl", "realstyle_questions.jsonl")
           for line in (ROOT / "evaluation" / name).read_text(encoding="utf-8").splitlines()
           if line.strip() and json.loads(line).get("lang") == "en"]


def test_english_terms_get_their_french_terms():
    assert "compresseur" in french_terms("How do I set the attack on my compressor?")
    # The longest entry wins over the words inside it.
    terms = french_terms("what is gain staging?")
    assert terms and all("gain" not in t or " " in t for t in terms)
    assert french_terms("rien à traduire ici") == []
    expanded = expand("my reverb sounds metallic")
    assert expanded.startswith("my reverb sounds metallic\n")
    assert "reverb" in expanded.split("\n", 1)[1] or "réverbération" in expanded


def test_the_glossary_file_is_read_once_and_checked(tmp_path):
    glossary = load_glossary()
    assert len(glossary) >= 300
    bad = tmp_path / "g.json"
    bad.write_text('{"words": []}')
    with pytest.raises(ConfigError, match="expected"):
        load_glossary(bad)


def test_synonym_rules_have_the_solr_shape():
    rules = synonym_rules()
    assert len(rules) == len(load_glossary())
    for rule in rules:
        left, right = rule.split(" => ")
        assert left and right.split(", ")[0] == left  # the English term is kept
        assert "=>" not in right
    assert synonym_filter()["type"] == "synonym_graph"


def test_english_questions_find_french_chunks_through_the_glossary(tmp_path):
    """An English question whose only link to the French chunk is a glossary term: found by
    BM25 with the glossary, not without. French questions are never expanded."""
    engine = EmbeddedEngine(tmp_path / "index.sqlite")
    engine.write([IndexedChunk(c, _unit(np.ones(DIM)).reshape(1, -1)) for c in CHUNKS], [],
                 dim=DIM, model=MODEL)
    embed = lambda q: _unit(np.ones(DIM))  # noqa: E731  (vectors play no part here)
    question = "how do I set up a compressor on vocals?"
    without = Retriever(engine, embed, RetrievalConfig()).rank(question, 3, mode="lexical")
    with_glossary = Retriever(engine, embed, RetrievalConfig(glossary=True)).rank(
        question, 3, mode="lexical")
    assert "comp" not in [h.chunk_id for h in without.hits]
    assert with_glossary.hits[0].chunk_id == "comp"
    french = "un compressor sur la voix ?"  # read as French: left as it is
    assert (Retriever(engine, embed, RetrievalConfig(glossary=True)).rank(french, 3, mode="lexical").hits
            == Retriever(engine, embed, RetrievalConfig()).rank(french, 3, mode="lexical").hits)
    engine.close()


def test_embedded_expansion_matches_es_synonym_graph(es_client):
    """The terms Elasticsearch's synonym_graph filter (rules from the same glossary, then the
    French analysis) gives for each English question are those the embedded engine searches."""
    filters = FRENCH_ANALYSIS["filter"]
    chain = ["lowercase", synonym_filter(), filters["fr_elision"], filters["fr_stop"],
             filters["fr_stemmer"], "asciifolding"]
    expanded = [q for q in ENGLISH if french_terms(q)][:25]
    assert len(expanded) >= 20
    differ = []
    for question in expanded:
        theirs = {t["token"] for t in es_client.indices.analyze(
            tokenizer="standard", filter=chain, text=question)["tokens"]}
        ours = set(analyze(expand(question)))
        if theirs != ours:
            differ.append((question, sorted(theirs - ours), sorted(ours - theirs)))
    assert not differ, differ
