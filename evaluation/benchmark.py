"""Retrieval speed: latency p50/p95 (query embedding included), index build and re-index times.

    python -m evaluation.benchmark [--chunks FILE] [--questions FILE] [--synthetic 100000]
                                   [--queries 200] [--engine embedded|elasticsearch] [--json]

Three measurements:
- on the real corpus (``--chunks``, default the demo corpus): full build with an empty
  embedding cache, re-index of the unchanged corpus, hybrid latency over ``--queries``
  questions (each embedded afresh: the query memo is bypassed);
- on a synthetic corpus of ``--synthetic`` chunks (0 to skip): French-like text drawn from the
  corpus vocabulary and random unit vectors (embedding 100k real chunks would take hours on
  this machine and says nothing about search speed), then the same hybrid latency.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time

import numpy as np
from tqdm import tqdm

from assistant.config import REPO_DIR, load_settings
from assistant.documents import Chunk
from assistant.embeddings import EmbeddingCache, embedder_from_settings
from assistant.engines import open_engine
from assistant.engines.base import IndexedChunk
from assistant.retrieval import RetrievalConfig, Retriever
from evaluation.retrieval import read_questions
from indexing.job import index_model_name, run_index, unit_vectors
from indexing.sources import load_chunks


def percentiles(seconds: list[float]) -> dict:
    ms = np.array(seconds) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p95_ms": round(float(np.percentile(ms, 95)), 2),
            "max_ms": round(float(ms.max()), 2), "n": len(ms)}


def measure_latency(retriever: Retriever, questions: list[str], k: int = 10) -> dict:
    retriever.rank(questions[0], k)  # warm-up: loads the model and the snapshot
    timings, embedding = [], []
    for q in questions:
        started = time.perf_counter()
        ranking = retriever.rank(q, k)
        timings.append(time.perf_counter() - started)
        embedding.append(ranking.timing.embedding)
    return {**percentiles(timings), "of which query embedding": percentiles(embedding)}


def synthetic_chunks(n: int, vocabulary: list[str], seed: int = 0) -> list[Chunk]:
    rng = np.random.default_rng(seed)
    words = np.array(vocabulary)
    categories = ["LE HOME STUDIO", "LE SOUND DESIGN", "LA POST-PROD"]
    chunks = []
    for i in tqdm(range(n), desc="synthetic corpus", unit="chunk"):
        body = words[rng.integers(0, len(words), 280)]
        sentences = [" ".join(body[j:j + 14]).capitalize() + "." for j in range(0, 280, 14)]
        chunks.append(Chunk(f"syn{i // 6}-{i % 6 + 1}", f"syn{i // 6}",
                            " ".join(words[rng.integers(0, len(words), 6)]).capitalize(),
                            " ".join(sentences), category=categories[i % 3],
                            tags=", ".join(words[rng.integers(0, len(words), 3)])))
    return chunks


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.benchmark",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", default=str(REPO_DIR / "data" / "articles.json"))
    parser.add_argument("--questions", default=str(REPO_DIR / "evaluation" / "demo_questions.jsonl"))
    parser.add_argument("--engine", choices=("embedded", "elasticsearch"), default="embedded")
    parser.add_argument("--synthetic", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--embedding-cache", help="reuse this embedding cache (default: a fresh "
                        "one, so the full build includes embedding every text)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    settings = load_settings()
    config = RetrievalConfig.load(settings.retrieval_config_file)
    embedder = embedder_from_settings(settings)
    questions = [q.text for q in read_questions(args.questions)]
    questions = (questions * (args.queries // len(questions) + 1))[: args.queries]
    results: dict = {"engine": args.engine, "config": config.passage.tag}

    with tempfile.TemporaryDirectory() as tmp:
        chunks = load_chunks(args.chunks)
        run = settings.replace(data_dir=tmp, embedded_path=f"{tmp}/real.sqlite",
                               es_index="arsonor-bench-real")
        engine = open_engine(run, config.lexical, kind=args.engine)
        cache = EmbeddingCache(args.embedding_cache or f"{tmp}/cache.sqlite")
        build = run_index(chunks, engine, embedder, recipe=config.passage, cache=cache,
                          rebuild=True, progress=not args.json)
        again = run_index(chunks, engine, embedder, recipe=config.passage, cache=cache,
                          progress=False)
        results["real"] = {
            "chunks": len(chunks), "texts_embedded": build.embedded,
            "full_build_s": round(build.seconds, 2), "reindex_unchanged_s": round(again.seconds, 3),
            "hybrid_latency": measure_latency(Retriever(engine, lambda q: embedder.embed_queries([q])[0],
                                                        config), questions),
        }
        if args.synthetic:
            vocabulary = sorted({w for c in chunks for w in c.text.split() if w.isalpha()})
            synthetic = synthetic_chunks(args.synthetic, vocabulary)
            vectors = unit_vectors(len(synthetic), embedder.dim, seed=1)
            run = run.replace(embedded_path=f"{tmp}/synthetic.sqlite", es_index="arsonor-bench-syn")
            engine = open_engine(run, config.lexical, kind=args.engine)
            started = time.perf_counter()
            items = [IndexedChunk(c, v.reshape(1, -1)) for c, v in zip(synthetic, vectors)]
            engine.write(items, [], dim=embedder.dim, model=index_model_name(embedder, config.passage),
                         rebuild=True)
            write_s = time.perf_counter() - started
            started = time.perf_counter()
            retriever = Retriever(engine, lambda q: embedder.embed_queries([q])[0], config)
            retriever.rank("chauffe le signal", 10)
            load_s = time.perf_counter() - started
            results["synthetic"] = {
                "chunks": len(synthetic), "write_s": round(write_s, 1),
                "first_query_s (loads the snapshot)": round(load_s, 1),
                "hybrid_latency": measure_latency(retriever, questions),
            }
    for name in ("real", "synthetic"):
        if name in results:
            print(f"{name}: {json.dumps(results[name])}")
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
