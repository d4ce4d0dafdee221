"""The index job: chunks → vectors (cached) → engine, as one update readers never see half of.

Incremental by default: chunks whose content hash is unchanged are skipped, changed and new
ones are embedded (cache first) and upserted, vanished ones deleted. ``rebuild`` replaces the
whole index (on Elasticsearch: a new versioned index and an atomic alias swap).

Articles named in ``keep_articles`` (their page failed transiently this time) keep the chunks
they have in the index, untouched, instead of being taken for removed.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import Collection

import numpy as np

from assistant.documents import Chunk
from assistant.embeddings import Embedder, EmbeddingCache, embed_passages_cached
from assistant.engines.base import Engine, IndexedChunk, check_compatible
from assistant.retrieval import PassageRecipe, passage_text
from indexing.chunker import sentence_windows

log = logging.getLogger(__name__)
# At most this many failed pages are recorded on the index (the count is always exact).
MAX_RECORDED_FAILURES = 50


@dataclass
class IndexReport:
    """What one index job did. ``pages`` (crawl outcome -> count, see
    ``indexing.crawler.OUTCOMES``) and ``failures`` come from a crawl; they are empty for
    JSON sources. Article counts compare with the index as it was before."""

    engine: str
    index: str
    chunks: int
    upserted: int
    deleted: int
    unchanged: int
    embedded: int
    seconds: float
    rebuilt: bool
    articles_new: int = 0
    articles_changed: int = 0
    articles_removed: int = 0
    kept: int = 0  # chunks of articles kept as they were (their page failed this time)
    pages: dict = field(default_factory=dict)
    failures: tuple[str, ...] = ()

    def summary(self) -> str:
        """One line: crawl, articles, chunks, embeddings, time."""
        action = "rebuilt" if self.rebuilt else "updated"
        parts = []
        if self.pages:
            counts = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in self.pages.items()
                               if n or k in ("fetched", "not_modified", "failed"))
            parts.append(f"pages: {counts}")
        parts.append(f"articles: {self.articles_new} new, {self.articles_changed} changed, "
                     f"{self.articles_removed} removed"
                     + (f", {self.kept} chunks kept" if self.kept else ""))
        return (f"{'; '.join(parts)}; {self.engine} index {self.index} {action}: "
                f"{self.chunks} chunks, {self.upserted} written, {self.deleted} deleted, "
                f"{self.unchanged} unchanged, {self.embedded} texts embedded, "
                f"in {self.seconds:.1f} s")

    def record(self, started_at: str, finished_at: str) -> dict:
        """The run as the index records it (``Engine.record_run``): a JSON object."""
        return {"ok": True, "started_at": started_at, "finished_at": finished_at,
                "seconds": round(self.seconds, 3), "rebuilt": self.rebuilt,
                "pages": dict(self.pages),
                "articles": {"new": self.articles_new, "changed": self.articles_changed,
                             "removed": self.articles_removed},
                "chunks": {"total": self.chunks, "written": self.upserted,
                           "deleted": self.deleted, "unchanged": self.unchanged,
                           "kept": self.kept},
                "embedded": self.embedded, "failed": len(self.failures),
                "failures": list(self.failures[:MAX_RECORDED_FAILURES]), "summary": self.summary()}


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
              rebuild: bool = False, progress: bool = True,
              keep_articles: Collection[str] = ()) -> IndexReport:
    """Bring ``engine``'s index to exactly ``chunks``, plus the indexed chunks of the articles
    in ``keep_articles`` that ``chunks`` does not have (kept as they are; a rebuild copies
    them). An index that an interrupted update may have left half-published
    (``IndexInfo.interrupted``) is rebuilt."""
    started = time.perf_counter()
    recipe = recipe or PassageRecipe()
    model = index_model_name(embedder, recipe)
    info = engine.info()
    if info is not None and not rebuild:
        check_compatible(info, model=model, dim=embedder.dim)
    if info is not None and info.interrupted and not rebuild:
        log.warning("The last update of %s was cut short: rebuilding it.", info.name)
        rebuild = True
    chunks = with_windows(chunks, recipe)
    wanted = {c.chunk_id: c for c in chunks}
    before = engine.indexed_articles() if info is not None else {}
    existing = engine.chunk_hashes() if info is not None else {}
    fresh = {c.article_id for c in chunks}
    kept = {cid for cid, aid in before.items()
            if aid in keep_articles and aid not in fresh and cid not in wanted}
    differs = [c for c in chunks if existing.get(c.chunk_id) != c.content_hash]
    vanished = [cid for cid in existing if cid not in wanted and cid not in kept]
    if rebuild or info is None:
        rebuild = True
        copies = with_windows(list(engine.get_chunks(kept).values()), recipe) if kept else []
        changed, deletes = list(wanted.values()) + copies, []
    else:
        changed, deletes = differs, vanished
    embedded = 0
    if rebuild or changed or deletes:
        items, embedded = embed_chunks(changed, embedder, recipe, cache, progress)
        engine.write(items, deletes, dim=embedder.dim, model=model, rebuild=rebuild)
    final = engine.info()
    old_articles = set(before.values())
    touched = {c.article_id for c in differs} | {before[cid] for cid in vanished if cid in before}
    return IndexReport(engine=engine.name, index=final.name if final else "-",
                       chunks=len(wanted) + len(kept), upserted=len(changed),
                       deleted=len(deletes),
                       unchanged=0 if rebuild else len(wanted) - len(differs),
                       embedded=embedded, seconds=time.perf_counter() - started,
                       rebuilt=rebuild, articles_new=len(fresh - old_articles),
                       articles_changed=len(touched & fresh & old_articles),
                       articles_removed=len(old_articles - fresh - {before[c] for c in kept}),
                       kept=len(kept))


def unit_vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """Random unit vectors, for synthetic corpora in benchmarks and tests."""
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)
