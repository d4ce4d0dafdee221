"""The engine contract: one behavioural suite that every engine must pass.

Each engine's test module subclasses ``EngineContract`` and provides an ``engine`` fixture
(an engine with no index yet); the suite builds its own small French corpus with hand-made
vectors, so rankings are exact and engine-independent."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from assistant.documents import Chunk
from assistant.engines.base import Hit, IndexedChunk, LexicalParams
from assistant.errors import EngineUnavailable, IndexBusy, IndexMismatch

HOME, SOUND, POST = "LE HOME STUDIO", "LE SOUND DESIGN", "LA POST-PROD"
MODEL = "test-model"
DIM = 4


def _chunk(cid, title, text, category, tags=""):
    return Chunk(chunk_id=cid, article_id=f"a-{cid}", title=title, text=text,
                 url=f"https://www.arsonor.com/{cid}/", category=category, tags=tags)


CHUNKS = [
    _chunk("osc", "Les oscillateurs d’un synthétiseur",
           "Un synthé soustractif part de ses oscillateurs : dents de scie, carrés et sinus.",
           SOUND, "synthèse"),
    _chunk("comp", "Compresser une voix",
           "Le compresseur réduit la dynamique : seuil, ratio, attaque et relâchement.", POST),
    _chunk("acou", "Traiter l’acoustique de son home studio",
           "Des panneaux absorbants et des bass traps corrigent les réflexions de la pièce.", HOME),
    _chunk("mon", "Choisir ses enceintes de monitoring",
           "Placez-les en triangle équilatéral avec la tête de l’ingénieur du son.", HOME),
    _chunk("reverb", "La réverbération à convolution",
           "Une réponse impulsionnelle recrée l’espace d’une salle réelle sur une piste.", POST),
    _chunk("lfo", "Moduler avec un LFO",
           "Un LFO est un oscillateur basse fréquence qui module la coupure du filtre.", SOUND),
    _chunk("satt", "La saturation",
           "Chauffer une piste pour lui donner du grain et de la présence.", POST),
    _chunk("drums", "Mixer une batterie",
           "Sur la caisse claire, un peu de saturation ; sur les toms, de la compression "
           "parallèle et une reverb courte donnent du corps à l’ensemble du kit.", HOME),
]


def _unit(v):
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v)


def _write_attack_and_ratio(engine) -> None:
    """Two chunks holding "attaque" and "ratio"; only ``b`` has them in the same window."""
    a = replace(_chunk("a", "Réglages", "x", POST),
                text="L'attaque dépend du style. " + "Du remplissage neutre ici. " * 6 + "Le ratio aussi.",
                windows=("L'attaque dépend du style.", "Du remplissage neutre ici.", "Le ratio aussi."))
    b = replace(_chunk("b", "Réglages", "x", POST),
                text="Du remplissage neutre ici. " * 6 + "L'attaque et le ratio vont ensemble.",
                windows=("Du remplissage neutre ici.", "L'attaque et le ratio vont ensemble."))
    rows = lambda n: np.tile(_unit([1, 0, 0, 0]), (n, 1))  # noqa: E731
    engine.write([IndexedChunk(a, rows(4)), IndexedChunk(b, rows(3))], [], dim=DIM, model=MODEL)


# Distinct, deterministic unit vectors: every pair of cosines differs, so rankings are exact.
VECTORS = {c.chunk_id: _unit(np.random.default_rng(i + 7).normal(size=DIM))
           for i, c in enumerate(CHUNKS)}


def _indexed(chunks=CHUNKS, dim=DIM):
    out = []
    for c in chunks:
        v = VECTORS[c.chunk_id] if dim == DIM else _unit(np.arange(1, dim + 1, dtype=float))
        out.append(IndexedChunk(chunk=c, vectors=v.reshape(1, -1)))
    return out


def _ranking(query, chunks=CHUNKS):
    q = _unit(query)
    scored = [(float(np.dot(q, VECTORS[c.chunk_id])), c.chunk_id) for c in chunks]
    return [cid for _, cid in sorted(scored, reverse=True)], dict((c, s) for s, c in scored)



class EngineContract:
    """Behaviour shared by every engine. Subclasses provide the ``engine`` fixture."""

    @pytest.fixture
    def engine(self):
        raise NotImplementedError("each engine's test class provides an empty engine")

    @pytest.fixture
    def built(self, engine):
        engine.write(_indexed(), [], dim=DIM, model=MODEL)
        return engine

    def test_no_index_yet(self, engine):
        assert engine.info() is None
        assert engine.count() == 0
        assert engine.chunk_hashes() == {}
        engine.ping()
        with pytest.raises(EngineUnavailable, match="no index"):
            engine.lexical_search("oscillateur", 3)
        with pytest.raises(EngineUnavailable, match="no index"):
            engine.vector_search(VECTORS["osc"], 3)

    def test_first_write_records_dim_model_and_hashes(self, built):
        info = built.info()
        assert (info.dim, info.model, info.count) == (DIM, MODEL, len(CHUNKS))
        assert built.count() == len(CHUNKS)
        assert built.chunk_hashes() == {c.chunk_id: c.content_hash for c in CHUNKS}

    def test_vector_search_ranks_by_cosine(self, built):
        query = np.array([0.3, -0.2, 0.9, 0.1], dtype=np.float32)
        order, _ = _ranking(query)
        hits = built.vector_search(query, 5)
        assert [h.chunk_id for h in hits] == order[:5]
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        assert built.vector_search(VECTORS["reverb"], 1)[0].chunk_id == "reverb"

    def test_vector_search_scores_a_chunk_by_its_best_window(self, engine):
        windowed = replace(CHUNKS[0], windows=("dents de scie", "carrés et sinus"))
        rows = np.stack([_unit([1, 0, 0, 0]), _unit([0, 0, 1, 0]), _unit([0, 0, 0.6, 0.8])])
        items = [IndexedChunk(windowed, rows)] + [
            IndexedChunk(c, _unit([0, 1, 0, 0.2 * i]).reshape(1, -1))
            for i, c in enumerate(CHUNKS[1:], 1)]
        engine.write(items, [], dim=DIM, model=MODEL)
        hits = engine.vector_search(_unit([0, 0, 0.6, 0.8]), 3)
        assert hits[0].chunk_id == "osc"
        assert len({h.chunk_id for h in hits}) == len(hits) == 3
        assert engine.vector_search(_unit([0, 0, 1, 0]), 1, category=SOUND)[0].chunk_id == "osc"
        assert engine.vector_search(_unit([0, 0, 1, 0]), 3, category=POST)[0].chunk_id != "osc"

    def test_rebuild_replaces_everything(self, built):
        keep = CHUNKS[:3]
        built.write(_indexed(keep), [], dim=DIM, model=MODEL, rebuild=True)
        assert built.count() == 3 and built.info().count == 3
        assert set(built.chunk_hashes()) == {c.chunk_id for c in keep}
        assert built.lexical_search("bass traps", 3)[0].chunk_id == "acou"
        assert built.lexical_search("caisse claire", 3) == []

    def test_an_update_is_all_or_nothing(self, built):
        bad = IndexedChunk(CHUNKS[1], np.ones((1, DIM + 1), dtype=np.float32))
        with pytest.raises(Exception):
            built.write(_indexed(CHUNKS[:1]) + [bad], ["acou"], dim=DIM, model=MODEL)
        assert built.count() == len(CHUNKS)
        assert "acou" in built.chunk_hashes()

    @pytest.mark.parametrize("query, expected", [
        ("l’oscillateur", "osc"),          # typographic elision, singular vs. "oscillateurs"
        ("L'OSCILLATEUR", "osc"),
        ("reverberation", "reverb"),        # no accents vs. "réverbération"
        ("enceinte", "mon"),                # singular vs. "enceintes"
        ("l’acoustique du studio", "acou"),
        ("compresseurs", "comp"),
    ])
    def test_lexical_search_french_queries(self, built, query, expected):
        hits = built.lexical_search(query, 3)
        assert hits and hits[0].chunk_id == expected
        assert all(isinstance(h, Hit) for h in hits)
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)

    def test_lexical_search_finds_every_matching_chunk(self, built):
        ids = {h.chunk_id for h in built.lexical_search("oscillateurs", 10)}
        assert ids == {"osc", "lfo"}

    def test_field_boosts_change_the_order(self, built):
        # "saturation" is the title of `satt` and a word of the text of `drums`.
        title_first = LexicalParams(boosts={"title": 10.0, "tags": 1.0, "text": 1.0})
        text_first = LexicalParams(boosts={"title": 1.0, "tags": 1.0, "text": 10.0})
        assert [h.chunk_id for h in built.lexical_search("saturation", 2, params=title_first)] == [
            "satt", "drums"]
        assert [h.chunk_id for h in built.lexical_search("saturation", 2, params=text_first)] == [
            "drums", "satt"]

    def test_tie_breaker_adds_other_fields(self, built):
        # `osc` matches in title and text: with tie_breaker 1 its score is the sum, not the max.
        plain = {h.chunk_id: h.score for h in built.lexical_search("oscillateur", 5)}
        summed = {h.chunk_id: h.score for h in built.lexical_search(
            "oscillateur", 5, params=LexicalParams(tie_breaker=1.0))}
        assert summed["osc"] > plain["osc"]
        assert summed["lfo"] == pytest.approx(plain["lfo"], rel=1e-5)

    def test_lexical_category_filter(self, built):
        assert {h.chunk_id for h in built.lexical_search("saturation", 5)} == {"satt", "drums"}
        assert [h.chunk_id for h in built.lexical_search("saturation", 5, category=HOME)] == [
            "drums"]
        assert built.lexical_search("oscillateur", 5, category=POST) == []

    @pytest.mark.parametrize("query", ["", "   ", "le la les", "l’ d’"])
    def test_empty_analysed_query_gives_nothing(self, built, query):
        assert built.lexical_search(query, 5) == []

    def test_vector_category_filter(self, built):
        query = VECTORS["osc"]
        in_post = [c for c in CHUNKS if c.category == POST]
        order, _ = _ranking(query, in_post)
        hits = built.vector_search(query, 10, category=POST)
        assert [h.chunk_id for h in hits] == order
        assert built.vector_search(query, 3, category="NO SUCH CATEGORY") == []

    def test_get_chunks(self, built):
        got = built.get_chunks(["mon", "nope", "osc", "mon"])
        assert set(got) == {"mon", "osc"}
        assert got["mon"] == CHUNKS[3] and got["osc"] == CHUNKS[0]
        assert built.get_chunks([]) == {}

    def test_incremental_upsert_and_delete(self, built):
        name = built.info().name
        changed = replace(CHUNKS[1], text="Le compresseur dompte les crêtes d’une voix trop vive.")
        new = _chunk("eq", "L’égaliseur paramétrique", "Couper les fréquences gênantes.", POST)
        VECTORS["eq"] = _unit([1, 1, 1, 1])
        try:
            built.write(_indexed([changed, new]), ["acou", "never-indexed"], dim=DIM, model=MODEL)
        finally:
            VECTORS.pop("eq")
        assert built.info().name == name
        assert built.count() == len(CHUNKS) + 1 - 1
        hashes = built.chunk_hashes()
        assert "acou" not in hashes and hashes["eq"] == new.content_hash
        assert hashes["comp"] == changed.content_hash != CHUNKS[1].content_hash
        assert built.get_chunks(["comp"])["comp"].text == changed.text
        assert built.lexical_search("crêtes", 1)[0].chunk_id == "comp"
        assert built.lexical_search("acoustique", 5) == []

    def test_dim_or_model_change_needs_rebuild(self, built):
        with pytest.raises(IndexMismatch, match=r"4 dimensions.*8 dimensions.*--rebuild"):
            built.write(_indexed(CHUNKS[:1], dim=8), [], dim=8, model=MODEL)
        with pytest.raises(IndexMismatch, match="other-model"):
            built.write(_indexed(CHUNKS[:1]), [], dim=DIM, model="other-model")
        assert built.count() == len(CHUNKS)
        built.write(_indexed(CHUNKS[:2], dim=8), [], dim=8, model="other-model", rebuild=True)
        info = built.info()
        assert (info.dim, info.model, info.count) == (8, "other-model", 2)

    def test_hits_carry_their_article(self, built):
        hits = built.lexical_search("oscillateur", 3) + built.vector_search(VECTORS["osc"], 3)
        assert hits and all(h.article_id == f"a-{h.chunk_id}" for h in hits)

    def test_best_window_weight_favours_a_close_passage(self, engine):
        _write_attack_and_ratio(engine)
        plain = engine.lexical_search("attaque ratio", 2)
        weighted = engine.lexical_search("attaque ratio", 2, params=LexicalParams(windows=1.0))
        assert {h.chunk_id for h in plain} == {"a", "b"}
        assert weighted[0].chunk_id == "b"
        gain = {h.chunk_id: h.score for h in weighted}
        base = {h.chunk_id: h.score for h in plain}
        assert gain["b"] - base["b"] > gain["a"] - base["a"] > 0

    def test_indexed_articles(self, built):
        assert built.indexed_articles() == {c.chunk_id: c.article_id for c in CHUNKS}

    def test_record_run_is_read_back_by_info(self, built):
        info = built.info()
        assert (info.updated_at, info.last_run, info.interrupted) == ("", {}, False)
        hashes = built.chunk_hashes()
        run = {"ok": True, "finished_at": "2026-01-02T03:04:05Z", "pages": {"fetched": 3},
               "failures": ["https://www.arsonor.com/x/: HTTP 503 Service Unavailable"]}
        built.record_run(run, updated_at="2026-01-02T03:04:05Z")
        info = built.info()
        assert (info.updated_at, info.last_run) == ("2026-01-02T03:04:05Z", run)
        failed = {"ok": False, "error": "Cannot fetch the sitemap: timed out"}
        built.record_run(failed)
        info = built.info()
        assert (info.updated_at, info.last_run) == ("2026-01-02T03:04:05Z", failed)
        assert (info.dim, info.model, info.count) == (DIM, MODEL, len(CHUNKS))
        assert built.chunk_hashes() == hashes
        built.write(_indexed(CHUNKS[:1]), ["acou"], dim=DIM, model=MODEL)  # survives updates
        info = built.info()
        assert (info.updated_at, info.last_run, info.interrupted) == (
            "2026-01-02T03:04:05Z", failed, False)
        assert built.lexical_search("bass traps", 3) == []

    def test_record_run_without_an_index_records_nothing(self, engine):
        engine.record_run({"ok": False, "error": "x"}, updated_at="2026-01-02T03:04:05Z")
        assert engine.info() is None

    def test_one_index_job_at_a_time(self, engine):
        with engine.job_lock():
            with pytest.raises(IndexBusy, match=r"another index job is running .*pid \d+"):
                with engine.job_lock():
                    pass  # pragma: no cover
            engine.write(_indexed(), [], dim=DIM, model=MODEL)  # the holder works as usual
        with engine.job_lock():  # released: the next job gets it
            assert engine.count() == len(CHUNKS)

    def test_vector_hits_carry_chunk_and_window_cosines_apart(self, engine):
        """The chunk's own cosine and its best window's stay apart on the hit (the score is the
        larger): fusion and the ranker weigh them separately."""
        windowed = replace(CHUNKS[0], windows=("dents de scie", "carrés et sinus"))
        rows = np.stack([_unit([1, 0, 0, 0]), _unit([0, 0, 1, 0]), _unit([0, 0, 0.6, 0.8])])
        items = [IndexedChunk(windowed, rows)] + [
            IndexedChunk(c, _unit([0, 1, 0, 0.2 * i]).reshape(1, -1))
            for i, c in enumerate(CHUNKS[1:], 1)]
        engine.write(items, [], dim=DIM, model=MODEL)
        query = _unit([0.5, 0, 0.6, 0.8])
        hits = {h.chunk_id: h for h in engine.vector_search(query, len(items))}
        osc = hits["osc"]
        assert osc.vector_chunk == pytest.approx(float(query @ rows[0]), abs=1e-5)
        assert osc.vector_window == pytest.approx(float(query @ rows[2]), abs=1e-5)
        assert osc.vector_window > osc.vector_chunk
        plain = hits["comp"]  # no windows: its chunk cosine is all there is
        assert plain.vector_chunk == pytest.approx(float(query @ items[1].vectors[0]), abs=1e-5)
        assert all(h.bm25_chunk is None and h.bm25_window is None for h in hits.values())

    def test_lexical_hits_carry_chunk_and_window_bm25_apart(self, engine):
        _write_attack_and_ratio(engine)
        plain = {h.chunk_id: h for h in engine.lexical_search("attaque ratio", 2)}
        weighted = {h.chunk_id: h for h in engine.lexical_search(
            "attaque ratio", 2, params=LexicalParams(windows=0.5))}
        for cid in ("a", "b"):
            assert plain[cid].bm25_chunk == pytest.approx(plain[cid].score, rel=1e-4)
            assert plain[cid].bm25_window is None
            hit = weighted[cid]
            assert hit.bm25_chunk == pytest.approx(plain[cid].score, rel=1e-4)
            assert hit.score == pytest.approx(hit.bm25_chunk + 0.5 * hit.bm25_window, rel=1e-4)
        assert weighted["b"].bm25_window > weighted["a"].bm25_window > 0
