"""Hybrid retrieval over any engine: lexical and vector candidates, fused on the client.

Fusion lives here, above the engine protocol, so both engines are fused and measured the same
way (server-side RRF would need a paid Elasticsearch licence anyway). The weights, boosts and
passage recipe come from one JSON file (``assistant/retrieval.json``) that the tuning command
writes.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from assistant.config import load_json_config
from assistant.documents import Chunk
from assistant.engines.base import Engine, Hit, LexicalParams
from assistant.errors import ConfigError
from assistant.language import detect_language

MODES = ("lexical", "vector", "hybrid")
FUSIONS = ("rrf", "weighted")


@dataclass(frozen=True)
class PassageRecipe:
    """What is embedded for a chunk: its title before the text, and sentence windows."""

    title: bool = True
    window_words: int = 0  # 0: one vector per chunk; else also windows of about this many words
    window_title: bool = False  # put the article title before each window too

    @property
    def tag(self) -> str:
        tag = f"title={int(self.title)},windows={self.window_words}"
        return tag + ",window_title=1" if self.window_title else tag


@dataclass(frozen=True)
class RetrievalConfig:
    """Everything that decides a ranking, loaded from and saved to one JSON file."""

    lexical: LexicalParams = field(default_factory=LexicalParams)
    fusion: str = "rrf"
    rrf_k: int = 60
    weights: dict = field(default_factory=lambda: {"lexical": 1.0, "vector": 1.0})
    candidates: int = 50
    # Share of its article's best fused score added to each chunk: once the right article is
    # clear, its other chunks outrank loose matches from elsewhere.
    article_prior: float = 0.0
    # The lexical weight is multiplied by this for questions not in French: the index is
    # French, and BM25 over its French terms only catches an English question's loan words.
    foreign_lexical: float = 1.0
    passage: PassageRecipe = field(default_factory=PassageRecipe)

    def for_question(self, question: str) -> "RetrievalConfig":
        """The configuration to fuse this question's candidates with."""
        if self.foreign_lexical == 1.0 or detect_language(question) == "fr":
            return self
        weights = dict(self.weights)
        weights["lexical"] = weights.get("lexical", 1.0) * self.foreign_lexical
        return replace(self, weights=weights)

    @classmethod
    def from_dict(cls, data: dict) -> "RetrievalConfig":
        try:
            lexical = LexicalParams(**data.get("lexical", {}))
            passage = PassageRecipe(**data.get("passage", {}))
            # "coverage": the coverage gate's calibration (assistant.answering.coverage)
            rest = {k: v for k, v in data.items()
                    if k not in ("lexical", "passage", "_comment", "coverage")}
            config = cls(lexical=lexical, passage=passage, **rest)
        except TypeError as e:
            raise ConfigError(f"retrieval configuration: {e}") from None
        if config.fusion not in FUSIONS:
            raise ConfigError(f"retrieval configuration: fusion must be one of {FUSIONS}")
        if set(config.lexical.boosts) - {"title", "tags", "text"}:
            raise ConfigError("retrieval configuration: boosts apply to title, tags and text only")
        return config

    @classmethod
    def load(cls, path: str | Path) -> "RetrievalConfig":
        return cls.from_dict(load_json_config(path))

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path: str | Path, comment: str = "") -> None:
        data = {"_comment": comment} if comment else {}
        data.update(self.to_dict())
        Path(path).write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def passage_text(chunk: Chunk, recipe: PassageRecipe) -> str:
    """The text embedded for a chunk's main vector."""
    return f"{chunk.title}\n{chunk.text}" if recipe.title and chunk.title else chunk.text


def rrf(rankings: dict[str, list[Hit]], weights: dict[str, float], k: int = 60) -> list[Hit]:
    """Weighted reciprocal rank fusion: sum of weight / (k + rank) over the lists."""
    scores: dict[str, float] = {}
    for name, hits in rankings.items():
        w = weights.get(name, 1.0)
        for rank, hit in enumerate(hits, start=1):
            scores[hit.chunk_id] = scores.get(hit.chunk_id, 0.0) + w / (k + rank)
    return [Hit(cid, s) for cid, s in sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))]


def weighted_sum(rankings: dict[str, list[Hit]], weights: dict[str, float]) -> list[Hit]:
    """Sum of min-max normalised scores, weighted; a list that misses a chunk gives it 0."""
    scores: dict[str, float] = {}
    for name, hits in rankings.items():
        if not hits:
            continue
        values = np.array([h.score for h in hits], dtype=np.float64)
        low, high = values.min(), values.max()
        spread = high - low
        w = weights.get(name, 1.0)
        for hit, value in zip(hits, values):
            normalised = (value - low) / spread if spread > 0 else 1.0
            scores[hit.chunk_id] = scores.get(hit.chunk_id, 0.0) + w * normalised
    return [Hit(cid, s) for cid, s in sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))]


