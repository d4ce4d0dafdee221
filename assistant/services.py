"""Builds the assistant's parts from settings: the one place where clients are created.

The CLI, the web app and the evaluation commands call these instead of wiring engines,
embedders and configuration themselves.
"""

from __future__ import annotations

from assistant.config import Settings
from assistant.embeddings import QueryEmbeddingMemo, embedder_from_settings
from assistant.engines import open_engine
from assistant.errors import EngineUnavailable, IndexMismatch
from assistant.retrieval import RetrievalConfig, Retriever


def load_retrieval_config(settings: Settings) -> RetrievalConfig:
    return RetrievalConfig.load(settings.retrieval_config_file)


def build_index(settings: Settings, *, rebuild: bool = False, progress: bool = True):
    """Index ``settings.source`` into the configured engine (one locked, recorded index job:
    ``indexing.update``); returns an ``IndexReport``."""
    from indexing.update import update_index

    return update_index(settings, rebuild=rebuild, progress=progress)


def open_retriever(settings: Settings, *, require_index: bool = True) -> Retriever:
    """A retriever over the configured engine; ``EngineUnavailable`` if it has no index."""
    config = load_retrieval_config(settings)
    engine = open_engine(settings, config.lexical)
    embedder = embedder_from_settings(settings)
    if require_index:
        info = engine.info()
        if info is None or info.count == 0:
            raise EngineUnavailable(
                f"the {engine.name} index is empty: build it first with `assistant index`")
        if info.model.split("#")[0] != embedder.name:
            raise IndexMismatch(
                f"the index {info.name} was built with {info.model}, but EMBEDDER gives "
                f"{embedder.name}: rebuild it with `assistant index --rebuild`")
    return Retriever(engine, QueryEmbeddingMemo(embedder), config)
