"""Elasticsearch-specific behaviour (the shared suite runs in ``TestElasticsearchContract``):
pure query builders, then behaviour against a server (``es_url``:
noida-db locally, a real Elasticsearch when ES_URL is set)."""

from __future__ import annotations

import os
import re
import time
from dataclasses import replace
from datetime import datetime, timezone

import numpy as np
import pytest
from elasticsearch import NotFoundError

from assistant.engines.base import IndexedChunk, LexicalParams
from assistant.engines.elasticsearch import (
    ElasticsearchEngine,
    chunk_document,
    chunk_from_source,
    index_body,
    knn_query,
    lexical_query,
    safe_url,
    versioned_name,
)
from assistant.errors import EngineError, EngineUnavailable, IndexBusy, IndexMismatch
from evaluation.ports import free_port

from tests.engine_contract import (  # noqa: F401  (shared corpus and helpers)
    CHUNKS, DIM, HOME, MODEL, POST, SOUND, VECTORS, EngineContract, _chunk, _indexed, _ranking,
    _unit,
)


class TestElasticsearchContract(EngineContract):
    """The shared engine suite, on Elasticsearch (noida-db, or a real server at ES_URL)."""

    @pytest.fixture
    def engine(self, es_url, es_alias):
        eng = ElasticsearchEngine(es_url, es_alias, timeout=30)
        yield eng
        eng.close()


# --------------------------------------------------------------------------- pure builders


def test_index_body_mapping_and_settings():
    body = index_body(384, "intfloat/multilingual-e5-small", k1=1.5, b=0.6)
    settings, mappings = body["settings"], body["mappings"]
    assert settings["number_of_shards"] == 1 and settings["number_of_replicas"] == 0
    assert settings["similarity"]["arsonor_bm25"] == {"type": "BM25", "k1": 1.5, "b": 0.6}
    filters = settings["analysis"]["analyzer"]["arsonor_french"]["filter"]
    assert filters.index("lowercase") < filters.index("fr_elision")
    assert mappings["_meta"] == {"dim": 384, "model": "intfloat/multilingual-e5-small"}
    props = mappings["properties"]
    for name in ("chunk_id", "article_id", "category", "url", "content_hash"):
        assert props[name] == {"type": "keyword"}
    for name in ("title", "tags", "text"):
        assert props[name] == {"type": "text", "analyzer": "arsonor_french",
                               "similarity": "arsonor_bm25"}
    hnsw = {"type": "hnsw", "m": 16, "ef_construction": 100}
    assert props["vector"] == {"type": "dense_vector", "dims": 384, "index": True,
                               "similarity": "cosine", "index_options": hnsw}
    assert props["windows"]["type"] == "nested"
    assert props["windows"]["properties"]["vector"] == props["vector"]


def test_lexical_query_boosts_tie_breaker_and_filter():
    params = LexicalParams(boosts={"title": 3.0, "tags": 0.5, "text": 1.0}, tie_breaker=0.3)
    body = lexical_query("l’oscillateur", 7, category=SOUND, params=params)
    match = body["query"]["bool"]["must"][0]["multi_match"]
    assert match == {"query": "l’oscillateur", "type": "best_fields",
                     "fields": ["title^3", "tags^0.5", "text^1"], "tie_breaker": 0.3}
    assert body["query"]["bool"]["filter"] == [{"term": {"category": SOUND}}]
    assert body["size"] == 7 and body["_source"] == ["article_id"]
    plain = lexical_query("reverb", 3)
    assert plain["query"]["bool"]["filter"] == []
    assert plain["query"]["bool"]["must"][0]["multi_match"]["fields"] == [
        "title^1", "tags^1", "text^1"]


