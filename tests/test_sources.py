"""Reading sources: every bad input is a SourceError that says what and where."""

from __future__ import annotations

import json

import pytest

from assistant.errors import EmptyCorpusError, SourceError
from indexing.sources import load_chunks

ARTICLE = {"article_id": "a1", "title": "Le compresseur", "url": "/articles/a1",
           "category": "LA POST-PROD", "tags": "compression, ratio",
           "text": "Le compresseur réduit la dynamique. Le ratio fixe la réduction."}
CHUNK = {"article_id": "a1", "url": "https://x/a1", "title": "Le compresseur",
         "category": "LA POST-PROD", "tags": "compression", "chunk_id": "a1-7",
         "chunk_text": "Le ratio fixe la réduction."}


def _write(tmp_path, data, name="src.json"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


def test_articles_are_chunked_and_chunk_files_kept_as_given(tmp_path):
    chunks = load_chunks(_write(tmp_path, [ARTICLE]))
    assert [c.chunk_id for c in chunks] == ["a1-1"] and chunks[0].tags == "compression, ratio"
    kept = load_chunks(_write(tmp_path, [CHUNK], "chunks.json"))
    assert [(c.chunk_id, c.text) for c in kept] == [("a1-7", "Le ratio fixe la réduction.")]


def test_optional_fields_and_tag_lists(tmp_path):
    record = {"title": "Sans id", "text": "Du texte.", "tags": ["EQ", "filtre"]}
    chunk = load_chunks(_write(tmp_path, [record]))[0]
    assert len(chunk.article_id) == 8 and chunk.tags == "EQ, filtre" and chunk.url == ""


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ('"a string"', "expected a JSON list"),
    ("[]", "no article or chunk"),
    ([{**ARTICLE, "body": "x"}], "unknown field(s) 'body'"),
    ([{**CHUNK, "extra": 1}], "unknown field(s) 'extra'"),
    ([{k: v for k, v in ARTICLE.items() if k != "title"}], "article #1: missing field 'title'"),
    ([{**ARTICLE, "text": "   "}], "field 'text' is empty"),
    ([{**ARTICLE, "title": 12.5}], "field 'title' must be a string"),
    ([ARTICLE, ARTICLE], "duplicate article_id 'a1'"),
    ([CHUNK, CHUNK], "duplicate chunk_id 'a1-7'"),
    ([ARTICLE, "oops"], "article #2: expected an object"),
])
def test_bad_sources_are_clear_errors(tmp_path, content, message):
    with pytest.raises(SourceError) as caught:
        load_chunks(_write(tmp_path, content))
    assert message in str(caught.value)


def test_missing_file_and_empty_corpus(tmp_path):
    with pytest.raises(SourceError, match="not found"):
        load_chunks(tmp_path / "nope.json")
    with pytest.raises(EmptyCorpusError):
        load_chunks(_write(tmp_path, {"articles": []}))
