"""The learned ranker: the second stage after candidate retrieval and fusion.

Gradient-boosted trees (LightGBM, LambdaRank objective) over per-candidate features: the four
separate engine signals and their ranks, the fused score, the article prior, the question's
language and length, title/tag matches, the chunk's position in its article, its neighbouring
chunks' scores. LightGBM rather than scikit-learn: a listwise ranking objective (LambdaRank
optimises the top of each question's list, which is what MRR measures), trees that learn the
interactions a linear model cannot (a pairwise logistic regression over the same features
gained nothing), and a plain-text model dump that ships beside ``retrieval.json``. Trained by
``python -m evaluation.train_ranker``.

The model records the index recipe (embedder + passage recipe) it was trained on; the
retriever uses it only on an index with that recipe and falls back to the plain fusion
otherwise, because the vector signals' scale depends on the embedder.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np

from assistant.documents import Chunk
from assistant.engines.analysis import analyze
from assistant.engines.base import Hit
from assistant.errors import ConfigError

FEATURES = (
    "fused", "fused_rrank",
    "vector_chunk", "vector_chunk_gap", "vector_chunk_rrank",
    "vector_window", "vector_window_gap", "vector_window_rrank",
    "bm25_chunk", "bm25_chunk_rrank", "bm25_window", "bm25_window_rrank",
    "article_best", "article_share", "article_rank_rrank",
    "english", "question_words",
    "title_match", "tags_match",
    "position", "first_chunk",
    "neighbour_fused", "neighbour_vector_gap",
)

_POSITION = re.compile(r"-(\d+)$")


def chunk_position(chunk_id: str) -> int:
    """The chunk's number in its article (``<article>-<n>``; 0 if the id has none)."""
    match = _POSITION.search(chunk_id)
    return int(match.group(1)) if match else 0


