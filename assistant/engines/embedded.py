"""The embedded engine: one SQLite file, no server.

SQLite holds the chunks, their analysed terms and their vectors, and makes every update one
transaction (crash-safe, readers never see half an update). Searches run over an in-memory
snapshot built from the file: a per-field inverted index scored with Lucene's BM25 (the same
formula, document-length encoding and multi_match best_fields combination as Elasticsearch, so
both engines rank alike) and a matrix of unit vectors for exact cosine kNN. The snapshot is
rebuilt when another writer has committed (a generation counter in the file says so).
"""

from __future__ import annotations

import functools
import json
import math
import os
import sqlite3
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from assistant.documents import Chunk
from assistant.engines.analysis import analyze
from assistant.engines.base import (LEXICAL_FIELDS, Hit, IndexedChunk, IndexInfo, LexicalParams,
                                    check_compatible, describe_owner, job_owner)
from assistant.errors import EngineError, EngineUnavailable, IndexBusy, IndexMismatch

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no job lock
    fcntl = None

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (
    chunk_id TEXT PRIMARY KEY,
    article_id TEXT NOT NULL,
    title TEXT NOT NULL,
    url TEXT NOT NULL,
    category TEXT NOT NULL,
    tags TEXT NOT NULL,
    text TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    title_terms TEXT NOT NULL,
    tags_terms TEXT NOT NULL,
    text_terms TEXT NOT NULL,
    vectors BLOB NOT NULL,
    windows_terms TEXT NOT NULL DEFAULT ''  -- analysed sentence windows, one per line
);
"""


def _lucene_length_table() -> np.ndarray:
    """Field lengths as Lucene decodes them from its one-byte norms (SmallFloat.byte4ToInt):
    exact below 24, then 3 significant bits. BM25 uses the decoded length, so must we."""
    max_int4 = 231  # SmallFloat.longToInt4(Integer.MAX_VALUE)
    free = 255 - max_int4
    table = np.zeros(256, dtype=np.float64)
    for byte in range(256):
        if byte < free:
            table[byte] = byte
        else:
            i = byte - free
            bits, shift = i & 0x07, (i >> 3) - 1
            table[byte] = free + (bits if shift == -1 else (bits | 0x08) << shift)
    return table


def _lucene_norm(length: int) -> int:
    """SmallFloat.intToByte4: the one-byte norm Lucene stores for a field length."""
    free = 24
    if length < free:
        return length
    i = length - free
    num_bits = i.bit_length()
    if num_bits < 4:
        return free + i
    shift = num_bits - 4
    encoded = (i >> shift) & 0x07 | (shift + 1) << 3
    return free + encoded


_LENGTHS = _lucene_length_table()


@dataclass
class _FieldIndex:
    """Postings of one text field in CSR form: the postings of term t are
    ``docs[offsets[t]:offsets[t+1]]`` with frequencies ``freqs[...]``."""

    vocab: dict[str, int]
    offsets: np.ndarray
    docs: np.ndarray
    freqs: np.ndarray
    lengths: np.ndarray  # decoded norm per document
    doc_count: int  # documents with at least one term in this field
    avg_length: float

    @classmethod
    def build(cls, term_lists: list[list[str]]) -> "_FieldIndex":
        vocab: dict[str, int] = {}
        doc_ids, term_ids = [], []
        for doc, terms in enumerate(term_lists):
            ids = [vocab.setdefault(t, len(vocab)) for t in terms]
            term_ids.extend(ids)
            doc_ids.extend([doc] * len(ids))
        n_docs = len(term_lists)
        raw_lengths = np.array([len(t) for t in term_lists], dtype=np.int64)
        keys = np.array(term_ids, dtype=np.int64) * max(n_docs, 1) + np.array(doc_ids, dtype=np.int64)
        keys, freqs = np.unique(keys, return_counts=True)
        terms_of_keys = keys // max(n_docs, 1)
        offsets = np.searchsorted(terms_of_keys, np.arange(len(vocab) + 1))
        doc_count = int(np.count_nonzero(raw_lengths))
        norms = np.array([_lucene_norm(int(n)) for n in raw_lengths], dtype=np.int64)
        return cls(
            vocab=vocab,
            offsets=offsets,
            docs=(keys % max(n_docs, 1)).astype(np.int64),
            freqs=freqs.astype(np.float64),
            lengths=_LENGTHS[norms] if n_docs else np.zeros(0),
            doc_count=doc_count,
            avg_length=float(raw_lengths.sum()) / doc_count if doc_count else 1.0,
        )

    def score(self, terms: list[str], n_docs: int, k1: float, b: float) -> np.ndarray:
        """BM25 of every document for these query terms, with the (k1 + 1) factor that
        Elasticsearch's LegacyBM25Similarity keeps (Lucene 8 dropped it; the order is the same)."""
        scores = np.zeros(n_docs, dtype=np.float64)
        for term in terms:
            t = self.vocab.get(term)
            if t is None:
                continue
            start, end = self.offsets[t], self.offsets[t + 1]
            docs, freqs = self.docs[start:end], self.freqs[start:end]
            idf = np.log(1.0 + (self.doc_count - len(docs) + 0.5) / (len(docs) + 0.5))
            norm = k1 * (1.0 - b + b * self.lengths[docs] / self.avg_length)
            scores[docs] += (k1 + 1.0) * idf * freqs / (freqs + norm)
        return scores


