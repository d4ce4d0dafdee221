"""Does the blog cover a question? The coverage gate, decided before any answer is written.

    gate = CoverageGate.from_config(retriever, embedder, coverage_block, cache=cache)
    decision = gate.decide("What is the capital of Australia?")
    decision.covered, decision.score, decision.related      # False, 0.03, []

The evidence (:func:`gather_evidence`, the one function that reads the engine) is built from
signals that do not depend on the fusion weights, so a change of ranker leaves it valid:

* the best raw cosine of the question to the index, and how far it stands above the cosine at
  the end of the candidate list (e5 cosines live in a narrow 0.8–0.9 band for any text: the
  relative figures carry the information);
* the margin over a *background*: the same question against a small shipped set of generic,
  unrelated sentences (:data:`BACKGROUND`), embedded once — how much closer to the blog than
  to anything at all;
* the best raw BM25, normalised by what the question could score (the question scored against
  itself as a document, with the corpus's idf);
* the share of the question's analysed terms found in the corpus vocabulary;
* agreement of the lexical and vector top lists (shared articles) and how concentrated the top
  vector hits are on one article;
* whether the question is English (the index is French: its lexical evidence is weaker).

A logistic regression over those features gives a score in [0, 1]; the question is covered when
the score reaches the threshold of its language (English questions have their own: with a French
index their evidence is weaker, and false refusals of real readers cost more than a miss). Coefficients and threshold live in ``retrieval.json`` under
``"coverage"``, keyed per embedder model, written by ``python -m evaluation.coverage
--calibrate`` (never guessed). Without a calibration for the embedder in use, every question is
covered (the gate is off) and the start-up log says so.

The two searches it runs are engine-level (no fusion, no chunk text) on an already memoised
query vector: a millisecond or two on the embedded engine.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, NamedTuple, Sequence

import numpy as np

from assistant.engines.analysis import analyze
from assistant.errors import ConfigError
from assistant.language import detect_language

log = logging.getLogger(__name__)

DEPTH = 50  # candidates read from each list
NOT_COVERED = {
    "fr": "Le blog ne traite pas de cette question : je ne peux donc pas y répondre à partir de "
          "ses articles.",
    "en": "The blog does not cover this question, so I cannot answer it from its articles.",
}

FEATURES = ("best_cosine", "cosine_spread", "background_margin", "bm25_normalised",
            "vocabulary_share", "agreement", "concentration", "english")

# Generic sentences on everything the blog is not about (cooking, taxes, sport, code, health,
# travel, law …), in both languages: the background a question is compared with.
BACKGROUND = (
    "Recette facile de gâteau au chocolat et de tarte aux pommes pour le dessert.",
    "Easy dinner recipes: roast chicken, pasta sauce and baking bread at home.",
    "Comment remplir sa déclaration d'impôts sur le revenu et payer la TVA.",
    "How to file your income tax return, deductions and small business accounting.",
    "Résultats du championnat de football, transferts des joueurs et classement.",
    "Marathon training plan, running shoes and tips to improve your fitness.",
    "Python programming tutorial: functions, classes, lists and debugging errors.",
    "Installer un serveur web, configurer une base de données SQL et du JavaScript.",
    "Symptômes de la grippe, médicaments, rendez-vous chez le médecin et vaccins.",
    "Healthy diet, losing weight, vitamins, sleep and blood pressure advice.",
    "Réserver un vol pas cher, visiter Paris, Rome ou Tokyo pendant les vacances.",
    "Travel guide: best hotels, visas, passports and what to see in the city.",
    "Droit du travail, contrat de location, divorce et démarches administratives.",
    "Car maintenance: changing the oil, tyres, brakes and the car insurance.",
    "Jardinage : planter des tomates, tailler les rosiers et entretenir la pelouse.",
    "Home repair: painting walls, plumbing leaks and installing kitchen cabinets.",
    "Crédit immobilier, taux d'intérêt, épargne, bourse et placements financiers.",
    "Stock market investing, cryptocurrency, mortgages and retirement savings.",
    "Élever un chien ou un chat : alimentation, dressage et vétérinaire.",
    "Parenting tips, school homework, children's education and family life.",
    "La météo de demain : pluie, températures et prévisions pour le week-end.",
    "History of the Roman empire, world wars, kings and famous battles.",
    "Élections, gouvernement, politique étrangère et débats à l'Assemblée.",
    "Smartphone reviews, laptop prices, battery life and phone screen repair.",
    "Tricot, couture, décoration de la maison et bricolage du dimanche.",
    "Chemistry, biology and physics lessons: atoms, cells and gravity.",
    "Apprendre une langue étrangère : grammaire anglaise, vocabulaire espagnol.",
    "Job interview questions, writing a CV and asking for a pay rise.",
    "Recettes de cocktails, vins de Bordeaux et accords mets et vins.",
    "Video games, console release dates, walkthroughs and esports tournaments.",
    "Peindre à l'aquarelle, dessiner un portrait et la photographie de paysage.",
    "Wedding planning, dresses, flowers, guest lists and the reception venue.",
)


@dataclass(frozen=True)
class Evidence:
    """What retrieval says about one question (see the module doc), and the vector hits."""

    values: tuple[float, ...]
    vector_hits: tuple = ()  # (chunk_id, cosine, article_id), best first

    def as_dict(self) -> dict:
        return {name: round(v, 4) for name, v in zip(FEATURES, self.values)}


@dataclass(frozen=True)
class Decision:
    """The gate's answer: covered or not, the score it came from, and close articles."""

    covered: bool
    score: float | None  # None: no calibration, the gate is off
    # when not covered: the best chunk of each genuinely close article (at most 3), closest first
    related_chunks: tuple[str, ...] = ()


