"""The evaluation commands, as other scripts call them (the last line of --json is JSON)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from assistant.config import REPO_DIR

DEMO = str(REPO_DIR / "data" / "articles.json")
QUESTIONS = str(REPO_DIR / "evaluation" / "demo_questions.jsonl")


def run(args, settings, extra_env=None):
    env = {"DATA_DIR": settings.data_dir, "EMBEDDING_CACHE": str(settings.embedding_cache_file),
           "PATH": "/usr/bin:/bin", **(extra_env or {})}
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO_DIR, env=env,
                          capture_output=True, text=True, timeout=900)


@pytest.mark.parametrize("mode", ["lexical", "vector", "hybrid"])
def test_retrieval_evaluation_json_contract(demo_index_settings, mode):
    done = run(["evaluation.retrieval", "--chunks", DEMO, "--questions", QUESTIONS,
                "--mode", mode, "--level", "article", "--k", "5", "--json"], demo_index_settings)
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert {"n", "k", "hit_rate", "mrr", "engine", "mode", "level"} <= set(figures)
    assert (figures["n"], figures["k"], figures["mode"], figures["level"], figures["engine"]) == (
        60, 5, mode, "article", "embedded")
    assert figures["hit_rate"] >= 0.85 and 0 < figures["mrr"] <= figures["hit_rate"]
    assert set(figures["by_language"]) == {"en", "fr"}


def test_elasticsearch_gives_the_same_figures(demo_index_settings, es_url):
    figures = {}
    for engine in ("embedded", "elasticsearch"):
        done = run(["evaluation.retrieval", "--chunks", DEMO, "--questions", QUESTIONS,
                    "--engine", engine, "--level", "article", "--json"],
                   demo_index_settings, {"ES_URL": es_url})
        assert done.returncode == 0, done.stderr[-2000:]
        figures[engine] = json.loads(done.stdout.strip().splitlines()[-1])
    assert abs(figures["embedded"]["hit_rate"] - figures["elasticsearch"]["hit_rate"]) <= 0.01
    assert abs(figures["embedded"]["mrr"] - figures["elasticsearch"]["mrr"]) <= 0.01


@pytest.mark.parametrize("args, message", [
    (["--chunks", "nope.json", "--questions", QUESTIONS], "source file not found"),
    (["--chunks", DEMO, "--questions", "nope.csv"], "questions file not found"),
    (["--chunks", DEMO, "--questions", QUESTIONS, "--level", "chunk"], "chunk level needs"),
    (["--chunks", DEMO, "--questions", QUESTIONS, "--level", "neighbour"], "neighbour level needs"),
    (["--chunks", DEMO, "--questions", QUESTIONS, "--k", "0"], "--k must be at least 1"),
    (["--chunks", DEMO, "--questions", QUESTIONS, "--engine", "solr"], "invalid choice"),
])
def test_bad_arguments_are_clear_errors(demo_index_settings, args, message):
    done = run(["evaluation.retrieval", *args], demo_index_settings)
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr


def test_the_neighbour_level_also_counts_the_chunks_beside_the_labelled_one():
    from assistant.documents import Chunk
    from assistant.engines.base import Hit
    from evaluation.retrieval import AnswerKey, Question

    chunks = [Chunk(cid, article, "t", "x") for cid, article in (
        ("a1", "a"), ("a2", "a"), ("a3", "a"), ("a4", "a"), ("b1", "b"), ("b2", "b"))]
    key = AnswerKey.from_chunks(chunks)
    assert key.neighbours["a2"] == {"a1", "a3"}
    assert key.neighbours["a4"] == {"a3"}  # b1 follows it in the file but is another article
    assert key.neighbours["b1"] == {"b2"}

    question = Question("?", chunk="a2", articles=("a",))
    ranking = [Hit(cid, 1.0) for cid in ("b1", "a3", "a4", "a2")]
    assert key.first_relevant_rank(question, ranking, "chunk", 10) == 4
    assert key.first_relevant_rank(question, ranking, "neighbour", 10) == 2
    assert key.first_relevant_rank(question, ranking, "article", 10) == 2  # articles: b, a
    assert key.first_relevant_rank(question, ranking, "chunk", 3) is None
    far = [Hit(cid, 1.0) for cid in ("a4", "b2", "a2")]
    assert key.first_relevant_rank(question, far, "neighbour", 10) == 3  # a4 is not beside a2