def test_lexical_query_adds_the_best_window_when_weighted():
    body = lexical_query("attaque", 5, category=SOUND, params=LexicalParams(windows=0.5))
    should = body["query"]["bool"]["should"]
    assert should[1] == {"nested": {"path": "windows", "score_mode": "max", "query": {
        "match": {"windows.text": {"query": "attaque", "boost": 0.5}}},
        "inner_hits": {"size": 1, "_source": False}}}
    assert body["query"]["bool"]["minimum_should_match"] == 1
    assert body["query"]["bool"]["filter"] == [{"term": {"category": SOUND}}]


def test_knn_query_candidates_and_filter():
    body = knn_query(np.array([1, 0, 0, 0], dtype=np.float32), 5, 100, category=HOME)
    assert body["knn"] == {"field": "vector", "query_vector": [1.0, 0.0, 0.0, 0.0], "k": 5,
                           "num_candidates": 100, "filter": {"term": {"category": HOME}}}
    assert body["size"] == 5 and body["_source"] == ["article_id"]
    big = knn_query([0.5, 0.5], 300, 100, field="windows.vector")
    assert big["knn"]["num_candidates"] == 300 and "filter" not in big["knn"]
    assert big["knn"]["field"] == "windows.vector"


def test_chunk_document_windows_only_with_extra_rows():
    chunk = replace(CHUNKS[0], windows=("w1", "w2"))
    one = chunk_document(IndexedChunk(chunk, np.ones((1, 4), dtype=np.float32)))
    assert "windows" not in one and one["vector"] == [1.0] * 4
    assert one["content_hash"] == chunk.content_hash and one["chunk_id"] == "osc"
    three = chunk_document(IndexedChunk(chunk, np.eye(3, 4, dtype=np.float32)))
    assert three["vector"] == [1.0, 0.0, 0.0, 0.0]
    assert three["windows"] == [{"vector": [0.0, 1.0, 0.0, 0.0], "text": "w1"},
                                {"vector": [0.0, 0.0, 1.0, 0.0], "text": "w2"}]
    back = chunk_from_source(three)
    assert back == chunk and back.windows == ("w1", "w2")


def test_versioned_name_and_safe_url():
    now = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=timezone.utc)
    assert versioned_name("arsonor-chunks", now) == "arsonor-chunks-v20240506070809123456"
    assert re.fullmatch(r"x-v\d{20}", versioned_name("x"))
    assert safe_url("https://elastic:s3cret@es.example:9243") == "https://es.example:9243"
    assert safe_url("http://localhost:9200") == "http://localhost:9200"


def test_client_is_lazy():
    engine = ElasticsearchEngine("http://127.0.0.1:9", "whatever")
    assert engine._client is None
    engine.close()


# --------------------------------------------------------------------------- against a server


@pytest.fixture
def engine(es_url, es_alias):
    eng = ElasticsearchEngine(es_url, es_alias, timeout=30)
    yield eng
    eng.close()


@pytest.fixture
def built(engine):
    engine.write(_indexed(), [], dim=DIM, model=MODEL)
    return engine


def test_first_write_creates_versioned_index_behind_alias(built, es_client, es_alias):
    info = built.info()
    assert re.fullmatch(re.escape(es_alias) + r"-v\d{20}", info.name)
    assert (info.dim, info.model, info.count) == (DIM, MODEL, len(CHUNKS))
    assert built.count() == len(CHUNKS)
    assert list(es_client.indices.get_alias(name=es_alias)) == [info.name]
    assert built.chunk_hashes() == {c.chunk_id: c.content_hash for c in CHUNKS}


def test_mapping_sets_hnsw_index_options_explicitly(built, es_client):
    name = built.info().name
    mapping = es_client.indices.get_mapping(index=name)[name]["mappings"]
    vector = mapping["properties"]["vector"]
    assert vector["type"] == "dense_vector" and vector["dims"] == DIM
    assert vector["similarity"] == "cosine"
    options = vector["index_options"]
    assert (options["type"], options["m"], options["ef_construction"]) == ("hnsw", 16, 100)
    assert mapping["_meta"] == {"dim": DIM, "model": MODEL}
    assert mapping["properties"]["text"]["analyzer"] == "arsonor_french"
    assert mapping["properties"]["text"]["similarity"] == "arsonor_bm25"


