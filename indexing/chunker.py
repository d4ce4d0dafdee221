"""Sentence-aware chunking: chunks of about ``size`` words that overlap by about ``overlap``
words, cut only between sentences (unless one sentence alone is longer than ``size``); and the
sentence windows embedded beside each chunk. Sentences are :func:`assistant.text.split_sentences`'s,
the ones extractive answers quote."""

from __future__ import annotations

from assistant.documents import Article, Chunk
from assistant.text import split_sentences


def _split_long(sentence: str, size: int, overlap: int) -> list[str]:
    words = sentence.split()
    step = max(size - overlap, 1)
    return [" ".join(words[i:i + size]) for i in range(0, max(len(words) - overlap, 1), step)]


def chunk_text(text: str, size: int = 300, overlap: int = 50) -> list[str]:
    """Cut ``text`` into chunks of at most ``size`` words, overlapping by whole sentences that
    add up to at most ``overlap`` words."""
    if size <= 0 or overlap < 0 or overlap >= size:
        raise ValueError(f"chunk size must be > 0 and 0 <= overlap < size (got {size}/{overlap})")
    units: list[list[str]] = []
    for sentence in split_sentences(text):
        n_words = len(sentence.split())
        pieces = [sentence] if n_words <= size else _split_long(sentence, size, overlap)
        units.extend([p.split() for p in pieces])
    chunks: list[str] = []
    current: list[list[str]] = []
    current_words = 0
    fresh = 0  # sentences in ``current`` that no earlier chunk holds
    for unit in units:
        if current and current_words + len(unit) > size:
            chunks.append(" ".join(w for u in current for w in u))
            current, current_words = _overlap_tail(current, overlap)
            fresh = 0
            if current_words + len(unit) > size:
                current, current_words = [], 0
        current.append(unit)
        current_words += len(unit)
        fresh += 1
    if current and fresh:
        chunks.append(" ".join(w for u in current for w in u))
    return chunks


def _overlap_tail(units: list[list[str]], overlap: int) -> tuple[list[list[str]], int]:
    tail: list[list[str]] = []
    words = 0
    for unit in reversed(units):
        if words + len(unit) > overlap:
            break
        tail.insert(0, unit)
        words += len(unit)
    return tail, words


def chunk_article(article: Article, size: int = 300, overlap: int = 50) -> list[Chunk]:
    """The chunks of one article, with ids ``<article_id>-<n>`` (n from 1): stable while the
    article's text is unchanged."""
    return [
        Chunk(chunk_id=f"{article.article_id}-{n}", article_id=article.article_id,
              title=article.title, text=text, url=article.url, category=article.category,
              tags=article.tags)
        for n, text in enumerate(chunk_text(article.text, size, overlap), start=1)
    ]


def sentence_windows(text: str, size: int) -> list[str]:
    """Runs of consecutive sentences of about ``size`` words, each sentence starting one run:
    finer-grained texts whose vectors let a long chunk match a narrow question."""
    sentences = split_sentences(text)
    windows: list[str] = []
    for i in range(len(sentences)):
        run, words = [], 0
        for sentence in sentences[i:]:
            if run and words + len(sentence.split()) > size:
                break
            run.append(sentence)
            words += len(sentence.split())
        window = " ".join(run)
        if not windows or window not in windows[-1]:
            windows.append(window)
    return windows
