"""What the optional LLM reranker adds to retrieval latency, against the local OpenAI stub.

    python -m evaluation.benchmark_llm_rerank [--chunks data/articles.json]
        [--questions evaluation/demo_questions.jsonl] [--delay 0.6] [--depth 10]
        [--timeout 3.0] [--k 10] [--limit N] [--json]

Each question is ranked twice over the same index: plain fusion, then with the LLM reranker
whose LLM is :class:`evaluation.openai_stub.OpenAIStub` answering after ``--delay`` seconds
(0.6 s is a typical gpt-4o-mini call of this size) with the fused order itself. So the
mechanics are measured (prompt building, one HTTP round trip, parsing, reordering; tokens of a
real-size prompt, hence the cost at gpt-4o-mini prices), not the quality: judging whether the
LLM's order is better needs a real LLM, which this machine does not have.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from assistant.answering.llm import LLMClient
from assistant.config import REPO_DIR, load_settings
from assistant.errors import AssistantError
from assistant.llm_reranker import LLMReranker
from assistant.retrieval import RetrievalConfig
from evaluation.benchmark import percentiles
from evaluation.openai_stub import OpenAIStub, delay, rerank_reply
from evaluation.retrieval import open_eval_retriever, read_questions
from indexing.sources import load_chunks


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m evaluation.benchmark_llm_rerank",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", default=str(REPO_DIR / "data" / "articles.json"))
    parser.add_argument("--questions", default=str(REPO_DIR / "evaluation" / "demo_questions.jsonl"))
    parser.add_argument("--delay", type=float, default=0.6, help="seconds the stub LLM takes")
    parser.add_argument("--depth", type=int, default=10, help="candidates shown to the LLM")
    parser.add_argument("--timeout", type=float, default=3.0, help="the reranker's timeout, seconds")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--limit", type=int, help="only the first N questions")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of figures")
    args = parser.parse_args(argv)
    if args.delay < 0 or args.timeout <= 0 or args.depth < 2 or args.k < 1:
        parser.error("--delay must be >= 0, --timeout > 0, --depth >= 2, --k >= 1")
    return args


def measure(retriever, reranker, questions: list[str], k: int) -> dict:
    retriever.rank(questions[0], k)  # warm-up: model, snapshot
    plain, reranked, stage, tokens, costs, applied, same = [], [], [], [], [], 0, 0
    for q in questions:
        retriever.second_stage = None
        t = time.perf_counter()
        fused = retriever.rank(q, k)
        plain.append(time.perf_counter() - t)
        retriever.second_stage = reranker
        t = time.perf_counter()
        ranking = retriever.rank(q, k)
        reranked.append(time.perf_counter() - t)
        stage.append(ranking.timing.llm_rerank)
        result = ranking.llm_rerank
        applied += result.applied
        same += [h.chunk_id for h in ranking.hits] == [h.chunk_id for h in fused.hits]
        tokens.append(result.usage.total_tokens)
        costs.append(result.cost or 0.0)
    added = [r - p for r, p in zip(reranked, plain)]
    return {"questions": len(questions), "applied": applied, "order_kept_by_identity_reply": same,
            "fused": percentiles(plain), "with_llm_rerank": percentiles(reranked),
            "added": percentiles(added), "llm_rerank_stage": percentiles(stage),
            "tokens_per_question": round(sum(tokens) / len(tokens)),
            "usd_per_1000_questions": round(1000 * sum(costs) / len(costs), 4)}


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        settings = load_settings()
        config = RetrievalConfig.load(settings.retrieval_config_file)
        chunks = load_chunks(args.chunks, size=settings.chunk_size, overlap=settings.chunk_overlap)
        questions = [q.text for q in read_questions(args.questions)][: args.limit]
        if not questions:
            raise AssistantError(f"{args.questions}: no questions")
        retriever = open_eval_retriever(chunks, "embedded", settings, config, progress=not args.json)
    except AssistantError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    # The stub answers with the fused order itself: the benchmark checks the mechanics keep it.
    with OpenAIStub(default=delay(args.delay, rerank_reply(lambda texts: list(range(1, len(texts) + 1))))) as stub:
        llm = LLMClient(api_key="sk-bench", base_url=stub.url, model="gpt-4o-mini",
                        timeout=args.timeout, max_retries=0)
        try:
            figures = measure(retriever, LLMReranker(llm, args.depth), questions, args.k)
        finally:
            llm.close()
            retriever.close()
    figures.update(delay_s=args.delay, depth=args.depth, timeout_s=args.timeout)
    print(f"{figures['questions']} questions, stub delay {args.delay:g} s, depth {args.depth}: "
          f"fused p50 {figures['fused']['p50_ms']} ms; with LLM rerank p50 "
          f"{figures['with_llm_rerank']['p50_ms']} ms p95 {figures['with_llm_rerank']['p95_ms']} ms; "
          f"added p50 {figures['added']['p50_ms']} ms p95 {figures['added']['p95_ms']} ms; "
          f"applied {figures['applied']}/{figures['questions']}; "
          f"~{figures['tokens_per_question']} tokens, ${figures['usd_per_1000_questions']} per 1000 questions")
    if args.json:
        print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
