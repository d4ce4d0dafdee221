"""Compare lexical / vector / hybrid retrieval on both engines: a markdown table and a plot.

    python -m evaluation.report --chunks FILE --questions FILE [--level chunk] [--k 10]
                                [--out evaluation/reports] [--engines embedded,elasticsearch]

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
from assistant.retrieval import MODES, RetrievalConfig
from evaluation.es_server import elasticsearch_server
from evaluation.retrieval import evaluate, open_eval_retriever, read_questions
from indexing.sources import load_chunks


def run_engine(engine: str, chunks, questions, settings, config, level: str, k: int) -> list[dict]:
    retriever = open_eval_retriever(chunks, engine, settings, config)
    article_of = {c.chunk_id: c.article_id for c in chunks}
    rows = []
    for mode in MODES:
        result = evaluate(retriever, questions, mode=mode, level=level, k=k,
                          article_of=article_of, progress=True)
        rows.append({**result.figures(), "engine": engine})
        print(json.dumps(rows[-1]), file=sys.stderr)
    retriever.engine.close()
    return rows


def write_report(rows: list[dict], out: Path, title: str, k: int) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    engines = sorted({r["engine"] for r in rows})
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    width = 0.8 / len(engines)
    for axis, metric in zip(axes, ("hit_rate", "mrr")):
        for i, engine in enumerate(engines):
            values = [next(r[metric] for r in rows if r["engine"] == engine and r["mode"] == m)
                      for m in MODES]
            bars = axis.bar([x + i * width for x in range(len(MODES))], values, width, label=engine)
            axis.bar_label(bars, fmt="%.3f", fontsize=7)
        axis.set_xticks([x + width * (len(engines) - 1) / 2 for x in range(len(MODES))], MODES)
        axis.set_ylim(0, 1)
        axis.set_title(f"{'hit' if metric == 'hit_rate' else 'MRR'}@{k}")
    axes[0].legend(loc="lower right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "retrieval.png", dpi=120)
    lines = ["# Retrieval report", "", title, "",
             f"| engine | mode | n | hit@{k} | MRR@{k} | p50 ms | p95 ms |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['engine']} | {r['mode']} | {r['n']} | {r['hit_rate']:.4f} | "
                     f"{r['mrr']:.4f} | {r['latency_ms_p50']} | {r['latency_ms_p95']} |")
    lines += ["", "![retrieval](retrieval.png)", ""]
    path = out / "retrieval.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", required=True)
    parser.add_argument("--questions", required=True)
    parser.add_argument("--level", choices=("chunk", "article"), default="chunk")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--engines", default="embedded,elasticsearch")
    parser.add_argument("--out", default="evaluation/reports")
    parser.add_argument("--limit", type=int, help="only the first N questions (noida-db, the "
                        "local ES stand-in, answers one request at a time)")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        config = RetrievalConfig.load(settings.retrieval_config_file)
        chunks = load_chunks(args.chunks, size=settings.chunk_size, overlap=settings.chunk_overlap)
        questions = read_questions(args.questions)[: args.limit]
        rows = []
        for engine in args.engines.split(","):
            if engine == "elasticsearch":
                with elasticsearch_server() as url:
                    rows += run_engine(engine, chunks, questions, settings.replace(es_url=url),
                                       config, args.level, args.k)
            else:
                rows += run_engine(engine, chunks, questions, settings, config, args.level, args.k)
    except AssistantError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    title = (f"{Path(args.chunks).name} × {Path(args.questions).name}, {args.level} level, "
             f"{len(questions)} questions, config {config.passage.tag}, {stamp}")
    print(write_report(rows, Path(args.out), title, args.k))
    return 0


if __name__ == "__main__":
    sys.exit(main())
