"""The Elasticsearch engine: BM25 with a French analyzer and cosine kNN, behind an alias.

Layout: the alias (``arsonor-chunks`` by default) points to exactly one physical index named
``<alias>-v<UTC timestamp>``. A rebuild loads a fresh index completely, then moves the alias in
one atomic ``_aliases`` call and deletes the old index, so readers never see a missing or
half-built index. Incremental updates go to the live index and become visible at one explicit
refresh (the index is created with ``refresh_interval: -1``).

Each document is one chunk (``_id`` = chunk id). Row 0 of its vectors is the ``vector`` field;
sentence-window rows, when there are any, go to the nested ``windows`` field, and vector search
scores a chunk by its best vector (chunk or window).

Query bodies are built by small pure functions (:func:`index_body`, :func:`lexical_query`,
:func:`knn_query`) so they can be tested without a server. Every client error is turned into
:class:`~assistant.errors.EngineUnavailable` (cannot connect, no index yet) or
:class:`~assistant.errors.EngineError` (anything else) with a message meant for a person.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any, Iterable, Iterator, Sequence
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from assistant.documents import Chunk
from assistant.engines.base import (LEXICAL_FIELDS, Hit, IndexedChunk, IndexInfo, LexicalParams,
                                    check_compatible, describe_owner, job_owner)
from assistant.errors import (
    AssistantError,
    EngineError,
    EngineUnavailable,
    IndexBusy,
    IndexMismatch,
)

log = logging.getLogger(__name__)

ANALYZER = "arsonor_french"
SIMILARITY = "arsonor_bm25"
BULK_BATCH = 500
LOCK_ID = "index-job"
# A job renews its lock every LOCK_TTL / 4 seconds; a lock not renewed for LOCK_TTL seconds
# (its holder died on another host) can be taken over. On the same host a dead holder's lock
# is taken over at once (its process id is gone).
LOCK_TTL = 120.0
# Lock tokens this process holds: a lock of this host and pid with another token was left by a
# previous process that had the same pid (a restarted container's PID 1).
_HELD_TOKENS: set[str] = set()
KEYWORD_FIELDS = ("chunk_id", "article_id", "category", "url", "content_hash")
# Explicit HNSW on full floats: from ES 9.1, 384-d vectors would default to bbq_hnsw
# (quantised), and both engines must rank by the same exact cosine.
HNSW_OPTIONS = {"type": "hnsw", "m": 16, "ef_construction": 100}

# `lowercase` must come before `elision`: noida-db's elision ignores `articles_case`, and in
# real Elasticsearch the order gives the same tokens.
FRENCH_ANALYSIS = {
    "filter": {
        "fr_elision": {
            "type": "elision",
            "articles": ["l", "m", "t", "qu", "n", "s", "j", "d", "c",
                         "jusqu", "quoiqu", "lorsqu", "puisqu"],
        },
        "fr_stop": {"type": "stop", "stopwords": "_french_"},
        "fr_stemmer": {"type": "stemmer", "language": "light_french"},
    },
    "analyzer": {
        ANALYZER: {
            "tokenizer": "standard",
            "filter": ["lowercase", "fr_elision", "fr_stop", "fr_stemmer", "asciifolding"],
        },
    },
}


# --------------------------------------------------------------------------- pure builders


def vector_mapping(dim: int) -> dict:
    """A full-float, cosine, HNSW ``dense_vector`` of ``dim`` dimensions."""
    return {"type": "dense_vector", "dims": int(dim), "index": True, "similarity": "cosine",
            "index_options": dict(HNSW_OPTIONS)}


def index_body(dim: int, model: str, k1: float = 1.2, b: float = 0.75) -> dict:
    """Settings and mappings of one versioned chunk index (``indices.create`` keyword args)."""
    text_field = {"type": "text", "analyzer": ANALYZER, "similarity": SIMILARITY}
    properties: dict[str, Any] = {name: {"type": "keyword"} for name in KEYWORD_FIELDS}
    properties.update({name: dict(text_field) for name in LEXICAL_FIELDS})
    properties["vector"] = vector_mapping(dim)
    properties["windows"] = {
        "type": "nested",
        "properties": {
            "vector": vector_mapping(dim),
            # BM25 of the best window (a nested query with score_mode max) sharpens lexical
            # ranking when ``LexicalParams.windows`` > 0.
            "text": dict(text_field),
        },
    }
    return {
        "settings": {
            "number_of_shards": 1,
            "number_of_replicas": 0,
            # Only our explicit refreshes publish writes: an update appears all at once.
            "refresh_interval": "-1",
            "similarity": {SIMILARITY: {"type": "BM25", "k1": float(k1), "b": float(b)}},
            "analysis": FRENCH_ANALYSIS,
        },
        "mappings": {
            "_meta": {"dim": int(dim), "model": str(model)},
            "properties": properties,
        },
    }


def lexical_query(query: str, k: int, *, category: str | None = None,
                  params: LexicalParams | None = None) -> dict:
    """The search body of a lexical query: ``multi_match`` best_fields over the boosted fields.

    BM25 k1/b are index settings (the constructor's), so ``params.k1``/``params.b`` play no
    part here.
    """
    params = params or LexicalParams()
    fields = [f"{name}^{float(params.boosts.get(name, 1.0)):g}" for name in LEXICAL_FIELDS]
    match = {"multi_match": {"query": query, "type": "best_fields", "fields": fields,
                             "tie_breaker": float(params.tie_breaker)}}
    filters = [{"term": {"category": category}}] if category else []
    if params.windows > 0:
        # Scores add up across `should` clauses: chunk score + weight × best window's BM25.
        # The best window comes back as an inner hit: the chunk's own BM25 is the rest.
        best_window = {"nested": {"path": "windows", "score_mode": "max", "query": {
            "match": {"windows.text": {"query": query, "boost": float(params.windows)}}},
            "inner_hits": {"size": 1, "_source": False}}}
        boolean = {"should": [match, best_window], "minimum_should_match": 1, "filter": filters}
    else:
        boolean = {"must": [match], "filter": filters}
    return {"query": {"bool": boolean}, "size": int(k), "_source": ["article_id"]}


def knn_query(vector: Sequence[float] | np.ndarray, k: int, num_candidates: int = 100, *,
              category: str | None = None, field: str = "vector") -> dict:
    """The search body of a top-level kNN query on ``field`` (``windows.vector`` for windows,
    where a chunk scores by its best window)."""
    knn: dict[str, Any] = {
        "field": field,
        "query_vector": [float(x) for x in np.asarray(vector, dtype=np.float64).ravel()],
        "k": int(k),
        "num_candidates": max(int(num_candidates), int(k)),
    }
    if category:
        knn["filter"] = {"term": {"category": category}}
    return {"knn": knn, "size": int(k), "_source": ["article_id"]}


def chunk_document(item: IndexedChunk) -> dict:
    """The ``_source`` of one chunk: its fields, hash, vector and (if any) window vectors."""
    chunk = item.chunk
    vectors = np.atleast_2d(np.asarray(item.vectors, dtype=np.float32))
    doc = chunk.to_dict()
    doc["content_hash"] = chunk.content_hash
    doc["vector"] = vectors[0].tolist()
    if len(vectors) > 1:
        texts = chunk.windows if len(chunk.windows) == len(vectors) - 1 else ()
        windows = []
        for i, row in enumerate(vectors[1:]):
            window: dict[str, Any] = {"vector": row.tolist()}
            if texts:
                window["text"] = texts[i]
            windows.append(window)
        doc["windows"] = windows
    return doc


def chunk_from_source(source: dict) -> Chunk:
    """Rebuild a :class:`Chunk` from a stored ``_source`` (vectors left out)."""
    windows = tuple(w["text"] for w in source.get("windows") or () if "text" in w)
    return Chunk(
        chunk_id=source["chunk_id"],
        article_id=source.get("article_id", ""),
        title=source.get("title", ""),
        text=source.get("text", ""),
        url=source.get("url", ""),
        category=source.get("category", ""),
        tags=source.get("tags", ""),
        windows=windows,
    )


def versioned_name(alias: str, now: datetime | None = None) -> str:
    """``<alias>-v<YYYYmmddHHMMSSffffff>`` (UTC)."""
    now = now or datetime.now(timezone.utc)
    return f"{alias}-v{now:%Y%m%d%H%M%S%f}"


def safe_url(url: str) -> str:
    """The URL without a password, for messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None and parts.username is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def _meta(description: dict) -> dict:
    """The ``_meta`` of an ``indices.get`` description (a copy)."""
    return dict((description.get("mappings") or {}).get("_meta") or {})


def _hit(hit: dict) -> Hit:
    return Hit(hit["_id"], float(hit["_score"]), (hit.get("_source") or {}).get("article_id", ""))


def _lexical_hit(hit: dict, windows: float) -> Hit:
    """A lexical hit with its chunk and best-window BM25 apart (the window's from its inner
    hit, whose score carries the ``windows`` boost)."""
    plain = _hit(hit)
    if windows <= 0:
        return replace(plain, bm25_chunk=plain.score)
    inner = ((hit.get("inner_hits") or {}).get("windows") or {}).get("hits") or {}
    boosted = float(inner.get("max_score") or 0.0) if inner.get("hits") else 0.0
    return replace(plain, bm25_chunk=plain.score - boosted, bm25_window=boosted / windows)


# --------------------------------------------------------------------------- errors


def _connection_reason(exc: Exception, timeout: float) -> str:
    from elasticsearch import ConnectionTimeout

    if isinstance(exc, ConnectionTimeout):
        return f"no answer within {timeout:g} s"
    text = str(exc)
    found = re.search(r"\[Errno -?\d+\] ([^)\]>(]+)", text)
    if found:
        return found.group(1).strip().rstrip(".").lower()
    if "timed out" in text.lower():
        return f"no answer within {timeout:g} s"
    if "ssl" in text.lower() or "certificate" in text.lower():
        return "TLS handshake failed (check https and certificates)"
    return "connection failed"


def _api_reason(exc: Exception) -> tuple[str, str]:
    """``(error type, reason)`` of an Elasticsearch API error."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            causes = error.get("root_cause") or []
            first = causes[0] if causes and isinstance(causes[0], dict) else error
            kind = str(first.get("type") or error.get("type") or "error")
            reason = str(first.get("reason") or error.get("reason") or "")
            return kind, reason
        if isinstance(error, str):
            return "error", error
    return "error", str(getattr(exc, "message", "") or exc)


def _bulk_error_text(item: dict) -> str:
    op, info = next(iter(item.items()))
    error = info.get("error")
    if isinstance(error, dict):
        error = f"{error.get('type', 'error')}: {error.get('reason', '')}"
    return f"{op} {info.get('_id')}: {error or info.get('result') or info.get('status')}"


# --------------------------------------------------------------------------- engine


class ElasticsearchEngine:
    """Chunks in Elasticsearch (or anything that speaks its REST API, such as noida-db)."""

    name = "elasticsearch"

    def __init__(self, url: str, alias: str = "arsonor-chunks", *, timeout: float = 10.0,
                 k1: float = 1.2, b: float = 0.75, num_candidates: int = 100, client=None):
        self.url = url
        self.alias = alias
        self.timeout = float(timeout)
        self.k1 = float(k1)
        self.b = float(b)
        self.num_candidates = int(num_candidates)
        self._client = client
        self._owns_client = client is None
        # Physical index -> whether it holds window vectors (checked once per index).
        self._windows: dict[str, bool] = {}
        # False once the server refused a kNN query on the nested windows field.
        self._nested_knn = True

    # -- plumbing

    @property
    def client(self):
        """The ``elasticsearch.Elasticsearch`` client, built on first use."""
        if self._client is None:
            from elasticsearch import Elasticsearch

            try:
                self._client = Elasticsearch(self.url, request_timeout=self.timeout,
                                             max_retries=2, retry_on_timeout=True)
            except ValueError as exc:
                raise EngineUnavailable(
                    f"Elasticsearch URL {safe_url(self.url)!r} is invalid: {exc}") from exc
            self._owns_client = True
        return self._client

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Turn client exceptions into the assistant's, with a readable message."""
        from elasticsearch import (
            ApiError,
            ConnectionError,
            ConnectionTimeout,
            TransportError,
            UnsupportedProductError,
        )

        url = safe_url(self.url)
        try:
            yield
        except AssistantError:
            raise
        except (ConnectionError, ConnectionTimeout) as exc:
            raise EngineUnavailable(
                f"Elasticsearch at {url} is unreachable: {_connection_reason(exc, self.timeout)}"
                " (is it running? check ES_URL)") from exc
        except UnsupportedProductError as exc:
            raise EngineUnavailable(
                f"the server at {url} is not Elasticsearch (or an unsupported version)") from exc
        except ApiError as exc:
            status = getattr(exc, "status_code", None) or getattr(exc.meta, "status", None)
            kind, reason = _api_reason(exc)
            if kind == "index_not_found_exception" and self.alias in reason:
                raise EngineUnavailable(
                    f"Elasticsearch at {url} has no index {self.alias!r} yet: "
                    "build it with `assistant index`") from exc
            if status in (502, 503, 504):
                raise EngineUnavailable(
                    f"Elasticsearch at {url} is unavailable ({status} {kind}): {reason}") from exc
            if status in (401, 403):
                raise EngineError(
                    f"Elasticsearch at {url} refused the {what} ({status} {kind}): {reason}; "
                    "check the credentials in ES_URL") from exc
            raise EngineError(
                f"Elasticsearch {what} failed ({status} {kind}): {reason}") from exc
        except TransportError as exc:
            raise EngineError(f"Elasticsearch {what} failed: {exc}") from exc

    def _live_indices(self) -> dict[str, dict]:
        """Physical indices behind the alias (or a concrete index of that name), with their
        ``indices.get`` description; empty when there is none."""
        from elasticsearch import NotFoundError

        with self._errors("index lookup"):
            try:
                return dict(self.client.indices.get(index=self.alias).body)
            except NotFoundError:
                return {}

    def _live_index(self, indices: dict[str, dict] | None = None) -> tuple[str, dict] | None:
        """The one index behind the alias (from ``indices`` when already looked up), or None.
        :raises EngineError: the alias points to several indices."""
        indices = self._live_indices() if indices is None else indices
        if not indices:
            return None
        if len(indices) > 1:
            raise EngineError(
                f"alias {self.alias!r} points to several indices ({', '.join(sorted(indices))}); "
                "rebuild with `assistant index --rebuild`")
        return next(iter(indices.items()))

    # -- Engine protocol

    def info(self) -> IndexInfo | None:
        live = self._live_index()
        if live is None:
            return None
        name, description = live
        meta = _meta(description)
        with self._errors("count"):
            count = int(self.client.count(index=name)["count"])
        try:
            last_run = json.loads(meta.get("last_run") or "{}")
        except (TypeError, ValueError):
            last_run = {}
        return IndexInfo(name=name, dim=int(meta.get("dim") or 0),
                         model=str(meta.get("model") or ""), count=count,
                         updated_at=str(meta.get("updated_at") or ""),
                         last_run=last_run if isinstance(last_run, dict) else {},
                         interrupted=bool(meta.get("pending")))

    def count(self) -> int:
        from elasticsearch import NotFoundError

        with self._errors("count"):
            try:
                return int(self.client.count(index=self.alias)["count"])
            except NotFoundError:
                return 0

    def chunk_hashes(self) -> dict[str, str]:
        return self._scan_field("content_hash")

    def indexed_articles(self) -> dict[str, str]:
        return self._scan_field("article_id")

    def _scan_field(self, name: str) -> dict[str, str]:
        """``_id -> field`` over every searchable chunk ({} without an index)."""
        from elasticsearch import NotFoundError
        from elasticsearch.helpers import scan

        values: dict[str, str] = {}
        with self._errors(f"scan of chunk {name}s"):
            try:
                for hit in scan(self.client, index=self.alias, query={"query": {"match_all": {}}},
                                _source=[name], size=1000, scroll="2m"):
                    values[hit["_id"]] = (hit.get("_source") or {}).get(name, "")
            except NotFoundError:
                return {}
        return values

    def record_run(self, run: dict, *, updated_at: str | None = None) -> None:
        live = self._live_index()
        if live is None:
            return
        name, description = live
        changes: dict[str, Any] = {"last_run": json.dumps(run, ensure_ascii=False)}
        if updated_at:
            changes["updated_at"] = updated_at
        self._put_meta(name, {**_meta(description), **changes})

    def _put_meta(self, name: str, meta: dict) -> None:
        """Update the ``_meta`` of index ``name``: cluster state, seen at once by every reader,
        without a refresh. Elasticsearch deep-merges it into the old one (a key cannot be
        removed), so values that must be replaced whole are strings (JSON for objects)."""
        with self._errors("metadata update"):
            self.client.indices.put_mapping(index=name, meta=meta)

    @contextmanager
    def job_lock(self) -> Iterator[None]:
        """A lock document (``<alias>-lock/_doc/index-job``) created with ``op_type=create``,
        so only one job gets it; it names its owner and an expiry that a heartbeat thread
        pushes back while the job runs. A lock whose expiry has passed, or whose owner process
        is gone from this host, is taken over with a compare-and-set (``if_seq_no``), so two
        jobs cannot both take over a dead one's lock."""
        lock = _JobLock(self)
        lock.acquire()
        try:
            yield
        finally:
            lock.release()

    def write(self, upserts: Sequence[IndexedChunk], deletes: Iterable[str], *, dim: int,
              model: str, rebuild: bool = False) -> None:
        upserts = list(upserts)
        for item in upserts:
            width = np.atleast_2d(np.asarray(item.vectors)).shape[1]
            if width != dim:
                raise EngineError(f"chunk {item.chunk.chunk_id} has {width}-dimensional vectors; "
                                  f"the index is written with dim={dim}")
        live = self._live_indices()
        if rebuild or not live:
            self._rebuild(upserts, dim=dim, model=model, old=sorted(live))
            return
        name, description = self._live_index(live)
        meta = _meta(description)
        old_dim, old_model = meta.get("dim"), meta.get("model")
        if old_dim is None or old_model is None:
            raise IndexMismatch(
                f"index {name} does not record its vector size and model: "
                "rebuild it with `assistant index --rebuild`")
        check_compatible(IndexInfo(name, old_dim, old_model, 0), model=model, dim=dim)
        upserted = {item.chunk.chunk_id for item in upserts}
        doomed = [cid for cid in dict.fromkeys(deletes) if cid not in upserted]
        if not upserts and not doomed:
            return
        actions = [{"_op_type": "delete", "_index": name, "_id": cid} for cid in doomed]
        # Until the refresh, readers see the index as it was. Should this job die in between,
        # its sent changes would appear, half, at the next refresh of anyone: the mark says
        # so (IndexInfo.interrupted), and the next job rebuilds instead of trusting them.
        self._put_meta(name, {**meta, "pending": json.dumps(job_owner())})
        self._bulk(name, actions, upserts)
        with self._errors("refresh"):
            self.client.indices.refresh(index=name)
        self._put_meta(name, {**meta, "pending": ""})
        self._windows.pop(name, None)

    def lexical_search(self, query: str, k: int, *, category: str | None = None,
                       params: LexicalParams | None = None) -> list[Hit]:
        if k <= 0 or not query or not query.strip():
            return []
        params = params or LexicalParams()
        body = lexical_query(query, k, category=category, params=params)
        with self._errors("lexical search"):
            response = self.client.search(index=self.alias, **body)
        return [_lexical_hit(hit, params.windows) for hit in response["hits"]["hits"]]

    def vector_search(self, vector: np.ndarray, k: int, *,
                      category: str | None = None) -> list[Hit]:
        if k <= 0:
            return []
        body = knn_query(vector, k, self.num_candidates, category=category)
        with self._errors("vector search"):
            response = self.client.search(index=self.alias, **body)
        hits = response["hits"]["hits"]
        # Two candidate lists (chunk vectors, window vectors) kept apart in the hits' signals;
        # ES scores a cosine as (1 + cos) / 2, the signals carry the raw cosine.
        chunk_hits = {hit["_id"]: _hit(hit) for hit in hits}
        window_hits: dict[str, Hit] = {}
        physical = {hit["_index"] for hit in hits}
        if any(self._has_windows(name) for name in physical):
            window_hits = {h.chunk_id: h for h in self._window_hits(vector, k, category)}
        merged = []
        for chunk_id in chunk_hits.keys() | window_hits.keys():
            chunk, window = chunk_hits.get(chunk_id), window_hits.get(chunk_id)
            best = max((h for h in (chunk, window) if h is not None), key=lambda h: h.score)
            merged.append(replace(
                best, vector_chunk=None if chunk is None else 2 * chunk.score - 1,
                vector_window=None if window is None else 2 * window.score - 1))
        return sorted(merged, key=lambda h: (-h.score, h.chunk_id))[:k]

    def get_chunks(self, chunk_ids: Iterable[str]) -> dict[str, Chunk]:
        ids = list(dict.fromkeys(chunk_ids))
        if not ids:
            return {}
        with self._errors("chunk fetch"):
            # realtime=False: the chunks as searches see them (last refresh), not the
            # unpublished writes of an update in progress.
            response = self.client.mget(index=self.alias, ids=ids, realtime=False,
                                        _source_excludes=["vector", "windows.vector"])
        chunks = {}
        for doc in response["docs"]:
            if doc.get("found"):
                chunks[doc["_id"]] = chunk_from_source(doc["_source"])
        return chunks

    def ping(self) -> None:
        with self._errors("ping"):
            self.client.info()

    def close(self) -> None:
        """Close the client (only if this engine built it; an injected one is its owner's)."""
        if self._client is not None and self._owns_client:
            self._client.close()
            self._client = None

    # -- helpers

    def _has_windows(self, index: str) -> bool:
        """Whether ``index`` holds window vectors (cached per physical index: a rebuild makes a
        new one, and this engine's own writes reset it)."""
        if not self._nested_knn:
            return False
        if index not in self._windows:
            query = {"nested": {"path": "windows",
                                "query": {"exists": {"field": "windows.vector"}}}}
            with self._errors("window check"):
                found = self.client.count(index=index, query=query)["count"]
            self._windows[index] = found > 0
        return self._windows[index]

    def _window_hits(self, vector: np.ndarray, k: int, category: str | None) -> list[Hit]:
        """Chunks scored by their best window; [] (and never tried again) if the server cannot
        run kNN on a nested field (Elasticsearch before 8.11)."""
        from elasticsearch import BadRequestError

        body = knn_query(vector, k, self.num_candidates, category=category,
                         field="windows.vector")
        with self._errors("window vector search"):
            try:
                response = self.client.search(index=self.alias, **body)
            except BadRequestError as exc:
                kind, reason = _api_reason(exc)
                log.warning("kNN on nested windows.vector refused (%s: %s); searching chunk "
                            "vectors only", kind, reason)
                self._nested_knn = False
                return []
        return [_hit(hit) for hit in response["hits"]["hits"]]

    def _bulk(self, index: str, head: list[dict], upserts: Sequence[IndexedChunk]) -> None:
        """Send ``head`` actions then one ``index`` action per upsert, in batches; raise
        EngineError naming the first failures (deleting an absent id is not one)."""
        from elasticsearch.helpers import streaming_bulk

        def actions():
            yield from head
            for item in upserts:
                yield {"_op_type": "index", "_index": index, "_id": item.chunk.chunk_id,
                       "_source": chunk_document(item)}

        failures: list[str] = []
        total = 0
        with self._errors("bulk write"):
            for ok, item in streaming_bulk(self.client, actions(), chunk_size=BULK_BATCH,
                                           raise_on_error=False, max_retries=2,
                                           initial_backoff=1):
                if ok:
                    continue
                op, info = next(iter(item.items()))
                if op == "delete" and info.get("status") == 404:
                    continue
                total += 1
                if len(failures) < 5:
                    failures.append(_bulk_error_text(item))
        if total:
            more = f" (and {total - len(failures)} more)" if total > len(failures) else ""
            raise EngineError(f"{total} chunk(s) could not be written to {index}: "
                              + "; ".join(failures) + more)

    def _rebuild(self, upserts: Sequence[IndexedChunk], *, dim: int, model: str,
                 old: list[str]) -> None:
        """Load a new versioned index, swap the alias to it atomically, delete the old ones.
        On failure the new index is dropped and the alias stays as it was."""
        from elasticsearch import NotFoundError

        client = self.client
        new = versioned_name(self.alias)
        with self._errors("index creation"):
            client.indices.create(index=new, **index_body(dim, model, self.k1, self.b))
        try:
            self._bulk(new, [], upserts)
            with self._errors("refresh"):
                client.indices.refresh(index=new)
            actions: list[dict] = []
            for name in old:
                if name == self.alias:  # a plain index squatting the alias name
                    actions.append({"remove_index": {"index": name}})
                else:
                    actions.append({"remove": {"index": name, "alias": self.alias}})
            actions.append({"add": {"index": new, "alias": self.alias}})
            with self._errors("alias swap"):
                client.indices.update_aliases(actions=actions)
        except BaseException:
            try:
                client.indices.delete(index=new)
            except Exception as cleanup:  # keep the first error
                log.warning("could not delete the half-built index %s: %s", new, cleanup)
            raise
        self._windows.clear()
        stale = [name for name in old if name != self.alias]
        # Leftovers of rebuilds that died before their swap (older than this one).
        pattern = re.compile(re.escape(self.alias) + r"-v\d{20}")
        try:
            existing = client.indices.get(index=f"{self.alias}-v*")
            stale += [name for name in existing
                      if pattern.fullmatch(name) and name < new and name not in stale]
        except Exception as exc:
            log.warning("could not list old %s indices: %s", self.alias, exc)
        for name in stale:
            try:
                client.indices.delete(index=name)
            except NotFoundError:
                pass
            except Exception as exc:
                log.warning("could not delete old index %s: %s", name, exc)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # someone else's process, or a pid we cannot check: assume alive
    return True


def _abandoned(holder: dict, now: float) -> bool:
    """Whether a lock's holder is gone: its expiry passed, or it was a process of this host
    that no longer runs."""
    if float(holder.get("expires") or 0) < now:
        return True
    if holder.get("host") != socket.gethostname():
        return False
    pid = int(holder.get("pid") or 0)
    if pid == os.getpid():
        return holder.get("token") not in _HELD_TOKENS
    return not _pid_alive(pid)


class _JobLock:
    """The index job lock of one ElasticsearchEngine (see ``ElasticsearchEngine.job_lock``)."""

    def __init__(self, engine: ElasticsearchEngine):
        self.engine, self.client = engine, engine.client
        self.index = f"{engine.alias}-lock"
        self.doc = {**job_owner(), "token": secrets.token_hex(8)}
        self.version: dict = {}
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None
        self.mutex = threading.Lock()

    def acquire(self) -> None:
        from elasticsearch import BadRequestError, ConflictError, NotFoundError

        with self.engine._errors("job lock"):
            try:
                self.client.indices.create(index=self.index, settings={
                    "number_of_shards": 1, "number_of_replicas": 0})
            except BadRequestError as exc:
                if _api_reason(exc)[0] != "resource_already_exists_exception":
                    raise
            for _ in range(3):  # the holder may release it between our two requests
                try:
                    self._put(op_type="create")
                    break
                except ConflictError:
                    pass
                try:
                    current = self.client.get(index=self.index, id=LOCK_ID)
                except NotFoundError:
                    continue
                holder = current["_source"]
                if not _abandoned(holder, time.time()):
                    until = datetime.fromtimestamp(float(holder.get("expires") or 0), timezone.utc)
                    raise IndexBusy(
                        f"another index job is running on Elasticsearch index "
                        f"{self.engine.alias} ({describe_owner(holder)}; its lock expires at "
                        f"{until:%Y-%m-%dT%H:%M:%SZ} unless renewed): wait for it to end")
                try:
                    self._put(if_seq_no=current["_seq_no"],
                              if_primary_term=current["_primary_term"])
                except ConflictError:
                    continue  # another job took it over first: look again
                log.warning("took over the index job lock of %s: that job is gone",
                            describe_owner(holder))
                break
            else:
                raise IndexBusy(f"the index job lock of {self.engine.alias} keeps changing "
                                "hands: another job is starting; try again")
        _HELD_TOKENS.add(self.doc["token"])
        self.thread = threading.Thread(target=self._renew, name="es-job-lock", daemon=True)
        self.thread.start()

    def _put(self, **options) -> None:
        doc = {**self.doc, "expires": time.time() + LOCK_TTL}
        response = self.client.index(index=self.index, id=LOCK_ID, document=doc, **options)
        self.version = {"if_seq_no": response["_seq_no"],
                        "if_primary_term": response["_primary_term"]}

    def _renew(self) -> None:
        while not self.stop.wait(LOCK_TTL / 4):
            with self.mutex:
                if self.stop.is_set():
                    return
                try:
                    self._put(**self.version)
                except Exception as exc:  # keep trying: the job itself must not die of this
                    log.warning("could not renew the index job lock: %s", exc)

    def release(self) -> None:
        from elasticsearch import ConflictError, NotFoundError

        self.stop.set()
        with self.mutex:
            _HELD_TOKENS.discard(self.doc["token"])
            try:
                self.client.delete(index=self.index, id=LOCK_ID, **self.version)
            except (ConflictError, NotFoundError):
                pass  # taken over after we stalled past the expiry: not ours to delete
            except Exception as exc:
                log.warning("could not release the index job lock (it expires by itself): %s",
                            exc)