def test_index_analyzer_handles_elision_plural_accents(built, es_client):
    name = built.info().name

    def tokens(text):
        body = es_client.indices.analyze(index=name, analyzer="arsonor_french", text=text)
        return [t["token"] for t in body["tokens"]]

    assert tokens("L’oscillateur") == ["oscil"]
    assert tokens("l'oscillateur des oscillateurs") == ["oscil", "oscil"]
    assert tokens("la Réverbération") == tokens("reverberation")
    assert tokens("le la les") == []


def test_vector_search_ranks_by_cosine(built):
    query = np.array([0.3, -0.2, 0.9, 0.1], dtype=np.float32)
    order, cosines = _ranking(query)
    hits = built.vector_search(query, 5)
    assert [h.chunk_id for h in hits] == order[:5]
    for h in hits:
        assert h.score == pytest.approx((1 + cosines[h.chunk_id]) / 2, abs=1e-4)
    exact = built.vector_search(VECTORS["reverb"], 1)
    assert exact[0].chunk_id == "reverb" and exact[0].score == pytest.approx(1.0, abs=1e-5)


def test_window_texts_are_kept_and_scores_are_es_cosine(engine):
    # The shared suite checks the ranking; here: ES's (1 + cos) / 2 and stored window texts.
    windowed = replace(CHUNKS[0], windows=("dents de scie", "carrés et sinus"))
    rows = np.stack([_unit([1, 0, 0, 0]), _unit([0, 0, 1, 0]), _unit([0, 0, 0.6, 0.8])])
    engine.write([IndexedChunk(windowed, rows)] + _indexed(CHUNKS[1:]), [], dim=DIM, model=MODEL)
    hits = engine.vector_search(_unit([0, 0, 0.6, 0.8]), 3)
    assert hits[0].chunk_id == "osc" and hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert engine.get_chunks(["osc"])["osc"].windows == windowed.windows


def test_rebuild_swaps_alias_atomically(built, es_client, es_alias, monkeypatch):
    old = built.info().name
    IndicesClient = type(built.client.indices)
    calls = []
    real = IndicesClient.update_aliases

    def spy(self, *args, **kwargs):
        calls.append(kwargs.get("actions"))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(IndicesClient, "update_aliases", spy)
    keep = CHUNKS[:3]
    built.write(_indexed(keep), [], dim=DIM, model=MODEL, rebuild=True)
    new = built.info()
    assert new.name != old and new.count == 3 and built.count() == 3
    assert list(es_client.indices.get_alias(name=es_alias)) == [new.name]
    assert not es_client.indices.exists(index=old)
    assert set(built.chunk_hashes()) == {c.chunk_id for c in keep}
    assert len(calls) == 1  # one atomic action list: remove from old + add to new
    assert {"remove": {"index": old, "alias": es_alias}} in calls[0]
    assert {"add": {"index": new.name, "alias": es_alias}} in calls[0]
    assert list(es_client.indices.get(index=f"{es_alias}*")) == [new.name]


def test_failed_rebuild_keeps_the_live_index(built, es_client, es_alias):
    old = built.info()
    bad = IndexedChunk(CHUNKS[1], np.zeros((1, DIM), dtype=np.float32))  # cosine refuses 0
    with pytest.raises(EngineError, match="comp") as caught:
        built.write(_indexed(CHUNKS[:1]) + [bad], [], dim=DIM, model=MODEL, rebuild=True)
    assert not isinstance(caught.value, IndexMismatch)
    assert built.info() == old
    assert list(es_client.indices.get(index=f"{es_alias}*")) == [old.name]


def test_vectors_must_match_dim(built):
    with pytest.raises(EngineError, match="5-dimensional"):
        built.write([IndexedChunk(CHUNKS[0], np.ones((1, 5)))], [], dim=DIM, model=MODEL)