class _Snapshot:
    """An immutable, searchable picture of the file at one generation."""

    def __init__(self, generation: int, rows: list[tuple]):
        self.generation = generation
        self.chunk_ids = [r[0] for r in rows]
        self.categories = np.array([r[1] for r in rows], dtype=object)
        self.article_ids = [r[7] for r in rows]
        self.fields = {
            name: _FieldIndex.build([r[2 + i].split() for r in rows])
            for i, name in enumerate(LEXICAL_FIELDS)
        }
        windows, window_owners = [], []
        for doc, r in enumerate(rows):
            for line in r[8].split("\n") if r[8] else ():
                windows.append(line.split())
                window_owners.append(doc)
        self.windows = _FieldIndex.build(windows)
        self.window_owners = np.array(window_owners, dtype=np.int64)
        matrices, owners = [], []
        for doc, r in enumerate(rows):
            m = np.frombuffer(r[5], dtype=np.float32).reshape(-1, r[6])
            matrices.append(m)
            owners.append(np.full(len(m), doc, dtype=np.int64))
        dim = rows[0][6] if rows else 0
        self.vectors = np.vstack(matrices) if matrices else np.zeros((0, dim), np.float32)
        self.owners = np.concatenate(owners) if owners else np.zeros(0, np.int64)
        self.single_vector = len(self.owners) == len(rows)
        self.first_rows = np.searchsorted(self.owners, np.arange(len(rows)))

    def mask(self, category: str | None) -> np.ndarray | None:
        return None if category is None else self.categories == category

    def top(self, scores: np.ndarray, k: int, keep: np.ndarray,
            signals: dict[str, np.ndarray] | None = None) -> list[Hit]:
        """The best ``k`` kept documents; ``signals`` (Hit field -> per-document array) are
        copied onto each hit."""
        candidates = np.flatnonzero(keep)
        if len(candidates) > k:
            part = np.argpartition(-scores[candidates], k - 1)[:k]
            candidates = candidates[part]
        # Ties broken by chunk position, so the order is stable across runs (lexsort: last key
        # first). Values go to Python lists once: per-hit numpy scalar access dominated the time.
        order = candidates[np.lexsort((candidates, -scores[candidates]))]
        best = scores[order].tolist()
        columns = {name: values[order].tolist() for name, values in (signals or {}).items()}
        return [Hit(self.chunk_ids[d], best[i], self.article_ids[d],
                    **{name: v[i] if math.isfinite(v[i]) else None for name, v in columns.items()})
                for i, d in enumerate(order.tolist())]

    def window_scores(self, terms: list[str], k1: float, b: float) -> np.ndarray:
        """Per chunk, the BM25 of its best-matching sentence window (0 without windows)."""
        best = np.zeros(len(self.chunk_ids))
        if len(self.window_owners):
            scores = self.windows.score(terms, len(self.window_owners), k1, b)
            np.maximum.at(best, self.window_owners, scores)
        return best


def _within_top(values: np.ndarray, k: int, keep: np.ndarray) -> np.ndarray:
    """``values`` where they rank within the best ``k`` of the kept ones, -inf elsewhere."""
    kept = values[keep]
    if len(kept) <= k:
        return np.where(keep, values, -np.inf)
    threshold = np.partition(kept, len(kept) - k)[len(kept) - k]
    return np.where(keep & (values >= threshold), values, -np.inf)


