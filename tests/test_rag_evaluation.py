"""``evaluation.rag`` and ``evaluation.generate_questions`` end to end against the OpenAI stub
(a real local HTTP server), on the demo index, with small samples."""

from __future__ import annotations

import csv
import json

import pytest

from assistant.config import REPO_DIR
from evaluation import generate_questions, rag
from evaluation.retrieval import read_questions
from tests.conftest import JUDGE_MARK

CONCISE_MARK = "at most three short sentences"  # in prompts/answer_system.concise.txt


def stub_reply(body: dict) -> str:
    """Concise answers get PARTLY_RELEVANT from the judge, default ones RELEVANT."""
    messages = body["messages"]
    content = "\n".join(str(m.get("content") or "") for m in messages)
    if JUDGE_MARK in content:
        verdict = "PARTLY_RELEVANT" if "Réponse courte" in content else "RELEVANT"
        return json.dumps({"relevance": verdict, "explanation": "stub"})
    if CONCISE_MARK in content:
        return "Réponse courte [1]."
    return f"Réponse détaillée du modèle {body['model']} [1][2]."


@pytest.fixture
def env(monkeypatch, demo_index_settings, openai_stub, tmp_path):
    openai_stub.reply = stub_reply
    openai_stub.models = ["gpt-4o-mini", "gpt-4.1-mini"]
    values = {"DATA_DIR": str(tmp_path), "EMBEDDED_PATH": demo_index_settings.embedded_path,
              "EMBEDDING_CACHE": demo_index_settings.embedding_cache, "ENGINE": "embedded",
              "OPENAI_BASE_URL": openai_stub.url, "OPENAI_API_KEY": "sk-test",
              "LLM_MODEL": "gpt-4o-mini", "LLM_MAX_RETRIES": "0", "DATABASE_URL": ""}
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)  # no .env from the repository
    return openai_stub


def test_rag_evaluation_reports_shares_per_model_and_variant(env, capsys, tmp_path):
    out = tmp_path / "rows.jsonl"
    code = rag.main(["--models", "gpt-4o-mini,gpt-4.1-mini", "--variants", "default,concise",
                     "--sample", "3", "--workers", "2", "--json", "--out", str(out)])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n"] == 3 and report["judge_model"] == "gpt-4o-mini"
    results = {(r["model"], r["variant"]): r for r in report["results"]}
    assert set(results) == {(m, v) for m in ("gpt-4o-mini", "gpt-4.1-mini") for v in ("default", "concise")}
    for (model, variant), r in results.items():
        assert r["n"] == 3 and r["judged"] == 3 and r["errors"] == 0
        expected = "RELEVANT" if variant == "default" else "PARTLY_RELEVANT"
        assert r[expected] == 1.0
        assert sum(r[label] for label in ("RELEVANT", "PARTLY_RELEVANT", "NON_RELEVANT")) == 1.0
        assert r["tokens"] > 0 and r["cost"] > 0 and r["judge_cost"] > 0
        assert r["source_hit_rate"] is not None
    # 4 pairs x 3 questions, each answered then judged.
    answer_models = [b["model"] for b in env.requests if JUDGE_MARK not in b["messages"][-1]["content"]]
    assert sorted(set(answer_models)) == ["gpt-4.1-mini", "gpt-4o-mini"] and len(answer_models) == 12
    assert len(env.requests) == 24
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 12 and all(r["relevance"] for r in rows)


def test_rag_evaluation_counts_errors(env, capsys):
    env.default = 500  # every LLM call fails
    assert rag.main(["--sample", "2", "--json"]) == 0
    [result] = json.loads(capsys.readouterr().out)["results"]
    assert result["errors"] == 2 and result["judged"] == 0 and result["RELEVANT"] is None


def test_rag_evaluation_rejects_an_unknown_variant(env, capsys):
    assert rag.main(["--variants", "default,verbose", "--sample", "1"]) == 1
    assert "unknown prompt variant" in capsys.readouterr().err


def test_generate_questions_writes_a_ground_truth_csv(env, tmp_path, capsys):
    def reply(body):
        prompt = body["messages"][-1]["content"]
        title = prompt.split('article "', 1)[1].split('"', 1)[0]
        return "```json\n" + json.dumps([f"Question {i} sur « {title} » ?" for i in range(1, 4)],
                                        ensure_ascii=False) + "\n```"

    env.reply = reply
    out = tmp_path / "gt.csv"
    args = ["--source", str(REPO_DIR / "data" / "articles.json"), "--per-chunk", "3",
            "--limit", "4", "--out", str(out), "--json"]
    assert generate_questions.main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["generated_for"] == 4 and summary["questions"] == 12 and summary["failed"] == 0
    assert summary["cost"] > 0
    with out.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == ("question", "category", "chunk", "article")
        rows = list(reader)
    assert len(rows) == 12
    assert all(r["chunk"].startswith(r["article"]) and r["category"] for r in rows)
    questions = read_questions(out)  # what evaluation.retrieval and evaluation.rag read
    assert len(questions) == 12 and questions[0].chunk == rows[0]["chunk"]

    # A rerun resumes: the 4 chunks are skipped, the next 2 are generated.
    calls = len(env.requests)
    assert generate_questions.main([*args[:-3], "--limit", "6", "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["skipped"] == 4 and summary["generated_for"] == 2
    assert len(env.requests) == calls + 2
    assert len(read_questions(out)) == 18


@pytest.mark.parametrize("text, expected", [
    ('["Qu\'est-ce qu\'un VCO ?", "What is a VCO?"]', ["Qu'est-ce qu'un VCO ?", "What is a VCO?"]),
    ('Voici :\n```json\n["A quoi sert le ratio ?", "a quoi sert le ratio ?"]\n```',
     ["A quoi sert le ratio ?"]),
    ("1. Comment régler un gate ?\n2) Quel seuil choisir ?\n- Et le release ?",
     ["Comment régler un gate ?", "Quel seuil choisir ?", "Et le release ?"]),
    ('[{"question": "Pourquoi filtrer les basses ?"}]', ["Pourquoi filtrer les basses ?"]),
])
def test_parse_questions(text, expected):
    assert generate_questions.parse_questions(text, 5) == expected
