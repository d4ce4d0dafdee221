"""The learned ranker: features from the separate signals, a LightGBM model saved and loaded as
text, used by the retriever only on an index of the recipe it was trained for, and off with
``"ranker": ""`` in the retrieval configuration (plain fusion)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import lightgbm
import numpy as np
import pytest

from assistant.engines.base import Hit
from assistant.errors import ConfigError
from assistant.ranker import FEATURES, LearnedRanker, chunk_position, features
from assistant.retrieval import RetrievalConfig, Retriever
from tests.engine_contract import MODEL, VECTORS

ROOT = Path(__file__).resolve().parent.parent


def test_features_use_the_separate_signals_and_neighbours():
    hits = [Hit("a-1", 1.0, "a", vector_chunk=0.8, vector_window=0.9, bm25_chunk=4.0, bm25_window=2.0),
            Hit("a-2", 0.7, "a", vector_chunk=0.7, bm25_chunk=1.0),
            Hit("b-5", 0.5, "b", vector_window=0.6)]  # an ES hit outside the chunk-vector list
    m = features("how do I set a compressor", "en", hits, {})
    col = {name: m[:, i] for i, name in enumerate(FEATURES)}
    assert m.shape == (3, len(FEATURES))
    assert col["vector_chunk"][2] == pytest.approx(0.7)  # missing: the list's lowest value
    assert col["bm25_chunk"].tolist() == pytest.approx([1.0, 0.25, 0.0])  # share of the best
    assert col["vector_window_rrank"][0] == 1.0
    assert col["neighbour_fused"][0] == pytest.approx(0.7 - 1.0)  # a-2 follows a-1
    assert col["neighbour_fused"][2] == pytest.approx(-0.5)  # b-5: no neighbour among them
    assert col["english"].tolist() == [1.0, 1.0, 1.0]
    assert col["article_share"].tolist() == pytest.approx([2 / 3, 2 / 3, 1 / 3])
    assert chunk_position("3632a3b4-12") == 12 and chunk_position("odd") == 0


def _toy_ranker(index_model: str) -> LearnedRanker:
    """A model that learned to put the last-ranked fused candidate first (inverse fused rank)."""
    rng = np.random.default_rng(3)
    x, y, groups = [], [], []
    for _ in range(60):
        m = rng.random((6, len(FEATURES)))
        m[:, FEATURES.index("fused_rrank")] = 1.0 / np.arange(1, 7)
        x.append(m)
        y.append((np.arange(6) == 5).astype(int))
        groups.append(6)
    fit = lightgbm.LGBMRanker(objective="lambdarank", n_estimators=20, num_leaves=3,
                              min_child_samples=5, verbose=-1, n_jobs=1)
    fit.fit(np.vstack(x), np.concatenate(y), group=groups)
    return LearnedRanker(index_model, 6, fit.booster_, {"toy": True})


def test_the_model_file_round_trips_and_orders_the_candidates(contract_engine, tmp_path):
    ranker = _toy_ranker(MODEL)
    ranker.save(tmp_path / "ranker.json")
    (tmp_path / "retrieval.json").write_text(json.dumps({"fusion": "weighted", "ranker": "ranker.json",
                                                         "coverage": {"kept": 1}}))
    config = RetrievalConfig.load(tmp_path / "retrieval.json")
    assert config.ranker_model.trained_on == {"toy": True}
    embed = lambda q: VECTORS["osc"]  # noqa: E731
    plain = Retriever(contract_engine, embed, replace(config, ranker="", ranker_model=None)).rank("oscillateur filtre", 6)
    ranked = Retriever(contract_engine, embed, config).rank("oscillateur filtre", 6)
    assert {h.chunk_id for h in ranked.hits} == {h.chunk_id for h in plain.hits}
    assert ranked.hits[0].chunk_id == plain.hits[-1].chunk_id  # what the toy model learned
    assert all(h.ranker is not None for h in ranked.hits)
    assert all(h.ranker is None for h in plain.hits)
    assert ranked.hits[0].vector_chunk is not None  # the signals stay on the hits
    assert ranked.timing.ranker > 0


def test_a_model_of_another_recipe_falls_back_to_plain_fusion(contract_engine, caplog):
    config = RetrievalConfig(fusion="weighted", ranker="x", ranker_model=_toy_ranker("other#recipe"))
    embed = lambda q: VECTORS["osc"]  # noqa: E731
    plain = Retriever(contract_engine, embed, replace(config, ranker_model=None)).rank("oscillateur filtre", 6)
    fallback = Retriever(contract_engine, embed, config).rank("oscillateur filtre", 6)
    assert [h.chunk_id for h in fallback.hits] == [h.chunk_id for h in plain.hits]
    assert "plain fusion" in caplog.text


def test_bad_model_files_are_config_errors(tmp_path):
    path = tmp_path / "ranker.json"
    with pytest.raises(ConfigError, match="not found"):
        LearnedRanker.load(path)
    path.write_text(json.dumps({"features": ["old"], "model": ""}))
    with pytest.raises(ConfigError, match="other features"):
        LearnedRanker.load(path)
    path.write_text(json.dumps({"features": list(FEATURES), "model": "garbage", "index_model": "m",
                                "depth": 3}))
    with pytest.raises(ConfigError, match="malformed"):
        LearnedRanker.load(path)


def test_the_shipped_model_matches_the_shipped_configuration(tmp_path):
    # Shipped off by default (RESULTS.md says why), but it must load and fit the shipped
    # recipe, so that `"ranker": "ranker.json"` turns it on.
    config = RetrievalConfig.load(ROOT / "assistant" / "retrieval.json")
    model = config.ranker_model if config.ranker else LearnedRanker.load(
        ROOT / "assistant" / "ranker.json")
    assert model.index_model.endswith(config.passage.tag)
    assert model.depth <= config.candidates
    switched_on = tmp_path / "retrieval.json"
    switched_on.write_text(json.dumps({**config.to_dict(),
                                       "ranker": str(ROOT / "assistant" / "ranker.json"),
                                       "query_adapter": ""}))
    assert RetrievalConfig.load(switched_on).ranker_model.index_model == model.index_model


def test_a_ranker_is_used_only_with_the_query_adapter_its_candidates_were_searched_with(
        contract_engine, caplog):
    from assistant.query_adapter import QueryAdapter
    from tests.engine_contract import DIM

    adapter = QueryAdapter(MODEL, np.zeros((DIM, DIM)))
    embed = lambda q: VECTORS["osc"]  # noqa: E731
    adapted = RetrievalConfig(fusion="weighted", query_adapter="a", query_adapter_model=adapter)
    fused = Retriever(contract_engine, embed, adapted).rank("oscillateur filtre", 6)

    unadapted_ranker = _toy_ranker(MODEL)  # trained on candidates searched without an adapter
    kept = Retriever(contract_engine, embed, replace(adapted, ranker="r", ranker_model=unadapted_ranker))
    assert kept.ranker is None
    assert [h.chunk_id for h in kept.rank("oscillateur filtre", 6).hits] == [h.chunk_id for h in fused.hits]
    assert "searched with query adapter none, this search uses " + adapter.fingerprint in caplog.text

    unadapted_ranker.query_adapter = adapter.fingerprint  # as if trained after this adapter
    used = Retriever(contract_engine, embed, replace(adapted, ranker="r", ranker_model=unadapted_ranker))
    assert used.ranker is unadapted_ranker
    assert used.rank("oscillateur filtre", 6).hits[0].chunk_id == fused.hits[-1].chunk_id


def test_the_fingerprint_names_the_matrix_and_survives_the_file(tmp_path):
    from assistant.query_adapter import QueryAdapter

    a = QueryAdapter(MODEL, np.eye(4) * 0.1)
    a.save(tmp_path / "a.npz")
    assert QueryAdapter.load(tmp_path / "a.npz").fingerprint == a.fingerprint
    assert QueryAdapter(MODEL, np.eye(4) * 0.2).fingerprint != a.fingerprint
    ranker = _toy_ranker(MODEL)
    ranker.query_adapter = a.fingerprint
    ranker.save(tmp_path / "r.json")
    assert LearnedRanker.load(tmp_path / "r.json").query_adapter == a.fingerprint