def add_article_prior(hits: list[Hit], article_of: dict[str, str], share: float) -> list[Hit]:
    """Add ``share`` × the best score among each hit's article to the hit, and re-sort."""
    best: dict[str, float] = {}
    for hit in hits:
        article = article_of.get(hit.chunk_id, hit.chunk_id)
        best[article] = max(best.get(article, hit.score), hit.score)
    boosted = [Hit(h.chunk_id, h.score + share * best[article_of.get(h.chunk_id, h.chunk_id)],
                   article_of.get(h.chunk_id, "")) for h in hits]
    return sorted(boosted, key=lambda h: (-h.score, h.chunk_id))


def fuse(rankings: dict[str, list[Hit]], config: RetrievalConfig) -> list[Hit]:
    """One ranking from several, with the configured method, weights and article prior."""
    if config.fusion == "rrf":
        fused = rrf(rankings, config.weights, config.rrf_k)
    else:
        fused = weighted_sum(rankings, config.weights)
    article_of = {h.chunk_id: h.article_id for hits in rankings.values() for h in hits}
    if config.article_prior > 0:
        return add_article_prior(fused, article_of, config.article_prior)
    return [Hit(h.chunk_id, h.score, article_of.get(h.chunk_id, "")) for h in fused]


@dataclass(frozen=True)
class Passage:
    """A retrieved chunk with its fused score."""

    chunk: Chunk
    score: float


@dataclass(frozen=True)
class Timing:
    """Seconds spent by one search, per step (``total`` includes the others)."""

    embedding: float = 0.0
    lexical: float = 0.0
    vector: float = 0.0
    total: float = 0.0


@dataclass(frozen=True)
class Ranking:
    """Chunk ids and scores, best first, and what finding them took."""

    hits: list[Hit]
    timing: Timing


@dataclass(frozen=True)
class Retrieval:
    """The best passages with their chunks, and what finding them took."""

    passages: list[Passage]
    timing: Timing


class Retriever:
    """Lexical, vector or hybrid search over one engine with one configuration.

    Shared by every request thread: it keeps no per-search state (the timing comes back with
    each result). Questions are taken as given; callers validate what readers type
    (:func:`assistant.answering.request.validate_question`)."""

    def __init__(self, engine: Engine, embed_query: Callable[[str], np.ndarray],
                 config: RetrievalConfig | None = None):
        self.engine = engine
        self.embed_query = embed_query
        self.config = config or RetrievalConfig()

    def rank(self, question: str, k: int = 10, *, mode: str = "hybrid",
             category: str | None = None) -> Ranking:
        """Chunk ids and scores, best first (no chunk text: what evaluation needs)."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        started = time.perf_counter()
        lexical = embedding = vector_time = 0.0
        depth = max(k, self.config.candidates) if mode == "hybrid" else k
        rankings: dict[str, list[Hit]] = {}
        if mode in ("lexical", "hybrid"):
            t = time.perf_counter()
            rankings["lexical"] = self.engine.lexical_search(
                question, depth, category=category, params=self.config.lexical)
            lexical = time.perf_counter() - t
        if mode in ("vector", "hybrid"):
            t = time.perf_counter()
            vector = self.embed_query(question)
            embedding = time.perf_counter() - t
            t = time.perf_counter()
            rankings["vector"] = self.engine.vector_search(vector, depth, category=category)
            vector_time = time.perf_counter() - t
        hits = (fuse(rankings, self.config.for_question(question))[:k] if mode == "hybrid"
                else rankings[mode])
        return Ranking(hits, Timing(embedding=embedding, lexical=lexical, vector=vector_time,
                                    total=time.perf_counter() - started))

    def search(self, question: str, k: int = 5, *, mode: str = "hybrid",
               category: str | None = None) -> Retrieval:
        """The best ``k`` passages with their chunks."""
        ranking = self.rank(question, k, mode=mode, category=category)
        chunks = self.engine.get_chunks([h.chunk_id for h in ranking.hits])
        passages = [Passage(chunks[h.chunk_id], h.score) for h in ranking.hits
                    if h.chunk_id in chunks]
        return Retrieval(passages, ranking.timing)

    def indexed_chunks(self) -> list[Chunk]:
        """Every chunk of the index (for warm-ups that prepare per-passage data)."""
        return list(self.engine.get_chunks(sorted(self.engine.chunk_hashes())).values())

    def close(self) -> None:
        self.engine.close()