def _reads(method):
    """A read of the file that fails (corrupt, removed, locked too long) is the engine being
    unavailable, which callers report as such, not a raw sqlite3 error."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as e:
            raise EngineUnavailable(f"the index file {self.path} cannot be read: {e}") from None

    return wrapper


class EmbeddedEngine:
    """The default engine: persistent in one SQLite file, exact search in memory."""

    name = "embedded"

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._snapshot: _Snapshot | None = None

    # -- storage -------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.executescript(SCHEMA)
                columns = {row[1] for row in conn.execute("PRAGMA table_info(chunks)")}
                if "windows_terms" not in columns:  # files written before windows were indexed
                    conn.execute("ALTER TABLE chunks ADD COLUMN windows_terms TEXT NOT NULL DEFAULT ''")
            except (sqlite3.Error, OSError) as e:
                raise EngineUnavailable(f"cannot open the index file {self.path}: {e}") from None
            self._local.conn = conn
        return conn

    def _meta(self, conn: sqlite3.Connection) -> dict[str, str]:
        return dict(conn.execute("SELECT key, value FROM meta"))

    @_reads
    def info(self) -> IndexInfo | None:
        conn = self._connect()
        meta = self._meta(conn)
        if "dim" not in meta:
            return None
        count = conn.execute("SELECT count(*) FROM chunks").fetchone()[0]
        try:
            last_run = json.loads(meta.get("last_run", "{}"))
        except ValueError:
            last_run = {}
        return IndexInfo(str(self.path), int(meta["dim"]), meta["model"], count,
                         updated_at=meta.get("updated_at", ""), last_run=last_run)

    @_reads
    def chunk_hashes(self) -> dict[str, str]:
        return dict(self._connect().execute("SELECT chunk_id, content_hash FROM chunks"))

    @_reads
    def indexed_articles(self) -> dict[str, str]:
        return dict(self._connect().execute("SELECT chunk_id, article_id FROM chunks"))

    @contextmanager
    def _transaction(self, what: str) -> Iterator[tuple[sqlite3.Connection, dict[str, str]]]:
        """One write transaction and the meta table as it is inside it: committed if the block
        ends normally, rolled back on any exception (a kill loses it whole: SQLite's journal)."""
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            yield conn, self._meta(conn)
            conn.execute("COMMIT")
        except sqlite3.Error as e:
            conn.execute("ROLLBACK")
            raise EngineError(f"{what} the index {self.path} failed: {e}") from None
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def write(self, upserts: Sequence[IndexedChunk], deletes: Iterable[str], *, dim: int,
              model: str, rebuild: bool = False) -> None:
        with self._transaction("writing to") as (conn, meta):
            if not rebuild and "dim" in meta:
                check_compatible(IndexInfo(str(self.path), int(meta["dim"]), meta["model"], 0),
                                 model=model, dim=dim)
            if rebuild:
                conn.execute("DELETE FROM chunks")
            conn.executemany("DELETE FROM chunks WHERE chunk_id = ?", [(d,) for d in deletes])
            # Rows are made as they are inserted: no second copy of a big update in memory.
            conn.executemany("INSERT OR REPLACE INTO chunks VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                             (self._row(item, dim) for item in upserts))
            generation = int(meta.get("generation", "0")) + 1
            conn.executemany(
                "INSERT OR REPLACE INTO meta VALUES (?, ?)",
                [("dim", str(dim)), ("model", model), ("generation", str(generation))])

    def record_run(self, run: dict, *, updated_at: str | None = None) -> None:
        # Not a new generation: readers keep their snapshot, only info() changes.
        with self._transaction("recording the run in") as (conn, meta):
            if "dim" not in meta:
                return
            values = [("last_run", json.dumps(run, ensure_ascii=False))]
            if updated_at:
                values.append(("updated_at", updated_at))
            conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", values)

    @property
    def lock_path(self) -> Path:
        """The job lock file, next to the index file."""
        return self.path.with_name(self.path.name + ".lock")

    @contextmanager
    def job_lock(self) -> Iterator[None]:
        """An OS lock (``flock``) on ``<index file>.lock``: the kernel drops it when the holding
        process ends, however it ends, so a killed job never blocks the next one. The file
        names the holder, for the message of a refused job."""
        if fcntl is None:  # pragma: no cover
            yield
            return
        path = self.lock_path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise EngineUnavailable(f"cannot open the lock file {path}: {e}") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                try:
                    owner = json.loads(os.pread(fd, 4096, 0) or b"{}")
                except ValueError:
                    owner = {}
                raise IndexBusy(f"another index job is running on {self.path} "
                                f"({describe_owner(owner)}): wait for it to end") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(job_owner()).encode(), 0)
            try:
                yield
            finally:
                os.ftruncate(fd, 0)
        finally:
            os.close(fd)  # releases the lock

    @staticmethod
    def _row(item: IndexedChunk, dim: int) -> tuple:
        c = item.chunk
        vectors = np.asarray(item.vectors, dtype=np.float32).reshape(-1, dim)
        return (c.chunk_id, c.article_id, c.title, c.url, c.category, c.tags, c.text,
                c.content_hash, " ".join(analyze(c.title)), " ".join(analyze(c.tags)),
                " ".join(analyze(c.text)), vectors.tobytes(),
                "\n".join(" ".join(analyze(w)) for w in c.windows))

    # -- search --------------------------------------------------------------------------

    @_reads
    def _current(self) -> _Snapshot:
        conn = self._connect()
        row = conn.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
        if row is None:
            raise EngineUnavailable(
                f"there is no index in {self.path} yet: build it with `assistant index`")
        generation = int(row[0])
        snapshot = self._snapshot
        if snapshot is not None and snapshot.generation == generation:
            return snapshot
        with self._lock:
            if self._snapshot is None or self._snapshot.generation != generation:
                rows = conn.execute(
                    "SELECT c.chunk_id, c.category, c.title_terms, c.tags_terms, c.text_terms, "
                    "c.vectors, CAST(m.value AS INTEGER), c.article_id, c.windows_terms "
                    "FROM chunks c, meta m "
                    "WHERE m.key = 'dim' ORDER BY c.rowid").fetchall()
                self._snapshot = _Snapshot(generation, rows)
            return self._snapshot

    def lexical_search(self, query: str, k: int, *, category: str | None = None,
                       params: LexicalParams | None = None) -> list[Hit]:
        params = params or LexicalParams()
        terms = analyze(query)
        snap = self._current()
        n = len(snap.chunk_ids)
        if not terms or n == 0 or k <= 0:
            return []
        per_field = [
            params.boosts.get(name, 1.0) * snap.fields[name].score(terms, n, params.k1, params.b)
            for name in LEXICAL_FIELDS
            if params.boosts.get(name, 1.0) > 0
        ]
        stacked = np.vstack(per_field)
        best = stacked.max(axis=0)
        chunk_scores = best + params.tie_breaker * (stacked.sum(axis=0) - best)
        signals = {"bm25_chunk": chunk_scores}
        scores = chunk_scores
        if params.windows > 0:
            windows = snap.window_scores(terms, params.k1, params.b)
            signals["bm25_window"] = windows
            scores = chunk_scores + params.windows * windows
        keep = scores > 0
        mask = snap.mask(category)
        if mask is not None:
            keep &= mask
        return snap.top(scores, k, keep, signals)

    def vector_search(self, vector: np.ndarray, k: int, *,
                      category: str | None = None) -> list[Hit]:
        snap = self._current()
        n = len(snap.chunk_ids)
        if n == 0 or k <= 0:
            return []
        vector = np.asarray(vector, dtype=np.float32).ravel()
        if vector.shape[0] != snap.vectors.shape[1]:
            raise IndexMismatch(
                f"query vector has {vector.shape[0]} dimensions, the index {snap.vectors.shape[1]}:"
                " the index was built with another embedder; rebuild it")
        similarities = snap.vectors @ vector
        if snap.single_vector:
            scores = similarities.astype(np.float64)
            signals = {"vector_chunk": scores}
        else:
            # Row 0 of each chunk's rows is its own vector, the others its windows.
            chunk_scores = similarities[snap.first_rows].astype(np.float64)
            window_scores = np.full(n, -np.inf)
            window_rows = np.ones(len(similarities), dtype=bool)
            window_rows[snap.first_rows] = False
            np.maximum.at(window_scores, snap.owners[window_rows], similarities[window_rows])
            scores = np.maximum(chunk_scores, window_scores)
            signals = {"vector_chunk": chunk_scores, "vector_window": window_scores}
        keep = np.ones(n, dtype=bool)
        mask = snap.mask(category)
        if mask is not None:
            keep &= mask
        # Like Elasticsearch's two kNN lists (chunk vectors, window vectors): a signal is known
        # for the chunks within the best k by that signal, not measured (None) for the others.
        signals = {name: _within_top(values, k, keep) for name, values in signals.items()}
        return snap.top(scores, k, keep, signals)

    @_reads
    def get_chunks(self, chunk_ids: Iterable[str]) -> dict[str, Chunk]:
        ids = list(dict.fromkeys(chunk_ids))
        found: dict[str, Chunk] = {}
        conn = self._connect()
        for start in range(0, len(ids), 500):
            batch = ids[start:start + 500]
            marks = ",".join("?" * len(batch))
            for row in conn.execute(
                    "SELECT chunk_id, article_id, title, text, url, category, tags FROM chunks "
                    f"WHERE chunk_id IN ({marks})", batch):
                found[row[0]] = Chunk(*row)
        return found

    @_reads
    def count(self) -> int:
        return self._connect().execute("SELECT count(*) FROM chunks").fetchone()[0]

    def ping(self) -> None:
        try:
            self._connect().execute("SELECT 1 FROM meta LIMIT 1")
        except sqlite3.Error as e:
            raise EngineUnavailable(f"the index file {self.path} cannot be read: {e}") from None

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

