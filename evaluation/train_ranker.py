"""Train the learned ranker (the second stage after fusion) and write its model file.

    python -m evaluation.train_ranker --chunks FILE --questions FILE [--questions FILE ...] \\
        [--out assistant/ranker.json] [--depth 30] [--holdout 0.25] [--limit N]

Each questions file (a chunk-level CSV such as the dev questions, or article-level JSON lines
such as the real-style questions) is split by a hash of the question text: ``--holdout`` of
each set is held out, never trained on, and the run ends by comparing the plain fusion and the
ranker on those held-out parts. ``python -m evaluation.retrieval --held-out`` measures the
same held-out part later. The candidates come from the current retrieval configuration (its
fusion, glossary and passage recipe), with the ranker and the query adapter off: an adapter
trained on the same questions makes their vector signals better than a new question's, and a
ranker trained on them learns to over-trust those signals (on the blog, dev held-out MRR 0.704
with the adapter, 0.621 with such a ranker after it). The model records that its candidates
were searched without an adapter, and the retriever uses it only on such a search. Retrain
for another corpus or embedder: the model records the index recipe it was trained for, and
the retriever falls back to plain fusion on any other.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from assistant.errors import AssistantError
from assistant.language import detect_language
from assistant.ranker import FEATURES, LearnedRanker, features
from evaluation.retrieval import Question
from evaluation.training import check_holdout, held_out, open_training_run, training_parser

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "assistant" / "ranker.json"


def relevant(q: Question, chunk_id: str, article_id: str) -> bool:
    return chunk_id == q.chunk if q.chunk else article_id in q.articles


def question_rows(retriever, q: Question, depth: int, article_of: dict[str, str]):
    """The features and labels of one question's top ``depth`` fused candidates."""
    ranking = retriever.rank(q.text, depth)
    hits = ranking.hits
    chunks = retriever.engine.get_chunks([h.chunk_id for h in hits])
    matrix = features(q.text, detect_language(q.text), hits, chunks)
    labels = np.array([relevant(q, h.chunk_id, article_of.get(h.chunk_id, "")) for h in hits])
    return matrix, labels


def first_rank(labels: np.ndarray, order: np.ndarray, q: Question, hits_articles: list[str],
               k: int) -> int | None:
    """1-based rank of the first relevant item (chunk, or distinct article) in ``order``."""
    if q.chunk:
        for rank, i in enumerate(order[:k], start=1):
            if labels[i]:
                return rank
        return None
    seen: list[str] = []
    for i in order:
        if hits_articles[i] not in seen:
            seen.append(hits_articles[i])
            if labels[i]:
                return len(seen) if len(seen) <= k else None
    return None


def parse_args(argv=None) -> argparse.Namespace:
    parser = training_parser("python -m evaluation.train_ranker", __doc__.split("\n\n")[0],
                             DEFAULT_OUT)
    parser.add_argument("--depth", type=int, default=30, help="fused candidates reordered")
    parser.add_argument("--trees", type=int, default=300, help="boosting rounds")
    parser.add_argument("--leaves", type=int, default=7, help="leaves per tree")
    parser.add_argument("--learning-rate", type=float, default=0.03)
    args = parser.parse_args(argv)
    if args.depth < 2:
        parser.error("--depth must be at least 2")
    check_holdout(parser, args)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    import lightgbm

    try:
        run = open_training_run(args)
        retriever, article_of = run.retriever, run.key.article_of
        rows = {name: [(q, *question_rows(retriever, q, args.depth, article_of)) for q in qs]
                for name, qs in run.sets.items()}
        model_name = run.index_model  # the index recipe the signals came from
        adapter = retriever.query_adapter  # what the candidates were searched with
        adapter_used = adapter.fingerprint if adapter is not None else ""
    except AssistantError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    train = [(m, y) for name in rows for q, m, y in rows[name] if not held_out(q.text, args.holdout)]
    train = [(m, lab) for m, lab in train if lab.any()]  # a list without relevant teaches nothing
    if not train:
        print("error: no training question has a relevant candidate: nothing to learn",
              file=sys.stderr)
        return 2
    fit = lightgbm.LGBMRanker(
        objective="lambdarank", n_estimators=args.trees, num_leaves=args.leaves,
        learning_rate=args.learning_rate, min_child_samples=20, subsample=0.8, subsample_freq=1,
        colsample_bytree=0.8, lambdarank_truncation_level=10, random_state=7, n_jobs=1,
        verbose=-1)
    fit.fit(np.vstack([m for m, _ in train]), np.concatenate([lab for _, lab in train]).astype(int),
            group=[len(lab) for _, lab in train])
    booster = fit.booster_
    figures = {}
    for name, items in rows.items():
        test = [(q, m, lab) for q, m, lab in items if held_out(q.text, args.holdout)]
        fused_ranks, ranker_ranks = [], []
        for q, m, lab in test:
            arts = [""] * len(lab)  # article ids of candidates, for article-level questions
            ids = retriever.rank(q.text, args.depth).hits if not q.chunk else []
            if ids:
                arts = [article_of.get(h.chunk_id, "") for h in ids]
            scores = booster.predict(m, num_threads=1)
            k = 10 if q.chunk else 5
            fused_ranks.append(first_rank(lab, np.arange(len(lab)), q, arts, k))
            ranker_ranks.append(first_rank(lab, np.argsort(-scores, kind="stable"), q, arts, k))

        def summary(ranks):
            n = max(len(ranks), 1)
            return {"hit": round(sum(r is not None for r in ranks) / n, 4),
                    "mrr": round(sum(1 / r for r in ranks if r) / n, 4)}
        figures[name] = {"held_out": len(test), "trained": len(items) - len(test),
                         "fusion": summary(fused_ranks), "ranker": summary(ranker_ranks)}
        print(f"{name}: held out {len(test)} ({'chunk hit@10' if test and test[0][0].chunk else 'article hit@5'})"
              f"  fusion {figures[name]['fusion']}  ranker {figures[name]['ranker']}")
    model = LearnedRanker(model_name, args.depth, booster,
                          trained_on={"sets": figures, "holdout": args.holdout,
                                      "split": "sha256(question) < holdout",
                                      "questions": len(train), "features": len(FEATURES),
                                      "trees": args.trees, "leaves": args.leaves,
                                      "learning_rate": args.learning_rate},
                          query_adapter=adapter_used)
    model.save(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
