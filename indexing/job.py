"""The index job: chunks → vectors (cached) → engine, as one update readers never see half of.

Incremental by default: chunks whose content hash is unchanged are skipped, changed and new
ones are embedded (cache first) and upserted, vanished ones deleted. ``rebuild`` replaces the
whole index (on Elasticsearch: a new versioned index and an atomic alias swap).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np

from assistant.documents import Chunk
from assistant.embeddings import Embedder, EmbeddingCache, embed_passages_cached
from assistant.engines.base import Engine, IndexedChunk, check_compatible
from assistant.retrieval import PassageRecipe, passage_text
from indexing.chunker import sentence_windows


@dataclass
class IndexReport:
    engine: str
    index: str
    chunks: int
    upserted: int
    deleted: int
    unchanged: int
    embedded: int
    seconds: float
    rebuilt: bool

    def summary(self) -> str:
        action = "rebuilt" if self.rebuilt else "updated"
        return (f"{self.engine} index {self.index} {action}: {self.chunks} chunks, "
                f"{self.upserted} written, {self.deleted} deleted, {self.unchanged} unchanged, "
                f"{self.embedded} texts embedded, in {self.seconds:.1f} s")


def index_model_name(embedder: Embedder, recipe: PassageRecipe) -> str:
    """What the index records as its model: the embedder and what was embedded."""
    return f"{embedder.name}#{recipe.tag}"


def with_windows(chunks: list[Chunk], recipe: PassageRecipe) -> list[Chunk]:
    """The chunks with their sentence windows when the recipe asks for windows."""
    if not recipe.window_words:
        return chunks
    return [replace(c, windows=tuple(sentence_windows(c.text, recipe.window_words))) for c in chunks]


def embed_chunks(chunks: list[Chunk], embedder: Embedder, recipe: PassageRecipe,
                 cache: EmbeddingCache | None, progress: bool = True) -> tuple[list[IndexedChunk], int]:
    """Each chunk with its vectors: the passage text's, then one per sentence window."""
    texts: list[str] = []
    spans: list[tuple[int, int]] = []
    for chunk in chunks:
        start = len(texts)
        texts.append(passage_text(chunk, recipe))
        prefix = f"{chunk.title}\n" if recipe.window_title and chunk.title else ""
        texts.extend(prefix + w for w in chunk.windows)
        spans.append((start, len(texts)))
    vectors, embedded = embed_passages_cached(embedder, texts, cache, progress=progress)
    return [IndexedChunk(c, vectors[a:b]) for c, (a, b) in zip(chunks, spans)], embedded


def run_index(chunks: list[Chunk], engine: Engine, embedder: Embedder, *,
              recipe: PassageRecipe | None = None, cache: EmbeddingCache | None = None,
              rebuild: bool = False, progress: bool = True) -> IndexReport:
    """Bring ``engine``'s index to exactly ``chunks``."""
    started = time.perf_counter()
    recipe = recipe or PassageRecipe()
    model = index_model_name(embedder, recipe)
    info = engine.info()
    if info is not None and not rebuild:
        check_compatible(info, model=model, dim=embedder.dim)
    rebuild = rebuild or info is None
    chunks = with_windows(chunks, recipe)
    wanted = {c.chunk_id: c for c in chunks}
    if rebuild:
        changed, deletes = list(wanted.values()), []
    else:
        existing = engine.chunk_hashes()
        changed = [c for c in chunks if existing.get(c.chunk_id) != c.content_hash]
        deletes = [cid for cid in existing if cid not in wanted]
    embedded = 0
    if rebuild or changed or deletes:
        items, embedded = embed_chunks(changed, embedder, recipe, cache, progress)
        engine.write(items, deletes, dim=embedder.dim, model=model, rebuild=rebuild)
    final = engine.info()
    return IndexReport(engine=engine.name, index=final.name if final else "-", chunks=len(wanted),
                       upserted=len(changed), deleted=len(deletes),
                       unchanged=len(wanted) - len(changed), embedded=embedded,
                       seconds=time.perf_counter() - started, rebuilt=rebuild)


def unit_vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """Random unit vectors, for synthetic corpora in benchmarks and tests."""
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)
