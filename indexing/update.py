"""One index job from settings: under the index's job lock, read the source (a crawl fetches
only what changed), bring the index to it, and record the run on the index, failed runs
included, so that anyone can read how fresh the index is (``Engine.info()``)."""

from __future__ import annotations

import time
from dataclasses import replace

from assistant.config import Settings
from assistant.embeddings import Embedder, EmbeddingCache
from assistant.engines import Engine
from assistant.engines.base import utc_now
from assistant.errors import AssistantError
from assistant.retrieval import RetrievalConfig
from indexing.job import IndexReport, run_index
from indexing.sources import load_source


def crawl_options(settings: Settings) -> dict:
    """The crawler's options from settings (0 means no bound)."""
    return {"user_agent": settings.crawl_user_agent,
            "max_pages": settings.crawl_max_pages or None,
            "max_seconds": settings.crawl_max_seconds or None}


def update_index(settings: Settings, engine: Engine, embedder: Embedder,
                 config: RetrievalConfig, *, rebuild: bool = False,
                 progress: bool = True) -> IndexReport:
    """Index ``settings.source`` into ``engine`` (built by :class:`assistant.services.Services`,
    closed by its caller).

    :raises IndexBusy: another index job is running on this index (nothing was done).
    :raises AssistantError: the source or the engine failed; the index is as it was, and the
        failure is recorded as its last run.
    """
    with engine.job_lock():
        started_at, started = utc_now(), time.perf_counter()
        try:
            loaded = load_source(settings.source, size=settings.chunk_size,
                                 overlap=settings.chunk_overlap,
                                 crawl_cache=f"{settings.data_dir}/crawl-cache",
                                 progress=progress, crawl_options=crawl_options(settings))
            cache = EmbeddingCache(settings.embedding_cache_file)
            try:
                report = run_index(loaded.chunks, engine, embedder, recipe=config.passage,
                                   cache=cache, rebuild=rebuild, progress=progress,
                                   keep_articles=loaded.keep_articles)
            finally:
                cache.close()
        except BaseException as exc:  # Ctrl-C and SIGTERM too: say the run did not finish
            reason = str(exc) if isinstance(exc, AssistantError) else (
                f"interrupted ({type(exc).__name__})" if not isinstance(exc, Exception)
                else f"{type(exc).__name__}: {exc}")
            _record_failure(engine, started_at, time.perf_counter() - started, reason)
            raise
        report = replace(report, pages=loaded.pages, failures=loaded.failures,
                         seconds=time.perf_counter() - started)
        finished_at = utc_now()
        engine.record_run(report.record(started_at, finished_at), updated_at=finished_at)
        return report


def _record_failure(engine: Engine, started_at: str, seconds: float, reason: str) -> None:
    """Record a failed run; if even that fails (the engine is down), the error that stopped
    the run is the one to report."""
    try:
        engine.record_run({"ok": False, "started_at": started_at, "finished_at": utc_now(),
                           "seconds": round(seconds, 3), "error": reason})
    except AssistantError:
        pass


def healthcheck(settings: Settings | None = None) -> int:
    """Exit status for a container health check: 0 once the index has a recorded successful
    update (the app can serve it), 1 before that or when the engine does not answer."""
    from assistant.config import load_settings

    from assistant.services import Services

    engine = Services(settings or load_settings()).open_engine()
    try:
        info = engine.info()
    except AssistantError:
        return 1
    finally:
        engine.close()
    return 0 if info is not None and info.updated_at and info.count > 0 else 1