def _reciprocal_ranks(values: np.ndarray) -> np.ndarray:
    """1 / rank of each value among ``values`` (best = highest = 1)."""
    order = np.argsort(-values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(1, len(values) + 1)
    return 1.0 / ranks


def _signal(hits: list[Hit], name: str, missing: str) -> np.ndarray:
    """One signal over the candidates; a candidate the engine did not measure it for (outside
    that candidate list on Elasticsearch) gets the list's lowest value, or 0."""
    values = [getattr(h, name) for h in hits]
    present = [v for v in values if v is not None and math.isfinite(v)]
    fill = (min(present) if present else 0.0) if missing == "min" else 0.0
    return np.array([v if v is not None and math.isfinite(v) else fill for v in values])


def features(question: str, language: str, fused: list[Hit],
             chunks: dict[str, Chunk]) -> np.ndarray:
    """The feature matrix (one row per candidate of ``fused``, columns :data:`FEATURES`).

    ``fused``: the fused hits, each carrying its engine signals (``retrieval.fuse`` merges
    them from the lexical and vector lists); ``chunks``: the candidates' stored chunks."""
    n = len(fused)
    rows = fused
    fused_scores = np.array([h.score for h in fused], dtype=np.float64)
    top = fused_scores.max() if n and fused_scores.max() > 0 else 1.0
    fused_norm = fused_scores / top
    vc = _signal(rows, "vector_chunk", "min")
    vw = _signal(rows, "vector_window", "min")
    bc = _signal(rows, "bm25_chunk", "zero")
    bw = _signal(rows, "bm25_window", "zero")
    bc_n = bc / bc.max() if bc.max() > 0 else bc
    bw_n = bw / bw.max() if bw.max() > 0 else bw

    articles = [h.article_id or (chunks[h.chunk_id].article_id if h.chunk_id in chunks else "")
                for h in fused]
    best_of: dict[str, float] = {}
    count_of: dict[str, int] = {}
    for article, score in zip(articles, fused_norm):
        best_of[article] = max(best_of.get(article, 0.0), score)
        count_of[article] = count_of.get(article, 0) + 1
    article_order = {a: i for i, a in enumerate(
        sorted(best_of, key=lambda a: -best_of[a]), start=1)}

    positions = [chunk_position(h.chunk_id) for h in fused]
    by_place = {(a, p): i for i, (a, p) in enumerate(zip(articles, positions))}
    q_terms = set(analyze(question))
    words = max(len(question.split()), 1)

    out = np.zeros((n, len(FEATURES)))
    rr_fused = _reciprocal_ranks(fused_scores)
    rr = {name: _reciprocal_ranks(v) for name, v in (("vc", vc), ("vw", vw), ("bc", bc), ("bw", bw))}
    for i, hit in enumerate(fused):
        chunk = chunks.get(hit.chunk_id)
        title = set(analyze(chunk.title)) if chunk else set()
        tags = set(analyze(chunk.tags)) if chunk else set()
        neighbours = [by_place[(articles[i], positions[i] + d)] for d in (-1, 1)
                      if (articles[i], positions[i] + d) in by_place]
        neighbour_fused = max((fused_norm[j] for j in neighbours), default=0.0)
        neighbour_vector = max((vc[j] for j in neighbours), default=vc[i])
        out[i] = (
            fused_norm[i], rr_fused[i],
            vc[i], vc[i] - vc.max(), rr["vc"][i],
            vw[i], vw[i] - vw.max(), rr["vw"][i],
            bc_n[i], rr["bc"][i], bw_n[i], rr["bw"][i],
            best_of[articles[i]], count_of[articles[i]] / n, 1.0 / article_order[articles[i]],
            1.0 if language != "fr" else 0.0, math.log(words),
            len(q_terms & title) / max(len(q_terms), 1), len(q_terms & tags) / max(len(q_terms), 1),
            math.log1p(positions[i]), 1.0 if positions[i] <= 1 else 0.0,
            neighbour_fused - fused_norm[i], neighbour_vector - vc[i],
        )
    return out


class LearnedRanker:
    """A trained LightGBM LambdaRank model over :data:`FEATURES`, and what it was trained for.

    The file is JSON holding LightGBM's own text dump of the trees (``model``) next to the
    index recipe, the query adapter the candidates were searched with, the candidate depth, the
    feature names and the training figures."""

    def __init__(self, index_model: str, depth: int, booster, trained_on: dict | None = None,
                 query_adapter: str = ""):
        self.index_model = index_model  # the index recipe the signals came from (IndexInfo.model)
        # The fingerprint of the query adapter its candidates were searched with ("" = none):
        # an adapter moves the vector signals, so the model only fits candidates searched alike.
        self.query_adapter = query_adapter
        self.depth = depth  # how many fused candidates it reorders
        self.booster = booster
        self.trained_on = dict(trained_on or {})

    def scores(self, matrix: np.ndarray) -> np.ndarray:
        return self.booster.predict(matrix, num_threads=1)

    def to_dict(self) -> dict:
        return {"kind": "lightgbm-lambdarank", "index_model": self.index_model,
                "query_adapter": self.query_adapter, "depth": self.depth,
                "features": list(FEATURES), "trained_on": self.trained_on,
                "model": self.booster.model_to_string()}

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> "LearnedRanker":
        import lightgbm

        p = Path(path)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"ranker model not found: {p} (train it with "
                              "`python -m evaluation.train_ranker`, or set \"ranker\": \"\" in "
                              "the retrieval configuration)") from None
        except ValueError as e:
            raise ConfigError(f"ranker model {p}: not valid JSON ({e})") from None
        if not isinstance(data, dict) or data.get("features") != list(FEATURES):
            raise ConfigError(f"ranker model {p} was trained on other features than this "
                              "version computes: re-train it with `python -m evaluation.train_ranker`")
        try:
            booster = lightgbm.Booster(model_str=data["model"])
            return cls(str(data["index_model"]), int(data["depth"]), booster,
                       trained_on=data.get("trained_on"),
                       query_adapter=str(data.get("query_adapter") or ""))
        except (KeyError, TypeError, ValueError, lightgbm.basic.LightGBMError) as e:
            raise ConfigError(f"ranker model {p}: malformed ({e})") from None
