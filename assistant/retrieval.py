"""Hybrid retrieval over any engine: lexical and vector candidates, fused on the client.

Fusion lives here, above the engine protocol, so both engines are fused and measured the same
way (server-side RRF would need a paid Elasticsearch licence anyway). The weights, boosts and
passage recipe come from one JSON file (``assistant/retrieval.json``) that the tuning command
writes.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Callable

import numpy as np

from assistant.config import load_json_config
from assistant.documents import Chunk
from assistant.engines.base import Engine, Hit, LexicalParams
from assistant.errors import ConfigError
from assistant.glossary import expand
from assistant.language import detect_language

log = logging.getLogger(__name__)

MODES = ("lexical", "vector", "hybrid")
FUSIONS = ("rrf", "weighted")
# Configuration keys that name a model file -> the field its loaded model goes in.
LOADED_MODELS = {"ranker": "ranker_model", "query_adapter": "query_adapter_model"}


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
    # English→French glossary terms added to the lexical query of non-French questions.
    glossary: bool = False
    # The learned ranker's model file, relative to this configuration file; "" = off (plain
    # fusion). Loaded into ``ranker_model`` by :meth:`load`.
    ranker: str = ""
    ranker_model: object = field(default=None, compare=False, repr=False)
    # The query adapter's file (``QueryAdapter``), relative to this configuration file; "" =
    # off (the embedder's question vector as it is). Loaded into ``query_adapter_model``.
    query_adapter: str = ""
    query_adapter_model: object = field(default=None, compare=False, repr=False)
    # Top-level keys this version does not know (other parts' blocks, e.g. "coverage"):
    # kept as they are and written back by :meth:`save`.
    extras: dict = field(default_factory=dict, compare=False, repr=False)

    def for_question(self, question: str) -> "RetrievalConfig":
        """The configuration to fuse this question's candidates with."""
        if self.foreign_lexical == 1.0 or detect_language(question) == "fr":
            return self
        weights = dict(self.weights)
        weights["lexical"] = weights.get("lexical", 1.0) * self.foreign_lexical
        for signal in ("bm25_chunk", "bm25_window"):
            if signal in weights:
                weights[signal] *= self.foreign_lexical
        return replace(self, weights=weights)

    @classmethod
    def from_dict(cls, data: dict) -> "RetrievalConfig":
        try:
            lexical = LexicalParams(**data.get("lexical", {}))
            passage = PassageRecipe(**data.get("passage", {}))
            known = {f.name for f in fields(cls)} - {*LOADED_MODELS.values(), "extras", "lexical",
                                                     "passage"}
            rest = {k: v for k, v in data.items() if k in known}
            extras = {k: v for k, v in data.items()
                      if k not in known and k not in ("lexical", "passage", "_comment")}
            config = cls(lexical=lexical, passage=passage, extras=extras, **rest)
        except TypeError as e:
            raise ConfigError(f"retrieval configuration: {e}") from None
        if config.fusion not in FUSIONS:
            raise ConfigError(f"retrieval configuration: fusion must be one of {FUSIONS}")
        if set(config.lexical.boosts) - {"title", "tags", "text"}:
            raise ConfigError("retrieval configuration: boosts apply to title, tags and text only")
        return config

    @classmethod
    def load(cls, path: str | Path) -> "RetrievalConfig":
        """The configuration in ``path``, with the model files it names loaded (they live
        beside it)."""
        from assistant.query_adapter import QueryAdapter
        from assistant.ranker import LearnedRanker

        loaders = {"ranker": LearnedRanker.load, "query_adapter": QueryAdapter.load}
        config = cls.from_dict(load_json_config(path))
        for key, model_field in LOADED_MODELS.items():
            if getattr(config, key):
                model = loaders[key](Path(path).parent / getattr(config, key))
                config = replace(config, **{model_field: model})
        return config

    def to_dict(self) -> dict:
        data = asdict(self)
        for model in LOADED_MODELS.values():
            data.pop(model)
        data.update(data.pop("extras"))
        return data

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


# The separate engine signals fusion can weigh, by the candidate list they come from.
SIGNALS = {"vector_chunk": "vector", "vector_window": "vector",
           "bm25_chunk": "lexical", "bm25_window": "lexical"}


