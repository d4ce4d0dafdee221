"""The question-set checker reads the ranker's training questions like the other real-style sets."""

from __future__ import annotations

import json

from evaluation import check_question_sets


def test_training_questions_file_is_checked(tmp_path, capsys):
    # No blog at this path: only the checks that need no blog data run, which keeps the test fast.
    status = check_question_sets.main(["--blog", str(tmp_path / "absent.json")])
    out = capsys.readouterr().out
    assert "realstyle_train_questions.jsonl:" in out
    assert status == 0, out


def test_a_bad_training_question_is_an_error(tmp_path, capsys, monkeypatch):
    bad = tmp_path / "realstyle_train_questions.jsonl"
    rows = [{"question": "what does a compressor ratio mean for a kick drum?", "articles": ["x"],
             "lang": "en", "style": "medium,vague"},
            # The first question of the real-style evaluation set, word for word.
            {"question": "what kind of music is AI most likely to take over first?", "articles": ["4615db39"],
             "lang": "en", "style": "short,vague"}]
    bad.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    monkeypatch.setattr(check_question_sets, "REALSTYLE_TRAIN", bad)
    status = check_question_sets.main(["--blog", str(tmp_path / "absent.json")])
    out = capsys.readouterr().out
    assert status == 1
    assert "ERROR: realstyle_train_questions.jsonl:1: style 'medium,vague'" in out
    assert "ERROR: realstyle_train_questions.jsonl: languages unbalanced" in out
    assert "ERROR: realstyle_train_questions.jsonl:2: duplicate of realstyle_questions.jsonl:1" in out
