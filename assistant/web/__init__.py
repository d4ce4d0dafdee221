"""The web app: the JSON API (``assistant.web.api``) and the pages (``assistant.web.pages``).

    app = create_app()                                   # settings from the environment / .env
    app = create_app({"SETTINGS": settings})             # explicit settings (tests)
    app = create_app({"data_dir": "/tmp/x", "TESTING": True})   # lower-case: Settings fields

Nothing heavy happens here: the retriever (index + embedder), the LLM client, the conversation
log and the :class:`~assistant.answering.rag.Assistant` are built on first use by
:class:`Services`, kept in ``app.extensions["assistant"]``.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import fields

from flask import Flask

from assistant.config import Settings, load_settings
from assistant.errors import AssistantError, ConfigError

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
LLM_HEALTH_TTL = 15.0  # seconds a /health LLM check is reused (it costs a request to the LLM)


class Services:
    """The app's parts, built lazily and once (thread-safe); what the API and pages use."""

    def __init__(self, settings: Settings, observer=None):
        from assistant.answering.llm import llm_from_settings

        self.settings = settings
        self.observer = observer
        self.llm = llm_from_settings(settings)
        self._lock = threading.RLock()
        self._retriever = None
        self._store = None
        self._assistant = None
        self._llm_health: tuple[float, dict] | None = None
        self._stopping = threading.Event()

    # -- parts -------------------------------------------------------------------------------

    @property
    def retriever(self):
        """The retriever; raises EngineUnavailable (not cached) while there is no index."""
        if self._retriever is None:
            with self._lock:
                if self._retriever is None:
                    from assistant.services import open_retriever

                    self._retriever = open_retriever(self.settings)
        return self._retriever

    @property
    def store(self):
        """The conversation log, its schema upgraded on first use when the database is up."""
        if self._store is None:
            with self._lock:
                if self._store is None:
                    from assistant.conversation_log import StoreUnavailable, open_store

                    store = open_store(self.settings.database_url, data_dir=self.settings.data_dir)
                    try:
                        applied = store.upgrade()
                        if applied:
                            log.info("conversation log: applied migrations %s", applied)
                    except StoreUnavailable as e:
                        log.warning("conversation log unavailable at start (%s): exchanges are "
                                    "spooled until it is back", e)
                    self._store = store
        return self._store

    @property
    def assistant(self):
        if self._assistant is None:
            with self._lock:
                if self._assistant is None:
                    from assistant.answering.rag import Assistant

                    self._assistant = Assistant(lambda: self.retriever, self.llm, self.store,
                                                self.settings, observer=self.observer)
        return self._assistant

    @property
    def mode(self) -> str:
        return "llm" if self.llm is not None else "extractive"

    def warm_up(self, sentences: bool = False) -> None:
        """Open the index and load the embedding model now rather than on the first question.

        ``sentences``: in extractive mode, also embed the indexed passages' sentences on a
        background thread (once per corpus: they are kept in the embedding cache)."""
        retriever = self.retriever
        retriever.embed_query("warm up")
        assistant = self.assistant
        if sentences and self.llm is None:
            def warm():
                started = time.monotonic()
                try:
                    n = assistant.warm_sentences(stop=self._stopping)
                except Exception as e:  # noqa: BLE001 - only an optimisation
                    log.warning("sentence warm-up stopped: %s", e)
                    return
                if n:
                    log.info("embedded %d passage sentences for extractive answers in %.0f s",
                             n, time.monotonic() - started)

            threading.Thread(target=warm, name="sentence-warm-up", daemon=True).start()

    def close(self) -> None:
        self._stopping.set()
        with self._lock:
            if self._assistant is not None:
                self._assistant.close()
            if self._store is not None:
                self._store.close()
            if self.llm is not None:
                self.llm.close()
            if self._retriever is not None:
                self._retriever.engine.close()

    # -- health ------------------------------------------------------------------------------

    def engine_health(self) -> dict:
        try:
            engine = self.retriever.engine
            engine.ping()
            return {"ok": True, "name": engine.name, "chunks": int(engine.count())}
        except Exception as e:  # noqa: BLE001 - health reports, it never raises
            detail = str(e) if isinstance(e, AssistantError) else f"{type(e).__name__}: {e}"
            return {"ok": False, "name": self.settings.engine, "chunks": None, "detail": detail}

    def database_health(self) -> dict:
        store = self.store
        try:
            store.ping()
            health = {"ok": True, "backend": store.backend}
        except Exception as e:  # noqa: BLE001
            health = {"ok": False, "backend": store.backend, "detail": str(e)}
        try:
            health["spooled"] = store.spooled()
        except OSError:
            pass
        return health

    def llm_health(self) -> dict:
        if self.llm is None:
            return {"ok": False, "mode": "extractive", "model": None,
                    "detail": "no LLM configured (OPENAI_API_KEY / OPENAI_BASE_URL): "
                              "answers are extractive"}
        now = time.monotonic()
        cached = self._llm_health
        if cached is not None and now - cached[0] < LLM_HEALTH_TTL:
            return cached[1]
        try:
            self.llm.ping()
            health = {"ok": True, "mode": "llm", "model": self.llm.model, "detail": None}
        except Exception as e:  # noqa: BLE001
            health = {"ok": False, "mode": "llm", "model": self.llm.model, "detail": str(e)}
        self._llm_health = (now, health)
        return health

    def health(self) -> tuple[dict, bool]:
        """The /health body and whether the service can answer (engine and database up)."""
        engine, database, llm = self.engine_health(), self.database_health(), self.llm_health()
        serving = engine["ok"] and database["ok"]
        degraded = not serving or (self.llm is not None and not llm["ok"])
        return {"status": "degraded" if degraded else "ok", "engine": engine,
                "database": database, "llm": llm}, serving


def _settings_from(test_config: dict) -> Settings:
    settings = test_config.pop("SETTINGS", None)
    names = {f.name for f in fields(Settings)}
    overrides = {k: test_config.pop(k) for k in list(test_config) if k.islower()}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ConfigError(f"create_app: unknown setting(s) {', '.join(unknown)}")
    if settings is None:
        return load_settings(**overrides)
    if not isinstance(settings, Settings):
        raise ConfigError("create_app: SETTINGS must be an assistant.config.Settings")
    return settings.replace(**overrides) if overrides else settings


def create_app(test_config: dict | None = None) -> Flask:
    """The Flask app (flaskr-style factory). ``test_config``: ``SETTINGS`` (a Settings),
    lower-case keys overriding Settings fields, upper-case keys going to ``app.config``."""
    from assistant.web import api, logs
    from assistant.web.metrics import Metrics
    from assistant.web.pages import bp as pages_bp

    test_config = dict(test_config or {})
    settings = _settings_from(test_config)

    app = Flask(__name__, static_folder=None)
    app.config.update(MAX_CONTENT_LENGTH=MAX_BODY_BYTES, SETTINGS=settings)
    app.config.update(test_config)
    app.json.sort_keys = False
    app.json.ensure_ascii = False

    logs.configure_logging(settings.log_json)
    metrics = Metrics()
    metrics.init_app(app)
    logs.init_app(app)
    app.extensions["assistant"] = Services(settings, observer=metrics)

    app.register_blueprint(api.bp)
    app.register_blueprint(pages_bp)
    api.register_error_handlers(app)
    return app
