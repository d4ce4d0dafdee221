"""RAG evaluation: answer a sample of questions through the whole flow (retrieval, prompt,
LLM, citation stripping) with each model and prompt variant, and let an LLM judge rate every
answer RELEVANT / PARTLY_RELEVANT / NON_RELEVANT.

    python -m evaluation.rag --models gpt-4o-mini,gpt-4.1-mini --variants default,concise \\
        --sample 50 [--questions evaluation/demo_questions.jsonl] [--judge-model gpt-4o-mini] \\
        [--chunks data/articles.json] [--workers 4] [--seed 42] [--out run.jsonl] [--json]

Settings (LLM key or base URL, engine, index…) come from the environment / ``.env`` like the
app's. Without ``--chunks`` the configured index is used; with it, an index of exactly those
chunks is built or reused (as ``evaluation.retrieval`` does). ``--questions`` takes JSON lines
(``question`` + ``articles``) or a ground-truth CSV (``question,category,chunk,article``, see
``evaluation.generate_questions``). The report gives, per model and variant, the share of each
verdict, the share of answers whose sources hold an expected article, errors, mean response
time, tokens and cost (answers and judge).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from assistant.answering.judge import judge as judge_answer
from assistant.answering.llm import LLMClient, LLMError
from assistant.answering.prices import cost as price_cost
from assistant.answering.prompts import RELEVANCE_LABELS, available_variants
from assistant.answering.rag import Assistant
from assistant.answering.request import Ask
from assistant.config import REPO_DIR, Settings, load_settings
from assistant.errors import AssistantError, ConfigError
from assistant.services import Services
from evaluation.retrieval import Question, read_questions

DEFAULT_QUESTIONS = REPO_DIR / "evaluation" / "demo_questions.jsonl"


@dataclass
class Row:
    """One question answered by one model with one variant, and its verdict."""

    model: str
    variant: str
    question: str
    answer: str | None = None
    relevance: str | None = None
    explanation: str | None = None
    source_hit: bool | None = None
    response_time: float = 0.0
    tokens: int = 0
    cost: float | None = 0.0
    judge_tokens: int = 0
    judge_cost: float | None = 0.0
    error: str | None = None


@dataclass
class Summary:
    model: str
    variant: str
    rows: list[Row] = field(default_factory=list)

    def figures(self) -> dict:
        judged = [r for r in self.rows if r.relevance]
        counts = Counter(r.relevance for r in judged)
        n = len(judged)
        hits = [r.source_hit for r in self.rows if r.source_hit is not None]
        answered = [r for r in self.rows if r.error is None]

        def total(values):
            values = list(values)
            return None if any(v is None for v in values) else round(sum(values), 6)

        return {
            "model": self.model,
            "variant": self.variant,
            "n": len(self.rows),
            "judged": n,
            **{label: round(counts[label] / n, 4) if n else None for label in RELEVANCE_LABELS},
            "counts": {label: counts[label] for label in RELEVANCE_LABELS},
            "errors": sum(r.error is not None for r in self.rows),
            "source_hit_rate": round(sum(hits) / len(hits), 4) if hits else None,
            "avg_response_time": (round(sum(r.response_time for r in answered) / len(answered), 3)
                                  if answered else None),
            "tokens": sum(r.tokens for r in self.rows),
            "cost": total(r.cost for r in self.rows),
            "judge_tokens": sum(r.judge_tokens for r in self.rows),
            "judge_cost": total(r.judge_cost for r in self.rows),
        }


def _llm(settings: Settings, model: str) -> LLMClient:
    if not (settings.openai_api_key or settings.openai_base_url):
        raise ConfigError("the RAG evaluation needs an LLM: set OPENAI_API_KEY (or OPENAI_BASE_URL)")
    return LLMClient(api_key=settings.openai_api_key or "not-needed",
                     base_url=settings.openai_base_url or None, model=model,
                     timeout=settings.llm_timeout, max_retries=settings.llm_max_retries)


def evaluate_one(assistant: Assistant, judge_llm: LLMClient, model: str, variant: str,
                 question: Question) -> Row:
    row = Row(model, variant, question.text)
    try:
        result = assistant.answer(Ask.parse(question.text))
    except LLMError as e:
        row.error = f"answer: {e}"
        return row
    row.answer, row.response_time = result.answer, result.response_time
    row.tokens, row.cost = result.tokens["total"], result.cost
    if question.articles:
        row.source_hit = bool({s["article_id"] for s in result.sources} & set(question.articles))
    elif question.chunk:
        row.source_hit = question.chunk in {p["chunk_id"] for s in result.sources  # by article
                                            for p in s["passages"]}
    try:
        row.relevance, row.explanation, usage = judge_answer(judge_llm, question.text, result.answer)
        row.judge_tokens = usage.total_tokens
        row.judge_cost = price_cost(judge_llm.model, usage)
    except (LLMError, ValueError) as e:
        row.error = f"judge: {e}"
    return row


def run_evaluation(settings: Settings, questions: list[Question], models: list[str],
                   variants: list[str], *, retriever=None, judge_model: str | None = None,
                   workers: int = 4, progress: bool = True) -> list[Summary]:
    """Every question through every (model, variant); returns one Summary per pair."""
    services = None
    if retriever is None:
        services = Services(settings)
        retriever = services.retriever
    judge_llm = _llm(settings, judge_model or settings.llm_model)
    summaries = []
    for model in models:
        llm = _llm(settings, model)
        for variant in variants:
            assistant = Assistant(retriever, llm, None, variant=variant)
            summary = Summary(model, variant)
            started = time.perf_counter()
            with ThreadPoolExecutor(max(1, workers)) as pool:
                summary.rows = list(pool.map(
                    lambda q: evaluate_one(assistant, judge_llm, model, variant, q), questions))
            if progress:
                f = summary.figures()
                print(f"{model} / {variant}: {f['n']} questions in {time.perf_counter() - started:.1f} s,"
                      f" {f['errors']} error(s)", file=sys.stderr)
            summaries.append(summary)
        llm.close()
    judge_llm.close()
    if services is not None:
        services.close()
    return summaries


def format_table(summaries: list[Summary]) -> str:
    head = (f"{'model':<18} {'variant':<10} {'n':>4} {'RELEVANT':>9} {'PARTLY':>7} {'NON_REL':>8} "
            f"{'errors':>6} {'src hit':>7} {'avg s':>6} {'cost $':>9}")
    lines = [head, "-" * len(head)]
    for s in summaries:
        f = s.figures()

        def pct(x):
            return "-" if x is None else f"{100 * x:.0f}%"

        cost = "-" if f["cost"] is None else f"{f['cost']:.4f}"
        avg = "-" if f["avg_response_time"] is None else f"{f['avg_response_time']:.2f}"
        lines.append(f"{s.model:<18} {s.variant:<10} {f['n']:>4} {pct(f['RELEVANT']):>9} "
                     f"{pct(f['PARTLY_RELEVANT']):>7} {pct(f['NON_RELEVANT']):>8} {f['errors']:>6} "
                     f"{pct(f['source_hit_rate']):>7} {avg:>6} {cost:>9}")
    return "\n".join(lines)


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected a comma-separated list")
    return list(dict.fromkeys(names))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m evaluation.rag",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", default=str(DEFAULT_QUESTIONS),
                        help="JSON lines or ground-truth CSV (default: the demo questions)")
    parser.add_argument("--models", type=_names, help="comma-separated (default: LLM_MODEL)")
    parser.add_argument("--variants", type=_names, default=["default"],
                        help=f"prompt variants, comma-separated (available: {', '.join(available_variants())})")
    parser.add_argument("--sample", type=int, default=50, help="questions drawn at random (0: all)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--judge-model", help="model of the judge (default: LLM_MODEL)")
    parser.add_argument("--chunks", help="index exactly these articles/chunks (default: the configured index)")
    parser.add_argument("--workers", type=int, default=4, help="questions answered at once")
    parser.add_argument("--out", help="write every answer and verdict to this JSON-lines file")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        settings = load_settings()
        unknown = [v for v in args.variants if v not in available_variants()]
        if unknown:
            raise ConfigError(f"unknown prompt variant(s) {', '.join(unknown)}; "
                              f"available: {', '.join(available_variants())}")
        questions = read_questions(args.questions)
        if args.sample and args.sample < len(questions):
            questions = random.Random(args.seed).sample(questions, args.sample)
        retriever = None
        if args.chunks:
            from evaluation.retrieval import open_eval_retriever
            from indexing.sources import load_chunks

            chunks = load_chunks(args.chunks, size=settings.chunk_size, overlap=settings.chunk_overlap,
                                 progress=not args.json)
            retriever = open_eval_retriever(chunks, settings.engine, settings,
                                            Services(settings).retrieval_config,
                                            progress=not args.json)
        models = args.models or [settings.llm_model]
        summaries = run_evaluation(settings, questions, models, args.variants, retriever=retriever,
                                   judge_model=args.judge_model, workers=args.workers,
                                   progress=not args.json)
    except AssistantError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.out:
        with Path(args.out).open("w", encoding="utf-8") as f:
            for s in summaries:
                for row in s.rows:
                    f.write(json.dumps(row.__dict__, ensure_ascii=False) + "\n")
    report = {"questions": args.questions, "n": len(questions), "seed": args.seed,
              "judge_model": args.judge_model or settings.llm_model,
              "results": [s.figures() for s in summaries]}
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
    else:
        print(format_table(summaries))
    return 0


if __name__ == "__main__":
    sys.exit(main())
