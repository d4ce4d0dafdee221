"""Ground-truth questions for a corpus, written by an LLM: N questions per chunk, each answered
by that chunk, in the CSV format the evaluations read (``question,category,chunk,article``).

    python -m evaluation.generate_questions [--source data/articles.json] [--per-chunk 5] \\
        [--out evaluation/runs/ground_truth.csv] [--language fr|en|mixed] [--limit N] \\
        [--model gpt-4o-mini] [--workers 4] [--fresh] [--json]

Chunks are cut with the configured CHUNK_SIZE / CHUNK_OVERLAP, so their ids match the index.
The file is written as chunks complete and a rerun skips the chunks already in it (``--fresh``
starts over): an interrupted run resumes. Settings (LLM key, base URL…) come from the
environment / ``.env``.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from assistant.answering.llm import LLMClient, LLMError
from assistant.answering.prices import cost as price_cost
from assistant.config import REPO_DIR, load_settings
from assistant.documents import Chunk
from assistant.errors import AssistantError, ConfigError

FIELDS = ("question", "category", "chunk", "article")
DEFAULT_OUT = REPO_DIR / "evaluation" / "runs" / "ground_truth.csv"

LANGUAGES = {
    "fr": "Write every question in French.",
    "en": "Write every question in English.",
    "mixed": "Write about half of the questions in French and half in English.",
}

PROMPT = """You write evaluation questions for the search engine of Arsonor, a French blog about \
audio production (home studio, sound design, audio post-production).

Here is one passage of the article "{title}" (category: {category}):

{text}

Write {n} different questions that a reader of the blog could ask and whose answer is in this \
passage. {language} Each question must make sense on its own (never "this article", "the \
passage", "the author"), be short (at most 25 words), sound like a real reader (some precise, \
some vague, some with a typo or no question mark), and not copy long phrases from the passage.

Reply with a JSON list of {n} strings and nothing else."""


def parse_questions(text: str, n: int) -> list[str]:
    """Up to ``n`` distinct questions from the model's reply: a JSON list (possibly in a code
    fence or among other text), else one question per line (numbering and bullets removed)."""
    found: list[str] = []
    decoder = json.JSONDecoder()
    for m in re.finditer(r"\[", text or ""):
        try:
            value, _ = decoder.raw_decode(text, m.start())
        except ValueError:
            continue
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            found = value
            break
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            found = [str(v.get("question", "")) for v in value]
            break
    if not found:
        for line in (text or "").splitlines():
            line = re.sub(r"^\s*(?:[-*•]|\d+[.)])\s*", "", line).strip().strip("\"'")
            if line and not line.startswith(("```", "[", "]")):
                found.append(line)
    seen: dict[str, str] = {}
    for q in found:
        q = " ".join(str(q).split())
        if len(q) >= 5 and q.lower() not in seen:
            seen[q.lower()] = q
    return list(seen.values())[:n]


def done_chunks(path: Path) -> set[str]:
    if not path.is_file():
        return set()
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != FIELDS:
            raise ConfigError(f"{path}: not a ground-truth CSV ({','.join(FIELDS)}); use --fresh "
                              "to replace it or choose another --out")
        return {row["chunk"] for row in reader}


def generate(llm: LLMClient, chunks: list[Chunk], out: Path, *, per_chunk: int = 5,
             language: str = "fr", workers: int = 4, fresh: bool = False,
             progress: bool = True) -> dict:
    """Write ``per_chunk`` questions for each chunk not in ``out`` yet; returns a summary."""
    out.parent.mkdir(parents=True, exist_ok=True)
    skip = set() if fresh else done_chunks(out)
    todo = [c for c in chunks if c.chunk_id not in skip]
    lock = threading.Lock()
    summary = {"chunks": len(chunks), "skipped": len(chunks) - len(todo), "generated_for": 0,
               "questions": 0, "failed": 0, "tokens": 0, "cost": 0.0, "out": str(out)}
    new_file = fresh or not out.is_file()
    f = out.open("w" if new_file else "a", encoding="utf-8", newline="")
    writer = csv.DictWriter(f, fieldnames=FIELDS)
    if new_file:
        writer.writeheader()

    def one(chunk: Chunk) -> None:
        prompt = PROMPT.format(title=chunk.title, category=chunk.category or "-",
                               text=chunk.text.strip(), n=per_chunk, language=LANGUAGES[language])
        try:
            completion = llm.complete([{"role": "user", "content": prompt}], temperature=0.7)
            questions = parse_questions(completion.text, per_chunk)
            if not questions:
                raise ValueError(f"no question in the reply {completion.text[:120]!r}")
        except (LLMError, ValueError) as e:
            with lock:
                summary["failed"] += 1
            print(f"chunk {chunk.chunk_id}: {e}", file=sys.stderr)
            return
        cost = price_cost(completion.model, completion.usage)
        with lock:
            for q in questions:
                writer.writerow({"question": q, "category": chunk.category, "chunk": chunk.chunk_id,
                                 "article": chunk.article_id})
            f.flush()
            summary["generated_for"] += 1
            summary["questions"] += len(questions)
            summary["tokens"] += completion.usage.total_tokens
            summary["cost"] = None if cost is None or summary["cost"] is None else summary["cost"] + cost
            if progress:
                done = summary["generated_for"] + summary["failed"]
                print(f"\r{done}/{len(todo)} chunks", end="", file=sys.stderr, flush=True)

    try:
        with ThreadPoolExecutor(max(1, workers)) as pool:
            list(pool.map(one, todo))
    finally:
        f.close()
        if progress and todo:
            print(file=sys.stderr)
    if summary["cost"] is not None:
        summary["cost"] = round(summary["cost"], 6)
    return summary


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m evaluation.generate_questions",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", help="articles JSON, chunks JSON or sitemap URL (default: SOURCE)")
    parser.add_argument("--per-chunk", type=int, default=5, help="questions per chunk")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="CSV to write")
    parser.add_argument("--language", choices=sorted(LANGUAGES), default="fr")
    parser.add_argument("--limit", type=int, default=0, help="only the first N chunks (0: all)")
    parser.add_argument("--model", help="model (default: LLM_MODEL)")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--fresh", action="store_true", help="overwrite --out instead of resuming")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        if args.per_chunk < 1:
            raise ConfigError("--per-chunk must be at least 1")
        settings = load_settings()
        if not (settings.openai_api_key or settings.openai_base_url):
            raise ConfigError("generating questions needs an LLM: set OPENAI_API_KEY (or OPENAI_BASE_URL)")
        from indexing.sources import load_chunks

        chunks = load_chunks(args.source or settings.source, size=settings.chunk_size,
                             overlap=settings.chunk_overlap,
                             crawl_cache=f"{settings.data_dir}/crawl-cache", progress=not args.json)
        if args.limit:
            chunks = chunks[:args.limit]
        llm = LLMClient(api_key=settings.openai_api_key or "not-needed",
                        base_url=settings.openai_base_url or None,
                        model=args.model or settings.llm_model, timeout=settings.llm_timeout,
                        max_retries=settings.llm_max_retries)
        try:
            summary = generate(llm, chunks, Path(args.out), per_chunk=args.per_chunk,
                               language=args.language, workers=args.workers, fresh=args.fresh,
                               progress=not args.json)
        finally:
            llm.close()
    except AssistantError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(summary, ensure_ascii=False, indent=2))
    else:
        print(f"{summary['questions']} questions for {summary['generated_for']} chunk(s) written to "
              f"{summary['out']} ({summary['skipped']} already there, {summary['failed']} failed)")
    return 0 if not summary["failed"] else 1


if __name__ == "__main__":
    sys.exit(main())
