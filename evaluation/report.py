"""Compare lexical / vector / hybrid retrieval on both engines: a markdown table and a plot.

    python -m evaluation.report --chunks FILE --questions FILE [--level chunk] [--k 10]
                                [--out evaluation/reports] [--engines embedded,elasticsearch]

``--stages`` compares the stages of the shipped hybrid ranking instead of the modes: plain
fusion (adapter, ranker and glossary off), separate signals (the chunk and window vector scores
fused as their own lists), + the query adapter, + the glossary on top of it; the learned ranker
on the separate signals (what it was trained on); and what ships.

Elasticsearch is the server at ES_URL, or a noida-db started for the run.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

from assistant.config import load_settings
from assistant.errors import AssistantError
from dataclasses import replace

from assistant.retrieval import MODES, SIGNALS, RetrievalConfig, Retriever
from evaluation.es_server import elasticsearch_server
from evaluation.retrieval import LEVELS, AnswerKey, evaluate, open_eval_retriever, read_questions
from indexing.sources import load_chunks


# The separate-signals stage when the shipped weights fuse only the combined lists: the chunk's
# and its best window's cosines as two lists instead of their max.
SPLIT_VECTOR = {"vector": 0.0, "vector_chunk": 0.5, "vector_window": 0.35}
# The plain fusion stage when the shipped weights fuse the signals apart: the weights shipped
# before they were (max of chunk and window cosines as one list).
PLAIN_WEIGHTS = {"lexical": 1.0, "vector": 0.7}


def stage_configs(shipped: RetrievalConfig, ranker, adapter) -> list[tuple[str, RetrievalConfig]]:
    """(stage, configuration) for each stage of the hybrid ranking: plain fusion of the combined
    lists, separate signals, + the query adapter (``adapter``), + the glossary; the learned
    ranker (``ranker``) on the separate signals, as it was trained; then what ships. The shipped
    models are measured even when the shipped configuration has them off."""
    if set(shipped.weights) & set(SIGNALS):
        combined, split = dict(PLAIN_WEIGHTS), dict(shipped.weights)
    else:
        combined = dict(shipped.weights)
        split = {**combined, **SPLIT_VECTOR}
    plain = replace(shipped, weights=combined, glossary=False, ranker="", ranker_model=None,
                    query_adapter="", query_adapter_model=None)
    signals = replace(plain, weights=split)
    adapted = replace(signals, query_adapter="query_adapter.npz", query_adapter_model=adapter)
    ranked = replace(signals, ranker="ranker.json", ranker_model=ranker)
    return [("fusion", plain), ("signals", signals), ("+adapter", adapted),
            ("+adapter+glossary", replace(adapted, glossary=True)), ("signals+ranker", ranked),
            ("shipped", shipped)]


def shipped_models(config: RetrievalConfig, settings) -> tuple:
    """The configuration's ranker and query adapter, else the ones shipped beside it (the stage
    report measures them even when the configuration has them off)."""
    from assistant.query_adapter import QueryAdapter
    from assistant.ranker import LearnedRanker

    folder = settings.retrieval_config_file.parent
    return (config.ranker_model or LearnedRanker.load(folder / "ranker.json"),
            config.query_adapter_model or QueryAdapter.load(folder / "query_adapter.npz"))


def run_engine(engine: str, chunks, questions, settings, config, level: str, k: int,
               stages: bool = False) -> list[dict]:
    retriever = open_eval_retriever(chunks, engine, settings, config)
    key = AnswerKey.from_chunks(chunks)
    runs = ([(name, Retriever(retriever.engine, retriever.embed_query, cfg), "hybrid")
             for name, cfg in stage_configs(config, *shipped_models(config, settings))] if stages
            else [(mode, retriever, mode) for mode in MODES])
    rows = []
    for label, run_retriever, mode in runs:
        result = evaluate(run_retriever, questions, mode=mode, level=level, k=k,
                          key=key, progress=True)
        rows.append({**result.figures(), "mode": label, "engine": engine})
        print(json.dumps(rows[-1]), file=sys.stderr)
    retriever.engine.close()
    return rows


def write_report(rows: list[dict], out: Path, title: str, k: int, name: str = "retrieval") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    engines = sorted({r["engine"] for r in rows})
    labels = list(dict.fromkeys(r["mode"] for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    width = 0.8 / len(engines)
    for axis, metric in zip(axes, ("hit_rate", "mrr")):
        for i, engine in enumerate(engines):
            values = [next(r[metric] for r in rows if r["engine"] == engine and r["mode"] == m)
                      for m in labels]
            bars = axis.bar([x + i * width for x in range(len(labels))], values, width, label=engine)
            axis.bar_label(bars, fmt="%.3f", fontsize=7)
        axis.set_xticks([x + width * (len(engines) - 1) / 2 for x in range(len(labels))], labels)
        axis.set_ylim(0, 1)
        axis.set_title(f"{'hit' if metric == 'hit_rate' else 'MRR'}@{k}")
    axes[0].legend(loc="lower right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out / f"{name}.png", dpi=120)
    lines = ["# Retrieval report", "", title, "",
             f"| engine | mode | n | hit@{k} | MRR@{k} | p50 ms | p95 ms |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['engine']} | {r['mode']} | {r['n']} | {r['hit_rate']:.4f} | "
                     f"{r['mrr']:.4f} | {r['latency_ms_p50']} | {r['latency_ms_p95']} |")
    lines += ["", f"![{name}]({name}.png)", ""]
    path = out / f"{name}.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", required=True)
    parser.add_argument("--questions", required=True)
    parser.add_argument("--level", choices=LEVELS, default="chunk")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--engines", default="embedded,elasticsearch")
    parser.add_argument("--out", default="evaluation/reports")
    parser.add_argument("--stages", action="store_true",
                        help="compare the stages (fusion, signals, adapter, glossary, ranker), not "
                             "the modes")
    parser.add_argument("--name", default="", help="report file name (default: retrieval, "
                        "or stages-<questions file> with --stages)")
    parser.add_argument("--held-out", action="store_true",
                        help="only the questions the learned ranker does not train on")
    parser.add_argument("--limit", type=int, help="only the first N questions (noida-db, the "
                        "local ES stand-in, answers one request at a time)")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        config = RetrievalConfig.load(settings.retrieval_config_file)
        chunks = load_chunks(args.chunks, size=settings.chunk_size, overlap=settings.chunk_overlap)
        questions = read_questions(args.questions)
        if args.held_out:
            from evaluation.training import held_out
            questions = [q for q in questions if held_out(q.text)]
        questions = questions[: args.limit]
        rows = []
        for engine in args.engines.split(","):
            if engine == "elasticsearch":
                with elasticsearch_server() as url:
                    rows += run_engine(engine, chunks, questions, settings.replace(es_url=url),
                                       config, args.level, args.k, args.stages)
            else:
                rows += run_engine(engine, chunks, questions, settings, config, args.level, args.k,
                                   args.stages)
    except AssistantError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    title = (f"{Path(args.chunks).name} × {Path(args.questions).name}, {args.level} level, "
             f"{len(questions)} questions, config {config.passage.tag}, {stamp}")
    name = args.name or (f"stages-{Path(args.questions).stem}" if args.stages else "retrieval")
    print(write_report(rows, Path(args.out), title, args.k, name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
