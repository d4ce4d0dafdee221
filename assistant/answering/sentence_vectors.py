"""Sentence vectors for extractive answers, cached in memory and in the embedding cache file.

:class:`SentenceVectors` is the ``embed(texts)`` callable :func:`extractive_answer` takes:
``texts[0]`` is the question (a query vector, memoised by the retriever), the others are
passage sentences, embedded as passages. Sentences recur across questions: after the first few
questions most answers embed nothing, and :func:`warm_sentences` can embed them all at start.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import Callable, Iterable, Sequence

import numpy as np

from assistant.text import split_sentences, tokens
from assistant.documents import Chunk
from assistant.embeddings import Embedder, EmbeddingCache, embed_passages_cached

log = logging.getLogger(__name__)


def answer_sentences(text: str) -> list[str]:
    """The sentences of a passage that :func:`extractive_answer` scores (and embeds)."""
    return [s for s in split_sentences(text) if len(tokens(s)) >= 3]


class SentenceVectors:
    """Query vector + passage-sentence vectors; thread-safe. ``cache_path`` None: memory only."""

    def __init__(self, embed_query: Callable[[str], np.ndarray], embedder: Embedder,
                 cache_path=None, size: int = 20000):
        self.embed_query = embed_query
        self.embedder = embedder
        self.cache_path = cache_path
        self.size = size
        self._memo: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self._cache: EmbeddingCache | None = None
        self._cache_failed = cache_path is None

    def _file_cache(self) -> EmbeddingCache | None:
        if self._cache is None and not self._cache_failed:
            with self._lock:
                if self._cache is None and not self._cache_failed:
                    try:
                        self._cache = EmbeddingCache(self.cache_path)
                    except Exception as e:  # noqa: BLE001 - memory-only is fine
                        log.warning("embedding cache %s unavailable (%s): sentence vectors kept "
                                    "in memory only", self.cache_path, e)
                        self._cache_failed = True
        return self._cache

    def passages(self, texts: Sequence[str]) -> np.ndarray:
        found: dict[str, np.ndarray] = {}
        with self._lock:
            for t in texts:
                if t in self._memo:
                    self._memo.move_to_end(t)
                    found[t] = self._memo[t]
        missing = list(dict.fromkeys(t for t in texts if t not in found))
        if missing:
            cache = self._file_cache()
            vectors = None
            if cache is not None:
                try:
                    vectors, _ = embed_passages_cached(self.embedder, missing, cache,
                                                       progress=False)
                except Exception as e:  # noqa: BLE001 - e.g. the cache file is locked
                    log.warning("embedding cache failed (%s): embedding directly", e)
            if vectors is None:
                vectors = self.embedder.embed_passages(missing)
            fresh = dict(zip(missing, np.asarray(vectors, dtype=np.float32)))
            found.update(fresh)
            with self._lock:
                self._memo.update(fresh)
                while len(self._memo) > self.size:
                    self._memo.popitem(last=False)
        return np.vstack([found[t] for t in texts]) if texts else np.zeros((0, 1), np.float32)

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        question = np.asarray(self.embed_query(texts[0]), dtype=np.float32).reshape(1, -1)
        if len(texts) == 1:
            return question
        return np.vstack([question, self.passages(list(texts[1:]))])

    def missing(self, texts: Sequence[str]) -> list[str]:
        """The texts whose vectors are neither in memory nor in the cache file."""
        with self._lock:
            unknown = [t for t in dict.fromkeys(texts) if t not in self._memo]
        cache = self._file_cache()
        if cache is None or not unknown:
            return unknown
        hashes = {EmbeddingCache.key(t): t for t in unknown}
        known = cache.get_many(self.embedder.name, list(hashes))
        return [t for h, t in hashes.items() if h not in known]

    def close(self) -> None:
        if self._cache is not None:
            self._cache.close()
            self._cache = None


def warm_sentences(vectors: SentenceVectors, chunks: Iterable[Chunk], batch: int = 8,
                   stop: threading.Event | None = None) -> int:
    """Embed (into the cache) the sentences of ``chunks`` that extractive answers may score, a
    few at a time so that questions interleave; returns how many were embedded. Meant for a
    background thread at start-up: the first answers about each article are then as fast as
    the later ones."""
    sentences = [s for c in chunks for s in answer_sentences(c.text)]
    todo = vectors.missing(sentences)
    for start in range(0, len(todo), batch):
        if stop is not None and stop.is_set():
            return start
        vectors.passages(todo[start:start + batch])
    return len(todo)