def signal_rankings(rankings: dict[str, list[Hit]], weights: dict[str, float]) -> dict[str, list[Hit]]:
    """The lists fusion weighs: each weighted separate signal (``weights`` keys of
    :data:`SIGNALS`) becomes its own list, ordered by that signal, from the candidates of its
    engine list; "lexical"/"vector" stay the engines' combined scores."""
    out = {name: hits for name, hits in rankings.items() if weights.get(name, 1.0) != 0}
    for signal, source in SIGNALS.items():
        if not weights.get(signal) or source not in rankings:
            continue
        hits = [replace(h, score=getattr(h, signal)) for h in rankings[source]
                if getattr(h, signal) is not None]
        out[signal] = sorted(hits, key=lambda h: (-h.score, h.chunk_id))
    return out


def merge_signals(rankings: dict[str, list[Hit]]) -> dict[str, Hit]:
    """chunk id -> one hit carrying every signal the engines gave for that chunk."""
    merged: dict[str, Hit] = {}
    for hits in rankings.values():
        for h in hits:
            known = merged.get(h.chunk_id)
            if known is None:
                merged[h.chunk_id] = h
                continue
            merged[h.chunk_id] = replace(known, **{
                s: getattr(h, s) for s in SIGNALS if getattr(known, s) is None
                and getattr(h, s) is not None})
    return merged


def fuse(rankings: dict[str, list[Hit]], config: RetrievalConfig) -> list[Hit]:
    """One ranking from several, with the configured method, weights and article prior.
    The fused hits carry the engines' separate signals (:func:`merge_signals`)."""
    signals = merge_signals(rankings)
    rankings = signal_rankings(rankings, config.weights)
    if config.fusion == "rrf":
        fused = rrf(rankings, config.weights, config.rrf_k)
    else:
        fused = weighted_sum(rankings, config.weights)
    article_of = {h.chunk_id: h.article_id for hits in rankings.values() for h in hits}
    if config.article_prior > 0:
        fused = add_article_prior(fused, article_of, config.article_prior)
    return [replace(signals[h.chunk_id], score=h.score, article_id=article_of.get(h.chunk_id, ""))
            if h.chunk_id in signals else Hit(h.chunk_id, h.score, article_of.get(h.chunk_id, ""))
            for h in fused]


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
    ranker: float = 0.0
    llm_rerank: float = 0.0


@dataclass(frozen=True)
class Ranking:
    """Chunk ids and scores, best first, and what finding them took."""

    hits: list[Hit]
    timing: Timing
    # The engines' candidate lists behind a hybrid ranking ("lexical", "vector"), best first.
    candidates: dict = field(default_factory=dict, repr=False)
    # What the LLM reranker did (applied or not, tokens, cost), when there is one.
    llm_rerank: object = field(default=None, repr=False)


@dataclass(frozen=True)
class Retrieval:
    """The best passages with their chunks, and what finding them took."""

    passages: list[Passage]
    timing: Timing
    # What the LLM reranker did, when there is one (its reply is billed to the exchange).
    llm_rerank: object = field(default=None, repr=False)