@dataclass(frozen=True)
class Calibration:
    """A logistic regression over standardised :data:`FEATURES`, its threshold, and the
    cosine an article must reach to be offered as related."""

    coefficients: tuple[float, ...]
    intercept: float
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    thresholds: dict  # language ("fr", "en") -> threshold
    related_cosine: float
    comment: str = ""

    def threshold(self, language: str) -> float:
        return float(self.thresholds.get(language, self.thresholds.get("fr", 0.5)))

    def score(self, values: Sequence[float]) -> float:
        z = self.intercept + sum(c * (v - m) / s for c, v, m, s in
                                 zip(self.coefficients, values, self.mean, self.scale))
        return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z))))

    @classmethod
    def from_dict(cls, data: dict) -> "Calibration":
        try:
            features = tuple(data["features"])
            if features != FEATURES:
                raise ConfigError(f"coverage calibration: features {features} are not the gate's "
                                  f"{FEATURES}: run the calibration again")
            calibration = cls(tuple(map(float, data["coefficients"])), float(data["intercept"]),
                              tuple(map(float, data["mean"])), tuple(map(float, data["scale"])),
                              {str(k): float(v) for k, v in dict(data["thresholds"]).items()},
                              float(data["related_cosine"]),
                              str(data.get("_comment", "")))
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"coverage calibration: missing or bad value ({e})") from None
        n = len(FEATURES)
        if not (len(calibration.coefficients) == len(calibration.mean) == len(calibration.scale) == n):
            raise ConfigError(f"coverage calibration: expected {n} coefficients, means and scales")
        if not calibration.thresholds or not all(0.0 <= t <= 1.0 for t in calibration.thresholds.values()):
            raise ConfigError("coverage calibration: thresholds must be within [0, 1]")
        return calibration

    def to_dict(self) -> dict:
        data = {"_comment": self.comment} if self.comment else {}
        # Thresholds rounded down: one put just below a question's score must stay below it.
        thresholds = {k: math.floor(v * 1e4) / 1e4 for k, v in sorted(self.thresholds.items())}
        data.update({"features": list(FEATURES),
                     "coefficients": [round(c, 6) for c in self.coefficients],
                     "intercept": round(self.intercept, 6), "mean": [round(m, 6) for m in self.mean],
                     "scale": [round(s, 6) for s in self.scale], "thresholds": thresholds,
                     "related_cosine": round(self.related_cosine, 4)})
        return data


def calibration_for(coverage_block: dict | None, model: str) -> Calibration | None:
    """The calibration of ``model`` in the ``"coverage"`` block of retrieval.json, or None."""
    if not coverage_block:
        return None
    if not isinstance(coverage_block, dict):
        raise ConfigError("retrieval configuration: \"coverage\" must be an object keyed by "
                          "embedder model")
    data = coverage_block.get(model)
    return Calibration.from_dict(data) if data else None


class Vocabulary:
    """Document frequencies of the index's analysed terms (title and text), built once."""

    def __init__(self, term_lists: Sequence[Sequence[str]]):
        self.n_docs = len(term_lists)
        self.df: Counter[str] = Counter()
        lengths = []
        for terms in term_lists:
            self.df.update(set(terms))
            lengths.append(len(terms))
        self.avg_length = (sum(lengths) / len(lengths)) if lengths else 1.0

    @classmethod
    def of_chunks(cls, chunks) -> "Vocabulary":
        return cls([analyze(f"{c.title}\n{c.text}") for c in chunks])

    def idf(self, term: str) -> float:
        df = self.df.get(term, 0)
        return math.log(1 + (self.n_docs - df + 0.5) / (df + 0.5))

    def self_score(self, terms: Sequence[str], k1: float = 1.2, b: float = 0.75) -> float:
        """BM25 of the question against itself as a document: what it could score at best."""
        counts = Counter(terms)
        length_norm = k1 * (1 - b + b * len(terms) / max(self.avg_length, 1.0))
        return sum(self.idf(t) * tf * (k1 + 1) / (tf + length_norm) for t, tf in counts.items())


