"""Train the query adapter (a linear correction of question vectors) and write its file.

    python -m evaluation.train_adapter --chunks FILE --questions FILE [--questions FILE ...] \\
        [--out assistant/query_adapter.npz] [--holdout 0.25] [--penalty 0.01] \\
        [--temperature 0.02] [--epochs 100] [--learning-rate 0.001] [--limit N]

Each questions file (a chunk-level CSV such as the dev questions, or article-level JSON lines
such as the real-style questions) is split by the learned ranker's hash of the question text
(``evaluation.training.held_out``, so ``evaluation.retrieval --held-out`` measures the
same held-out part): ``--holdout`` of each set is never trained on, and the run ends by
comparing the search with and without the adapter on those parts. A set that must stay unseen
(the held-apart questions) is simply not given. The passage vectors are the index's own
(chunk and sentence windows, from the embedding cache); training is a softmax over every chunk,
scored as the search scores it, with an L2 penalty on the correction. Retrain for another
corpus or embedder: the file records the index recipe, and the retriever ignores it on any other.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from assistant.errors import AssistantError
from assistant.query_adapter import QueryAdapter
from assistant.retrieval import Retriever
from evaluation.retrieval import evaluate
from evaluation.training import check_holdout, held_out, open_training_run, training_parser
from indexing.job import embed_chunks, with_windows

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "assistant" / "query_adapter.npz"


def fit_delta(queries: np.ndarray, rows: np.ndarray, owners: np.ndarray, positives: np.ndarray,
              *, penalty: float, temperature: float, epochs: int, learning_rate: float,
              seed: int = 0) -> np.ndarray:
    """The correction Δ (dim × dim) that pulls each question towards its relevant chunks.

    ``queries``: question vectors (q × dim); ``rows``: the index's vectors (chunks and their
    windows, r × dim), ``owners``: the chunk of each row; ``positives``: q × chunks, True
    where the chunk is relevant. A chunk scores its best row, as the search does."""
    import torch

    torch.manual_seed(seed)
    q = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
    rows_t = torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32)).T
    owner_index = torch.from_numpy(owners.astype(np.int64)).expand(len(q), -1)
    relevant = torch.from_numpy(positives)
    n_chunks = positives.shape[1]
    delta = torch.zeros(q.shape[1], q.shape[1], requires_grad=True)
    optimiser = torch.optim.Adam([delta], lr=learning_rate)
    for _ in range(epochs):
        adapted = q + q @ delta
        adapted = adapted / adapted.norm(dim=1, keepdim=True)
        per_row = adapted @ rows_t
        per_chunk = torch.full((len(q), n_chunks), -1e9).scatter_reduce(
            1, owner_index, per_row, reduce="amax")
        logits = per_chunk / temperature
        loss = (torch.logsumexp(logits, 1)
                - torch.logsumexp(logits.masked_fill(~relevant, -1e9), 1)).mean()
        loss = loss + penalty * (delta ** 2).sum()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return delta.detach().numpy()


def parse_args(argv=None) -> argparse.Namespace:
    parser = training_parser("python -m evaluation.train_adapter", __doc__.split("\n\n")[0],
                             DEFAULT_OUT)
    parser.add_argument("--penalty", type=float, default=0.01, help="L2 penalty on the correction")
    parser.add_argument("--temperature", type=float, default=0.02,
                        help="softmax temperature over cosines")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    args = parser.parse_args(argv)
    check_holdout(parser, args)
    if args.epochs < 1 or args.temperature <= 0 or args.penalty < 0 or args.learning_rate <= 0:
        parser.error("--epochs, --temperature and --learning-rate must be positive, "
                     "--penalty not negative")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        run = open_training_run(args)
        config, retriever, sets, embed = run.config, run.retriever, run.sets, run.retriever.embed_query
        indexed, _ = embed_chunks(with_windows(run.chunks, config.passage), embed.embedder,
                                  config.passage, embed.cache, progress=False)
        model_name = run.index_model
    except AssistantError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    column = {item.chunk.chunk_id: j for j, item in enumerate(indexed)}
    key = run.key
    article_of = key.article_of
    chunks_of: dict[str, list[int]] = {}
    for chunk_id, j in column.items():
        chunks_of.setdefault(article_of[chunk_id], []).append(j)
    rows = np.vstack([item.vectors for item in indexed])
    owners = np.concatenate([np.full(len(item.vectors), j) for j, item in enumerate(indexed)])

    train = [q for qs in sets.values() for q in qs if not held_out(q.text, args.holdout)]
    targets = [[column[q.chunk]] if q.chunk in column else
               [j for a in q.articles for j in chunks_of.get(a, ())] for q in train]
    known = [(q, t) for q, t in zip(train, targets) if t]  # relevant chunks in this index
    if not known:
        print("error: no training question has a relevant chunk in the index: nothing to learn",
              file=sys.stderr)
        return 2
    train = [q for q, _ in known]
    positives = np.zeros((len(train), len(indexed)), dtype=bool)
    for i, (_, t) in enumerate(known):
        positives[i, t] = True
    queries = np.vstack([embed(q.text) for q in train])
    delta = fit_delta(queries, rows, owners, positives, penalty=args.penalty,
                      temperature=args.temperature, epochs=args.epochs,
                      learning_rate=args.learning_rate)
    adapter = QueryAdapter(model_name, delta)

    adapted = Retriever(retriever.engine, embed, replace(config, query_adapter="trained",
                                                         query_adapter_model=adapter))
    figures = {}
    for name, qs in sets.items():
        test = [q for q in qs if held_out(q.text, args.holdout)]
        entry = {"held_out": len(test), "trained": len(qs) - len(test)}
        for level, k, part in (("chunk", 10, [q for q in test if q.chunk]),
                               ("article", 5, [q for q in test if not q.chunk])):
            if not part:
                continue
            for label, r in (("plain", retriever), ("adapter", adapted)):
                result = evaluate(r, part, level=level, k=k, key=key)
                entry[label] = {"hit": round(result.hit_rate, 4), "mrr": round(result.mrr, 4),
                                "level": level, "k": k}
        figures[name] = entry
        print(f"{name}: held out {len(test)}  plain {entry.get('plain')}  "
              f"adapter {entry.get('adapter')}")
    adapter.trained_on = {"sets": figures, "holdout": args.holdout,
                          "split": "sha256(question) < holdout", "questions": len(train),
                          "penalty": args.penalty, "temperature": args.temperature,
                          "epochs": args.epochs, "learning_rate": args.learning_rate,
                          "norm": round(float(np.linalg.norm(delta)), 3)}
    adapter.save(args.out)
    retriever.close()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
