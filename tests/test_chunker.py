"""Sentence-aware chunking."""

from __future__ import annotations

import pytest

from assistant.documents import Article
from assistant.text import split_sentences
from indexing.chunker import chunk_article, chunk_text, sentence_windows


def _sentences(n_words_each: list[int]) -> str:
    return " ".join(
        " ".join(f"mot{i}_{j}" for j in range(n)) .capitalize() + "." for i, n in enumerate(n_words_each))


def test_chunks_respect_size_and_never_cut_a_sentence():
    text = _sentences([40] * 30)
    sentences = set(split_sentences(text))
    chunks = chunk_text(text, size=300, overlap=50)
    assert len(chunks) > 3
    for chunk in chunks:
        assert len(chunk.split()) <= 300
        # every chunk is a run of whole sentences
        assert all(s in sentences for s in split_sentences(chunk))


def test_overlap_is_whole_sentences_up_to_the_overlap():
    text = _sentences([20] * 40)
    chunks = chunk_text(text, size=100, overlap=50)
    for before, after in zip(chunks, chunks[1:]):
        shared = [s for s in split_sentences(after) if s in split_sentences(before)]
        assert 1 <= len(shared) <= 2  # 20-word sentences: at most 50 words shared
        assert split_sentences(after)[: len(shared)] == shared


def test_a_sentence_longer_than_the_size_is_the_only_one_cut():
    text = _sentences([10, 700, 10])
    chunks = chunk_text(text, size=300, overlap=50)
    assert all(len(c.split()) <= 300 for c in chunks)
    assert chunks[0].startswith("Mot0_0")
    joined = " ".join(chunks)
    assert "mot1_699." in joined and "mot2_9." in joined


def test_all_text_is_kept_in_order():
    text = _sentences([13, 57, 8, 120, 33, 90, 41, 5, 77])
    words = text.split()
    seen = [w for c in chunk_text(text, 100, 20) for w in c.split()]
    assert set(seen) == set(words)
    firsts = [c.split()[0] for c in chunk_text(text, 100, 20)]
    assert firsts == sorted(firsts, key=words.index)


@pytest.mark.parametrize("size, overlap", [(0, 0), (100, 100), (100, -1)])
def test_bad_sizes_are_refused(size, overlap):
    with pytest.raises(ValueError, match="overlap"):
        chunk_text("Une phrase.", size, overlap)


def test_chunk_ids_are_stable_and_carry_article_fields():
    article = Article("abc123", "Le filtre", _sentences([60] * 12), url="/articles/abc123",
                      category="LE SOUND DESIGN", tags="filtre, VCF")
    first, again = chunk_article(article), chunk_article(article)
    assert [c.chunk_id for c in first] == [f"abc123-{n}" for n in range(1, len(first) + 1)]
    assert first == again and first[0].content_hash == again[0].content_hash
    assert {(c.title, c.url, c.category, c.tags) for c in first} == {
        ("Le filtre", "/articles/abc123", "LE SOUND DESIGN", "filtre, VCF")}


def test_sentence_windows_cover_every_sentence():
    text = _sentences([12, 15, 30, 8, 9, 40])
    windows = sentence_windows(text, 40)
    for sentence in split_sentences(text):
        assert any(sentence in w for w in windows)
    assert all(len(w.split()) <= 40 or len(split_sentences(w)) == 1 for w in windows)