class Retriever:
    """Lexical, vector or hybrid search over one engine with one configuration.

    Shared by every request thread: it keeps no per-search state (the timing comes back with
    each result). Questions are taken as given; callers validate what readers type
    (:func:`assistant.answering.request.validate_question`)."""

    def __init__(self, engine: Engine, embed_query: Callable[[str], np.ndarray],
                 config: RetrievalConfig | None = None, second_stage=None):
        self.engine = engine
        self.embed_query = embed_query
        self.config = config or RetrievalConfig()
        # An optional reranker applied after fusion and the learned ranker, e.g.
        # :class:`assistant.llm_reranker.LLMReranker`; it never raises.
        self.second_stage = second_stage
        self._fitting: dict[str, object] = {}

    def _fitting_model(self, key: str, fallback: str):
        """The configuration's model for ``key`` (a :data:`LOADED_MODELS` key) if it fits this
        search (:meth:`_misfit`), else None (``fallback`` said once in the log)."""
        if key not in self._fitting:
            model = getattr(self.config, LOADED_MODELS[key])
            if model is not None:
                misfit = self._misfit(key, model)
                if misfit:
                    log.warning("the %s model %s: %s", key, misfit, fallback)
                    model = None
            self._fitting[key] = model
        return self._fitting[key]

    def _misfit(self, key: str, model) -> str:
        """Why a learned model does not fit this search, "" when it does: it must have been
        trained on this index recipe and, for the ranker, on candidates searched with the query
        adapter this search uses."""
        info = self.engine.info()
        if info is None or info.model != model.index_model:
            return f"was trained for {model.index_model}, the index is {info and info.model}"
        if key == "ranker":
            adapter = self.query_adapter
            used = adapter.fingerprint if adapter is not None else ""
            if model.query_adapter != used:
                return (f"was trained on candidates searched with query adapter "
                        f"{model.query_adapter or 'none'}, this search uses {used or 'none'}")
        return ""

    @property
    def ranker(self):
        """The configured learned ranker if it fits this search (:meth:`_misfit`), else None
        (plain fusion)."""
        return self._fitting_model("ranker", "ranking by plain fusion")

    @property
    def query_adapter(self):
        """The configured query adapter if it fits the index, else None (the question's vector
        as embedded)."""
        return self._fitting_model("query_adapter", "searching with unadapted question vectors")

    def query_vector(self, question: str) -> np.ndarray:
        """The vector the vector search uses: the question's embedding, corrected by the query
        adapter when one fits the index."""
        vector = self.embed_query(question)
        return vector if self.query_adapter is None else self.query_adapter.apply(vector)

    def rank(self, question: str, k: int = 10, *, mode: str = "hybrid",
             category: str | None = None) -> Ranking:
        """Chunk ids and scores, best first (no chunk text: what evaluation needs)."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        started = time.perf_counter()
        lexical = embedding = vector_time = 0.0
        depth = max(k, self.config.candidates) if mode == "hybrid" else k
        rankings: dict[str, list[Hit]] = {}
        language = detect_language(question)
        if mode in ("lexical", "hybrid"):
            t = time.perf_counter()
            query = expand(question) if self.config.glossary and language != "fr" else question
            rankings["lexical"] = self.engine.lexical_search(
                query, depth, category=category, params=self.config.lexical)
            lexical = time.perf_counter() - t
        if mode in ("vector", "hybrid"):
            t = time.perf_counter()
            vector = self.query_vector(question)
            embedding = time.perf_counter() - t
            t = time.perf_counter()
            rankings["vector"] = self.engine.vector_search(vector, depth, category=category)
            vector_time = time.perf_counter() - t
        ranker_time = second_time = 0.0
        second = None
        if mode == "hybrid":
            hits = fuse(rankings, self.config.for_question(question))
            if self.ranker is not None and hits:
                t = time.perf_counter()
                hits = self.rerank(question, language, hits)
                ranker_time = time.perf_counter() - t
            if self.second_stage is not None and hits:
                t = time.perf_counter()
                second = self.second_stage.rerank(question, hits, self.engine.get_chunks)
                hits, second_time = second.hits, time.perf_counter() - t
            hits = hits[:k]
        else:
            hits = rankings[mode]
        return Ranking(hits, Timing(embedding=embedding, lexical=lexical, vector=vector_time,
                                    total=time.perf_counter() - started, ranker=ranker_time,
                                    llm_rerank=second_time), rankings, second)

    def rerank(self, question: str, language: str, fused: list[Hit]) -> list[Hit]:
        """The ranker's order of the top fused candidates (the rest follow in fused order).
        Each reordered hit keeps its fused ``score`` and signals; the order is the ranker's."""
        from assistant.ranker import features

        model = self.ranker
        head, tail = fused[:model.depth], fused[model.depth:]
        chunks = self.engine.get_chunks([h.chunk_id for h in head])
        matrix = features(question, language, head, chunks)
        scores = model.scores(matrix)
        order = sorted(range(len(head)), key=lambda i: (-scores[i], i))
        return [replace(head[i], ranker=float(scores[i])) for i in order] + tail

    def search(self, question: str, k: int = 5, *, mode: str = "hybrid",
               category: str | None = None) -> Retrieval:
        """The best ``k`` passages with their chunks."""
        ranking = self.rank(question, k, mode=mode, category=category)
        chunks = self.engine.get_chunks([h.chunk_id for h in ranking.hits])
        passages = [Passage(chunks[h.chunk_id], h.score) for h in ranking.hits
                    if h.chunk_id in chunks]
        return Retrieval(passages, ranking.timing, ranking.llm_rerank)

    def without_second_stage(self) -> "Retriever":
        """The same search on the same engine, stopping after fusion and the learned ranker
        (what answers that must not call the LLM use)."""
        return Retriever(self.engine, self.embed_query, self.config)

    def indexed_chunks(self) -> list[Chunk]:
        """Every chunk of the index (for warm-ups that prepare per-passage data)."""
        return list(self.engine.get_chunks(sorted(self.engine.chunk_hashes())).values())

    def close(self) -> None:
        self.engine.close()
