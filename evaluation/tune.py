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

from tqdm import tqdm

from assistant.config import load_settings
from assistant.engines.base import LexicalParams
from assistant.errors import AssistantError
from assistant.retrieval import RetrievalConfig, fuse
from evaluation.retrieval import first_relevant_rank, open_eval_retriever, read_questions
from indexing.sources import load_chunks

LEXICAL_GRID = {
    "title": (0.5, 1.0, 2.0),
    "tags": (0.3, 1.0),
    "tie_breaker": (0.0, 0.3),
    "k1_b": ((1.2, 0.75), (1.2, 0.9)),
    "windows": (0.0, 0.5, 1.0),
}
FUSION_GRID = [
    (fusion, k, w, prior)
    for fusion, k, w in ([("rrf", k, w) for k in (20, 60) for w in (0.7, 1.0, 1.4)]
                         + [("weighted", 60, w) for w in (0.5, 0.7, 1.0, 1.4)])
    for prior in (0.0, 0.3, 0.6)
]
DEPTH = 100


def score(ranks: list) -> tuple[float, float]:
    n = max(len(ranks), 1)
    return sum(r is not None for r in ranks) / n, sum(1 / r for r in ranks if r) / n


def objective(hit: float, mrr: float) -> float:
    """What the search maximises: MRR, with hit rate as a tie breaker of equal weight."""
    return mrr + 0.5 * hit


def ranks_for(config: RetrievalConfig, lexical: list, vector: list, questions, article_of,
              k: int) -> list:
    depth = config.candidates
    return [first_relevant_rank(q, fuse({"lexical": lx[:depth], "vector": vc[:depth]}, config)[:k],
                                "chunk", k, article_of)
            for q, lx, vc in zip(questions, lexical, vector)]


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
        vector_by_window[w] = [retriever.engine.vector_search(retriever.embed_query(q.text), DEPTH)
                               for q in tqdm(questions, desc=f"vector w={w}", disable=args.json)]
    engine = retriever.engine

    def split(values, ids):
        return [values[i] for i in ids]

    tune_q, hold_q = split(questions, tune_ids), split(questions, hold_ids)
    best = None
    grid = list(itertools.product(*LEXICAL_GRID.values()))
    for title, tags, tie, (k1, b), window_weight in tqdm(grid, desc="lexical grid",
                                                          disable=args.json):
        lexical = LexicalParams(boosts={"title": title, "tags": tags, "text": 1.0},
                                tie_breaker=tie, k1=k1, b=b, windows=window_weight)
        lex_lists = [engine.lexical_search(q.text, DEPTH, params=lexical) for q in tune_q]
        for w, vec_all in vector_by_window.items():
            vec_lists = split(vec_all, tune_ids)
            for fusion, rrf_k, weight, prior in FUSION_GRID:
                config = RetrievalConfig(lexical=lexical, fusion=fusion, rrf_k=rrf_k,
                                         weights={"lexical": 1.0, "vector": weight},
                                         candidates=current.candidates, article_prior=prior,
                                         passage=replace(current.passage, window_words=w))
                hit, mrr = score(ranks_for(config, lex_lists, vec_lists, tune_q, article_of, args.k))
                if best is None or objective(hit, mrr) > best[0]:
                    best = (objective(hit, mrr), config, hit, mrr)

    _, chosen, tune_hit, tune_mrr = best
    report = {"questions": len(questions), "tuning": len(tune_ids), "held_out": len(hold_ids)}
    for name, config in (("current", current), ("chosen", chosen)):
        w = config.passage.window_words
        if w not in vector_by_window:
            continue
        for part, ids in (("tuning", tune_ids), ("held_out", hold_ids)):
            part_q = split(questions, ids)
            lex = [engine.lexical_search(q.text, DEPTH, params=config.lexical) for q in part_q]
            hit, mrr = score(ranks_for(config, lex, split(vector_by_window[w], ids), part_q,
                                       article_of, args.k))
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
