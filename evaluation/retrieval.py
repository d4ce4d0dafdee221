"""Retrieval evaluation: hit rate and MRR at k, at chunk or article level, on either engine.

    python -m evaluation.retrieval --chunks FILE --questions FILE \\
        [--engine embedded|elasticsearch] [--mode lexical|vector|hybrid] \\
        [--level chunk|neighbour|article] [--k 10] [--json]

``--chunks`` takes an articles JSON (chunked with the defaults) or a chunks JSON; the command
builds, or reuses, an index of exactly those chunks (cached embeddings make a rebuild cheap).
``--questions`` takes a CSV with ``question`` and ``chunk``/``article`` columns, or JSON lines
with ``question`` and one of ``chunk``, ``article`` or ``articles`` (a hit is any of them).
``--level neighbour`` also counts the chunks just before and after the labelled one in its
article: consecutive chunks share their overlap, so a question written from that shared text
has two right answers and the answer key names only one.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from assistant.config import load_settings
from assistant.documents import Chunk
from assistant.embeddings import EmbeddingCache, PersistentQueryEmbeddings, embedder_from_settings
from assistant.engines import open_engine
from assistant.engines.base import Hit
from assistant.errors import AssistantError, SourceError
from assistant.retrieval import MODES, RetrievalConfig, Retriever
from indexing.job import index_model_name, run_index
from indexing.sources import load_chunks


@dataclass(frozen=True)
class Question:
    text: str
    chunk: str | None = None
    articles: tuple[str, ...] = ()
    lang: str = ""
    category: str = ""


def read_questions(path: str | Path) -> list[Question]:
    """Questions from a ground-truth CSV or a JSON-lines file."""
    p = Path(path)
    if not p.is_file():
        raise SourceError(f"questions file not found: {p}")
    text = p.read_text(encoding="utf-8")
    questions = []
    if p.suffix.lower() == ".csv":
        for n, row in enumerate(csv.DictReader(text.splitlines()), start=2):
            if not (row.get("question") or "").strip():
                raise SourceError(f"{p}:{n}: no question")
            article = (row.get("article") or "").strip()
            questions.append(Question(row["question"].strip(), (row.get("chunk") or "").strip() or None,
                                      (article,) if article else (), category=row.get("category") or ""))
    else:
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise SourceError(f"{p}:{n}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict) or not str(row.get("question") or "").strip():
                raise SourceError(f"{p}:{n}: expected an object with a question")
            articles = row.get("articles") or ([row["article"]] if row.get("article") else [])
            questions.append(Question(row["question"].strip(), row.get("chunk"), tuple(articles),
                                      row.get("lang", ""), row.get("category", "")))
    if not questions:
        raise SourceError(f"{p}: no questions")
    return questions


LEVELS = ("chunk", "neighbour", "article")


@dataclass(frozen=True)
class AnswerKey:
    """What the indexed chunks say about relevance: each chunk's article, and the chunks next
    to it in its article (in the order the chunks file gives)."""

    article_of: dict[str, str]
    neighbours: dict[str, frozenset[str]]

    @classmethod
    def from_chunks(cls, chunks: list[Chunk]) -> "AnswerKey":
        neighbours: dict[str, set[str]] = {c.chunk_id: set() for c in chunks}
        for before, after in zip(chunks, chunks[1:]):
            if before.article_id == after.article_id:
                neighbours[before.chunk_id].add(after.chunk_id)
                neighbours[after.chunk_id].add(before.chunk_id)
        return cls({c.chunk_id: c.article_id for c in chunks},
                   {cid: frozenset(n) for cid, n in neighbours.items()})

    def distinct_articles(self, hits: list[Hit]) -> list[str]:
        """Articles in the order their first chunk appears."""
        seen: dict[str, None] = {}
        for hit in hits:
            seen.setdefault(self.article_of.get(hit.chunk_id, hit.chunk_id), None)
        return list(seen)

    def first_relevant_rank(self, question: Question, hits: list[Hit], level: str,
                            k: int) -> int | None:
        """1-based rank of the first relevant item within the top k, or None."""
        if level == "article":
            ranked, relevant = self.distinct_articles(hits), set(question.articles)
        else:
            ranked, relevant = [h.chunk_id for h in hits], {question.chunk}
            if level == "neighbour":
                relevant |= self.neighbours.get(question.chunk, frozenset())
        for rank, item in enumerate(ranked[:k], start=1):
            if item in relevant:
                return rank
        return None


@dataclass
class Evaluation:
    n: int
    k: int
    level: str
    mode: str
    ranks: list = field(default_factory=list)
    latencies: list = field(default_factory=list)

    @property
    def hit_rate(self) -> float:
        return sum(r is not None for r in self.ranks) / max(len(self.ranks), 1)

    @property
    def mrr(self) -> float:
        return sum(1.0 / r for r in self.ranks if r) / max(len(self.ranks), 1)

    def figures(self) -> dict:
        lat = np.array(self.latencies) * 1000 if self.latencies else np.zeros(1)
        return {"n": self.n, "k": self.k, "level": self.level, "mode": self.mode,
                "hit_rate": round(self.hit_rate, 4), "mrr": round(self.mrr, 4),
                "latency_ms_p50": round(float(np.percentile(lat, 50)), 2),
                "latency_ms_p95": round(float(np.percentile(lat, 95)), 2)}


def check_level(questions: list[Question], level: str) -> None:
    if level != "article" and any(q.chunk is None for q in questions):
        raise SourceError(f"{level} level needs a chunk for every question (use --level article)")
    if level == "article" and any(not q.articles for q in questions):
        raise SourceError("article level needs an article for every question")


def evaluate(retriever: Retriever, questions: list[Question], *, mode: str = "hybrid",
             level: str = "chunk", k: int = 10, key: AnswerKey,
             progress: bool = False) -> Evaluation:
    """Rank every question and score the first relevant rank."""
    check_level(questions, level)
    depth = max(5 * k, retriever.config.candidates) if level == "article" else k
    result = Evaluation(n=len(questions), k=k, level=level, mode=mode)
    for q in tqdm(questions, desc=f"{mode}/{level}", disable=not progress):
        started = time.perf_counter()
        hits = retriever.rank(q.text, depth, mode=mode).hits
        result.latencies.append(time.perf_counter() - started)
        result.ranks.append(key.first_relevant_rank(q, hits, level, k))
    return result


def corpus_key(chunks: list[Chunk]) -> str:
    digest = hashlib.sha256()
    for c in chunks:
        digest.update(c.chunk_id.encode() + b"\0" + c.content_hash.encode())
    return digest.hexdigest()[:12]


def open_eval_retriever(chunks: list[Chunk], engine_kind: str, settings, config: RetrievalConfig,
                        progress: bool = True) -> Retriever:
    """A retriever over an index of exactly ``chunks``, built or reused, on either engine."""
    embedder = embedder_from_settings(settings)
    recipe = hashlib.sha256(index_model_name(embedder, config.passage).encode()).hexdigest()[:6]
    key = f"{corpus_key(chunks)}-{recipe}"
    settings = settings.replace(
        embedded_path=str(Path(settings.data_dir) / "eval" / f"{key}.sqlite"),
        es_index=f"arsonor-eval-{key}")
    engine = open_engine(settings, config.lexical, kind=engine_kind)
    cache = EmbeddingCache(settings.embedding_cache_file)
    report = run_index(chunks, engine, embedder, recipe=config.passage, cache=cache,
                       progress=progress)
    if progress:
        print(report.summary(), file=sys.stderr)
    return Retriever(engine, PersistentQueryEmbeddings(embedder, cache), config)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m evaluation.retrieval", description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", required=True, help="articles JSON or chunks JSON")
    parser.add_argument("--questions", required=True, help="ground-truth CSV or JSON lines")
    parser.add_argument("--engine", choices=("embedded", "elasticsearch"), default="embedded")
    parser.add_argument("--mode", choices=MODES, default="hybrid")
    parser.add_argument("--level", choices=LEVELS, default="chunk")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--json", action="store_true", help="end with one JSON line of figures")
    parser.add_argument("--config", help="retrieval configuration JSON (default: the product's)")
    parser.add_argument("--limit", type=int, help="only the first N questions")
    parser.add_argument("--held-out", action="store_true",
                        help="only the questions the learned ranker does not train on "
                             "(evaluation.training's split)")
    args = parser.parse_args(argv)
    if args.k < 1:
        parser.error("--k must be at least 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        settings = load_settings()
        config = RetrievalConfig.load(args.config or settings.retrieval_config_file)
        chunks = load_chunks(args.chunks, size=settings.chunk_size, overlap=settings.chunk_overlap)
        questions = read_questions(args.questions)
        if args.held_out:
            from evaluation.training import held_out
            questions = [q for q in questions if held_out(q.text)]
        questions = questions[: args.limit]
        check_level(questions, args.level)
        retriever = open_eval_retriever(chunks, args.engine, settings, config, progress=not args.json)
        result = evaluate(retriever, questions, mode=args.mode, level=args.level, k=args.k,
                          key=AnswerKey.from_chunks(chunks), progress=not args.json)
    except AssistantError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    figures = {**result.figures(), "engine": args.engine}
    by_lang = {}
    for lang in sorted({q.lang for q in questions if q.lang}):
        idx = [i for i, q in enumerate(questions) if q.lang == lang]
        ranks = [result.ranks[i] for i in idx]
        by_lang[lang] = {"n": len(idx), "hit_rate": round(sum(r is not None for r in ranks) / len(idx), 4),
                         "mrr": round(sum(1 / r for r in ranks if r) / len(idx), 4)}
    if by_lang:
        figures["by_language"] = by_lang
    print(f"{args.engine} {args.mode} {args.level}-level, {result.n} questions: "
          f"hit@{args.k} {result.hit_rate:.4f}  MRR@{args.k} {result.mrr:.4f}  "
          f"latency p50 {figures['latency_ms_p50']} ms p95 {figures['latency_ms_p95']} ms")
    if args.json:
        print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