def gather_evidence(question: str, query_vector: np.ndarray, engine, lexical_params,
                    vocabulary: Vocabulary, background: np.ndarray,
                    *, category: str | None = None) -> Evidence:
    """The gate's evidence for ``question``: the one function that reads the engine (raw
    vector and BM25 lists, ranks, article ids; no fused score)."""
    vector = np.asarray(query_vector, dtype=np.float32).ravel()
    vector_hits = engine.vector_search(vector, DEPTH, category=category)
    lexical_hits = engine.lexical_search(question, DEPTH, category=category, params=lexical_params)
    cosines = [h.score for h in vector_hits]
    best = cosines[0] if cosines else 0.0
    spread = best - cosines[-1] if len(cosines) > 1 else 0.0
    bg = float(np.max(background @ vector)) if len(background) else 0.0

    terms = analyze(question)
    k1 = getattr(lexical_params, "k1", 1.2)
    b = getattr(lexical_params, "b", 0.75)
    possible = vocabulary.self_score(terms, k1, b) if terms else 0.0
    bm25 = lexical_hits[0].score / possible if lexical_hits and possible > 0 else 0.0
    known = sum(t in vocabulary.df for t in terms) / len(terms) if terms else 0.0

    top_vec = [h.article_id for h in vector_hits[:5]]
    top_lex = [h.article_id for h in lexical_hits[:5]]
    agreement = len(set(top_vec) & set(top_lex)) / 5.0
    ten = [h.article_id for h in vector_hits[:10]]
    concentration = Counter(ten).most_common(1)[0][1] / len(ten) if ten else 0.0
    english = 1.0 if detect_language(question) == "en" else 0.0
    bm25 = min(bm25, 3.0)
    values = (best, spread, best - bg, bm25, known, agreement, concentration, english)
    return Evidence(tuple(float(v) for v in values),
                    tuple((h.chunk_id, float(h.score), h.article_id) for h in vector_hits[:10]))


class _Prepared(NamedTuple):
    """What the gate prepares once: the background's vectors, and the index's vocabulary as of
    the index ``stamp`` (count, last update), checked again after ``recheck_seconds``."""

    background: np.ndarray
    vocabulary: Vocabulary
    stamp: tuple
    checked_at: float


@dataclass
class CoverageGate:
    """Decides coverage for one retriever's index (thread-safe; prepares its background and
    vocabulary on first use, or in :meth:`warm_up`).

    ``embed_passages``: texts → unit vectors, the passage side of the embedder (the background
    is compared with questions as passages are)."""

    retriever: object
    embed_passages: Callable[[list[str]], np.ndarray]
    calibration: Calibration | None
    # How often the index is asked whether it changed (an index job added or removed
    # articles): the vocabulary is then rebuilt, so new articles' words count at once.
    recheck_seconds: float = 60.0
    _ready: _Prepared | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @property
    def enabled(self) -> bool:
        return self.calibration is not None

    def warm_up(self) -> None:
        self._prepared()

    def _index_stamp(self) -> tuple:
        info = self.retriever.engine.info()
        return (info.count, info.updated_at) if info is not None else (0, "")

    def _prepared(self) -> _Prepared:
        ready = self._ready
        if ready is not None and time.monotonic() - ready.checked_at < self.recheck_seconds:
            return ready
        with self._lock:
            ready = self._ready
            if ready is not None and time.monotonic() - ready.checked_at < self.recheck_seconds:
                return ready
            stamp = self._index_stamp()
            background = ready.background if ready is not None else np.asarray(
                self.embed_passages(list(BACKGROUND)), dtype=np.float32)
            vocabulary = ready.vocabulary if ready is not None and ready.stamp == stamp else \
                Vocabulary.of_chunks(self.retriever.indexed_chunks())
            self._ready = _Prepared(background, vocabulary, stamp, time.monotonic())
            return self._ready

    def evidence(self, question: str, *, category: str | None = None) -> Evidence:
        prepared = self._prepared()
        background, vocabulary = prepared.background, prepared.vocabulary
        r = self.retriever
        return gather_evidence(question, r.embed_query(question), r.engine, r.config.lexical,
                               vocabulary, background, category=category)

    def decide(self, question: str, *, category: str | None = None) -> Decision:
        """Covered or not, for the stand-alone question (a follow-up's rewrite)."""
        if self.calibration is None:
            return Decision(True, None)
        evidence = self.evidence(question, category=category)
        score = self.calibration.score(evidence.values)
        language = "en" if evidence.values[FEATURES.index("english")] else "fr"
        if score >= self.calibration.threshold(language):
            return Decision(True, round(score, 6))
        related: dict[str, str] = {}  # article id -> its best chunk
        for chunk_id, cosine, article_id in evidence.vector_hits:
            if cosine < self.calibration.related_cosine or len(related) == 3:
                break
            related.setdefault(article_id or chunk_id, chunk_id)
        return Decision(False, round(score, 6), tuple(related.values()))
