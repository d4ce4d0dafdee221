"""Tune retrieval on ground-truth questions and write the configuration the product uses.

    python -m evaluation.tune --chunks FILE --questions FILE [--holdout 0.3] [--write PATH]

The questions are split once (seeded): the search picks field boosts, BM25 k1/b, the fusion
method and its weights on the tuning part only, then reports the chosen configuration on the
held-out part next to the current one, so an overfit shows as a gap between the two parts.
Lexical and vector candidates are computed once per setting and fused in memory, so the whole
search takes minutes. It runs on the embedded engine, whose BM25 matches Elasticsearch's.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import sys
from dataclasses import replace

import numpy as np

from tqdm import tqdm

from assistant.config import load_settings
from assistant.engines.base import LexicalParams
from assistant.errors import AssistantError
from assistant.retrieval import RetrievalConfig
from evaluation.retrieval import open_eval_retriever, read_questions
from indexing.sources import load_chunks

LEXICAL_GRID = {
    "title": (0.5, 1.0, 2.0),
    "tags": (0.3, 1.0),
    "tie_breaker": (0.0, 0.3),
    "k1_b": ((1.2, 0.75), (1.2, 0.9)),
    "windows": (0.0, 0.5, 1.0),
}
FUSION_GRID = [
    (fusion, k, w, prior)  # lexical weight 1: only the ratio matters
    for fusion, k, w in ([("rrf", k, w) for k in (20, 60) for w in (0.7, 1.0, 1.4)]
                         + [("weighted", 60, w) for w in (0.5, 0.7, 1.0, 1.4)])
    for prior in (0.0, 0.3, 0.6)
]
DEPTH = 100


def objective(hit: float, mrr: float) -> float:
    """What the search maximises: MRR, with hit rate as a tie breaker of equal weight."""
    return mrr + 0.5 * hit


class Matrices:
    """Candidate lists as dense (questions × chunks) arrays, so that thousands of fusion
    settings are scored with array operations instead of one fusion per question."""

    def __init__(self, chunk_ids: list[str], article_of: dict[str, str], targets: list[str]):
        self.column = {cid: j for j, cid in enumerate(chunk_ids)}
        _, self.article_index = np.unique([article_of[cid] for cid in chunk_ids],
                                          return_inverse=True)
        self.order = np.argsort(self.article_index, kind="stable")
        self.starts = np.flatnonzero(np.diff(self.article_index[self.order], prepend=-1))
        self.targets = np.array([self.column[t] for t in targets])

    def lists(self, hit_lists: list, depth: int) -> tuple[np.ndarray, np.ndarray]:
        """(min-max normalised scores, 1-based ranks; 0 where not a candidate)."""
        shape = (len(hit_lists), len(self.column))
        normalised, ranks = np.zeros(shape), np.zeros(shape)
        for i, hits in enumerate(hit_lists):
            hits = hits[:depth]
            if not hits:
                continue
            cols = [self.column[h.chunk_id] for h in hits]
            values = np.array([h.score for h in hits])
            spread = values.max() - values.min()
            normalised[i, cols] = (values - values.min()) / spread if spread > 0 else 1.0
            ranks[i, cols] = np.arange(1, len(hits) + 1)
        return normalised, ranks

    def with_prior(self, fused: np.ndarray, share: float) -> np.ndarray:
        if share <= 0:
            return fused
        best = np.maximum.reduceat(fused[:, self.order], self.starts, axis=1)
        return fused + share * best[:, self.article_index]

    def score(self, fused: np.ndarray, candidates: np.ndarray, k: int) -> tuple[float, float]:
        fused = np.where(candidates, fused, -np.inf)
        top = np.argsort(-fused, axis=1, kind="stable")[:, :k]
        found = top == self.targets[:, None]
        ranks = np.where(found.any(axis=1), found.argmax(axis=1) + 1, 0)
        return float((ranks > 0).mean()), float(np.where(ranks > 0, 1.0 / np.maximum(ranks, 1), 0).mean())


def fused_matrix(config: RetrievalConfig, lexical: tuple, vector: tuple) -> np.ndarray:
    w_lex, w_vec = config.weights.get("lexical", 1.0), config.weights.get("vector", 1.0)
    if config.fusion == "weighted":
        return w_lex * lexical[0] + w_vec * vector[0]
    k = config.rrf_k
    return (np.where(lexical[1] > 0, w_lex / (k + lexical[1]), 0)
            + np.where(vector[1] > 0, w_vec / (k + vector[1]), 0))


def evaluate_config(config, matrices: Matrices, lexical: tuple, vector: tuple, k: int):
    fused = matrices.with_prior(fused_matrix(config, lexical, vector), config.article_prior)
    candidates = (lexical[1] > 0) | (vector[1] > 0)
    return matrices.score(fused, candidates, k)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m evaluation.tune", description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", required=True)
    parser.add_argument("--questions", required=True)
    parser.add_argument("--holdout", type=float, default=0.3, help="share held out (0-0.9)")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--windows", default="", help="comma-separated window sizes to try "
                        "(words; 0 = none); default: the current configuration's")
    parser.add_argument("--write", help="write the chosen configuration here "
                        "(the product's default is assistant/retrieval.json)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if not 0 <= args.holdout < 0.9:
        parser.error("--holdout must be between 0 and 0.9")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        settings = load_settings()
        current = RetrievalConfig.load(settings.retrieval_config_file)
        chunks = load_chunks(args.chunks, size=settings.chunk_size, overlap=settings.chunk_overlap)
        questions = [q for q in read_questions(args.questions) if q.chunk]
    except AssistantError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    article_of = {c.chunk_id: c.article_id for c in chunks}
    order = list(range(len(questions)))
    random.Random(args.seed).shuffle(order)
    cut = int(len(order) * (1 - args.holdout))
    tune_ids, hold_ids = sorted(order[:cut]), sorted(order[cut:])
    windows = [int(w) for w in args.windows.split(",") if w.strip()] or [current.passage.window_words]

    vector_by_window = {}
    retriever = None
    for w in windows:
        config = replace(current, passage=replace(current.passage, window_words=w))
        retriever = open_eval_retriever(chunks, "embedded", settings, config, progress=not args.json)
        vector_by_window[w] = [retriever.engine.vector_search(retriever.query_vector(q.text), DEPTH)
                               for q in tqdm(questions, desc=f"vector w={w}", disable=args.json)]
    engine = retriever.engine

    def split(values, ids):
        return [values[i] for i in ids]

    chunk_ids = [c.chunk_id for c in chunks]
    parts = {"tuning": tune_ids, "held_out": hold_ids}
    matrices = {name: Matrices(chunk_ids, article_of, [questions[i].chunk for i in ids])
                for name, ids in parts.items()}
    depth = current.candidates
    vector_mats = {(name, w): matrices[name].lists(split(lists, ids), depth)
                   for w, lists in vector_by_window.items() for name, ids in parts.items()}

    def lexical_mats(lexical: LexicalParams, name: str) -> tuple:
        hits = [engine.lexical_search(questions[i].text, depth, params=lexical) for i in parts[name]]
        return matrices[name].lists(hits, depth)

    best = None
    grid = list(itertools.product(*LEXICAL_GRID.values()))
    for title, tags, tie, (k1, b), window_weight in tqdm(grid, desc="lexical grid",
                                                          disable=args.json):
        lexical = LexicalParams(boosts={"title": title, "tags": tags, "text": 1.0},
                                tie_breaker=tie, k1=k1, b=b, windows=window_weight)
        lex = lexical_mats(lexical, "tuning")
        for w in vector_by_window:
            for fusion, rrf_k, weight, prior in FUSION_GRID:
                config = RetrievalConfig(lexical=lexical, fusion=fusion, rrf_k=rrf_k,
                                         weights={"lexical": 1.0, "vector": weight},
                                         candidates=depth, article_prior=prior,
                                         foreign_lexical=current.foreign_lexical,
                                         passage=replace(current.passage, window_words=w))
                hit, mrr = evaluate_config(config, matrices["tuning"], lex,
                                           vector_mats[("tuning", w)], args.k)
                if best is None or objective(hit, mrr) > best[0]:
                    best = (objective(hit, mrr), config)

    chosen = best[1]
    report = {"questions": len(questions), "tuning": len(tune_ids), "held_out": len(hold_ids)}
    for name, config in (("current", current), ("chosen", chosen)):
        w = config.passage.window_words
        if w not in vector_by_window:
            continue
        for part in parts:
            hit, mrr = evaluate_config(config, matrices[part], lexical_mats(config.lexical, part),
                                       vector_mats[(part, w)], args.k)
            report[f"{name}_{part}"] = {"hit_rate": round(hit, 4), "mrr": round(mrr, 4)}
    report["chosen"] = chosen.to_dict()
    if args.write:
        held = report.get("chosen_held_out", {})
        chosen.save(args.write, comment=(
            f"Written by `python -m evaluation.tune` on {len(tune_ids)} tuning questions; "
            f"held-out ({len(hold_ids)}): hit@{args.k} {held.get('hit_rate')} "
            f"MRR@{args.k} {held.get('mrr')}"))
        report["written"] = args.write
    for key, value in report.items():
        if key != "chosen":
            print(f"{key}: {value}")
    print("chosen:", json.dumps(report["chosen"]))
    if args.json:
        print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
