"""Search engines behind one protocol (``base.Engine``): embedded (default) and Elasticsearch."""

from __future__ import annotations

from assistant.engines.base import Engine, Hit, IndexedChunk, IndexInfo, LexicalParams

__all__ = ["Engine", "Hit", "IndexedChunk", "IndexInfo", "LexicalParams", "open_engine"]


def open_engine(settings, lexical: LexicalParams | None = None, kind: str | None = None) -> Engine:
    """The engine the settings name (``ENGINE``), built lazily: nothing connects yet."""
    kind = kind or settings.engine
    if kind == "elasticsearch":
        from assistant.engines.elasticsearch import ElasticsearchEngine

        lexical = lexical or LexicalParams()
        return ElasticsearchEngine(settings.es_url, settings.es_index, timeout=settings.es_timeout,
                                   k1=lexical.k1, b=lexical.b)
    from assistant.engines.embedded import EmbeddedEngine

    return EmbeddedEngine(settings.embedded_file)