def test_unreachable_server_is_engine_unavailable():
    url = f"http://127.0.0.1:{free_port()}"
    engine = ElasticsearchEngine(url, "arsonor-chunks", timeout=0.5)
    for call in (engine.ping, engine.info, engine.count,
                 lambda: engine.lexical_search("oscillateur", 3),
                 lambda: engine.vector_search(np.ones(DIM), 3)):
        with pytest.raises(EngineUnavailable) as caught:
            call()
        message = str(caught.value)
        assert url in message and "unreachable" in message
        for leak in ("Traceback", "urllib3", "HTTPConnection", "ConnectionError", "object at"):
            assert leak not in message
    engine.close()


def test_nested_knn_refused_falls_back_to_chunk_vectors(engine, monkeypatch):
    from elastic_transport import ApiResponseMeta, HttpHeaders, NodeConfig
    from elasticsearch import BadRequestError

    rows = np.stack([_unit([1, 0, 0, 0]), _unit([0, 0, 1, 0])])
    engine.write([IndexedChunk(CHUNKS[0], rows)] + _indexed(CHUNKS[1:]), [], dim=DIM,
                 model=MODEL)
    client = engine.client
    real_search = client.search

    def old_server_search(*args, **kwargs):
        if (kwargs.get("knn") or {}).get("field") == "windows.vector":
            meta = ApiResponseMeta(400, "1.1", HttpHeaders(), 0.0,
                                   NodeConfig("http", "localhost", 9200))
            raise BadRequestError("refused", meta, {"error": {
                "type": "illegal_argument_exception", "reason": "nested knn unsupported"}})
        return real_search(*args, **kwargs)

    monkeypatch.setattr(client, "search", old_server_search)
    query = np.array([0.3, -0.2, 0.9, 0.1], dtype=np.float32)
    assert [h.chunk_id for h in engine.vector_search(query, 3)] == _ranking(query)[0][:3]
    assert engine._nested_knn is False


# --------------------------------------------------------------------------- freshness


def test_an_update_cut_short_stays_unpublished_and_is_marked(built, es_client, es_alias):
    """What a killed job leaves: sent but unrefreshed writes that neither searches nor
    get_chunks show, and the mark that makes the next job rebuild."""
    name = built.info().name
    changed = replace(CHUNKS[1], text="Le compresseur dompte les crêtes d’une voix trop vive.")
    built._put_meta(name, {**built._live_index()[1]["mappings"]["_meta"], "pending": "{}"})
    built._bulk(name, [{"_op_type": "delete", "_index": name, "_id": "acou"}], _indexed([changed]))
    assert built.get_chunks(["comp", "acou"]) == {"comp": CHUNKS[1], "acou": CHUNKS[2]}
    assert built.count() == len(CHUNKS) and built.lexical_search("crêtes", 3) == []
    assert built.info().interrupted


def test_an_abandoned_lock_is_taken_over(engine, es_client, es_alias):
    lock_index = f"{es_alias}-lock"
    es_client.indices.create(index=lock_index)
    alive = {"host": "elsewhere", "pid": 4242, "since": "2026-01-01T00:00:00Z", "token": "t",
             "expires": time.time() + 60}
    es_client.index(index=lock_index, id="index-job", document=alive, refresh=True)
    with pytest.raises(IndexBusy, match=r"pid 4242 on elsewhere.*expires at"):
        with engine.job_lock():
            pass  # pragma: no cover
    es_client.index(index=lock_index, id="index-job", document={**alive, "expires": 1.0})
    with engine.job_lock():  # expired: taken over
        holder = es_client.get(index=lock_index, id="index-job")["_source"]
        assert holder["pid"] == os.getpid()
    with pytest.raises(NotFoundError):
        es_client.get(index=lock_index, id="index-job")  # released at the end
