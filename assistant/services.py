"""The one place that builds the assistant's parts from settings, and closes them.

    with Services(settings) as services:
        services.index()                                   # `assistant index`
        result = services.assistant.answer(Ask.parse("Qu'est-ce qu'un VCO ?"))

The web app keeps one in ``app.extensions["assistant"]``; every CLI command and evaluation
command opens one. Nothing connects or loads a model until a part is first used; each part is
built once (thread-safe), and a part that cannot be built yet (no index, the engine down) is
tried again on the next use.
"""

from __future__ import annotations

import logging
import threading
import time

from assistant.config import Settings
from assistant.errors import AssistantError, EngineUnavailable

log = logging.getLogger(__name__)

LLM_HEALTH_TTL = 15.0  # seconds a /health LLM check is reused (it costs a request to the LLM)


class Services:
    """The parts: ``retriever``, ``store``, ``llm``, ``assistant``; their health; ``close()``.

    ``observer``: what the assistant reports exchanges and judgements to (the app's metrics)."""

    def __init__(self, settings: Settings, *, observer=None):
        self.settings = settings
        self.observer = observer
        self._lock = threading.RLock()
        self._built: dict[str, object] = {}
        self._llm_health: tuple[float, dict] | None = None
        self._stopping = threading.Event()

    def __enter__(self) -> "Services":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _part(self, name: str, build):
        """The part ``name``, built once by ``build()`` (None is a built part too: no LLM, no
        judge, no cap). A build that raises is tried again on the next use."""
        if name not in self._built:
            with self._lock:
                if name not in self._built:
                    self._built[name] = build()
        return self._built[name]

    # -- parts -------------------------------------------------------------------------------

    @property
    def retrieval_config(self):
        from assistant.retrieval import RetrievalConfig

        return self._part("retrieval_config",
                          lambda: RetrievalConfig.load(self.settings.retrieval_config_file))

    @property
    def embedder(self):
        """The embedding model (loaded on its first embedding, not here)."""
        from assistant.embeddings import embedder_from_settings

        return self._part("embedder", lambda: embedder_from_settings(self.settings))

    @property
    def query_embeddings(self):
        """Query vectors, memoised: shared by retrieval and extractive answers."""
        from assistant.embeddings import QueryEmbeddingMemo

        return self._part("query_embeddings", lambda: QueryEmbeddingMemo(self.embedder))

    @property
    def llm(self):
        """The LLM client, or None (extractive answers) when none is configured."""
        from assistant.answering.llm import llm_from_settings

        return self._part("llm", lambda: llm_from_settings(self.settings))

    @property
    def mode(self) -> str:
        return "llm" if self.llm is not None else "extractive"

    def describe_answers(self) -> str:
        """How questions are answered, for a start-up line."""
        llm = self.llm
        return f"LLM {llm.model} at {llm.url}" if llm else "extractive (no LLM configured)"

    def open_engine(self):
        """A new engine client (nothing connects yet); the caller closes it."""
        from assistant.engines import open_engine

        return open_engine(self.settings, self.retrieval_config.lexical)

    @property
    def retriever(self):
        """The retriever over a compatible, non-empty index.

        :raises EngineUnavailable: no index yet, or the engine is down (tried again next time).
        :raises IndexMismatch: the index was built with another embedder or passage recipe.
        """
        return self._part("retriever", self._open_retriever)

    def _open_retriever(self):
        from assistant.engines.base import check_compatible
        from assistant.retrieval import Retriever
        from indexing.job import index_model_name

        engine = self.open_engine()
        try:
            info = engine.info()
            if info is None or info.count == 0:
                raise EngineUnavailable(
                    f"the {engine.name} index is empty: build it first with `assistant index`")
            check_compatible(info, model=index_model_name(self.embedder, self.retrieval_config.passage),
                             dim=info.dim)
        except BaseException:
            engine.close()
            raise
        return Retriever(engine, self.query_embeddings, self.retrieval_config,
                         second_stage=self.llm_reranker)

    @property
    def llm_reranker(self):
        """The LLM reranker of the top fused candidates, or None (LLM_RERANK off, or no LLM)."""
        from assistant.llm_reranker import llm_reranker_from_settings

        return self._part("llm_reranker", lambda: llm_reranker_from_settings(self.settings, self.llm))

    @property
    def coverage_gate(self):
        """The coverage gate over the retriever's index, or None when COVERAGE_GATE is off.
        Without a calibration for the embedder in use it is built but lets everything through
        (said once in the log)."""
        if not self.settings.coverage_gate:
            return None
        return self._part("coverage_gate", self._open_coverage_gate)

    def _open_coverage_gate(self):
        from assistant.answering.coverage import CoverageGate, calibration_for
        from assistant.embeddings import EmbeddingCache, embed_passages_cached

        calibration = calibration_for(self.retrieval_config.extras.get("coverage"),
                                      self.embedder.name)
        if calibration is None:
            log.warning("coverage gate off: %s has no \"coverage\" calibration for %s (run "
                        "`python -m evaluation.coverage --calibrate`)",
                        self.settings.retrieval_config_file, self.embedder.name)

        def embed_background(texts):
            cache = EmbeddingCache(self.settings.embedding_cache_file)
            try:
                return embed_passages_cached(self.embedder, texts, cache, progress=False)[0]
            finally:
                cache.close()

        return CoverageGate(self.retriever, embed_background, calibration)

    @property
    def store(self):
        """The conversation log, its schema upgraded on first use when the database is up."""
        return self._part("store", self._open_store)

    def open_log(self):
        """A new conversation-log client, schema as it is (nothing connects yet); the caller
        closes it. What `assistant db` works on."""
        from assistant.conversation_log import open_store

        return open_store(self.settings.database_url, data_dir=self.settings.data_dir)

    def _open_store(self):
        from assistant.conversation_log import StoreUnavailable

        store = self.open_log()
        try:
            applied = store.upgrade()
            if applied:
                log.info("conversation log: applied migrations %s", applied)
        except StoreUnavailable as e:
            log.warning("conversation log unavailable at start (%s): exchanges are spooled "
                        "until it is back", e)
        return store

    @property
    def sentence_vectors(self):
        """Sentence vectors for extractive answers (cached in the embedding cache file)."""
        from assistant.answering.sentence_vectors import SentenceVectors

        return self._part("sentence_vectors", lambda: SentenceVectors(
            self.query_embeddings, self.embedder, self.settings.embedding_cache_file))

    @property
    def judge(self):
        """The background judge of answers, or None (no LLM, or JUDGE_ENABLED off)."""
        from assistant.answering.judge import JudgeWorker

        enabled = self.settings.judge_enabled and self.llm is not None
        return self._part("judge", lambda: JudgeWorker(
            self.llm, self.store, observer=self._observer_of_costs) if enabled else None)

    @property
    def spending_cap(self):
        """Today's LLM spend against LLM_DAILY_BUDGET_USD, or None (no LLM, or no budget)."""
        from assistant.spending import SpendingCap

        budget = self.settings.llm_daily_budget_usd
        return self._part("spending_cap", lambda: SpendingCap(self.store, budget)
                          if budget > 0 and self.llm is not None else None)

    @property
    def _observer_of_costs(self):
        """The observer of exchanges and verdicts: the metrics, and the spending cap if any."""
        from assistant.spending import Observers

        cap = self.spending_cap
        return Observers(self.observer, cap) if cap is not None else self.observer

    @property
    def assistant(self):
        """The answering flow over the parts above (the retriever is opened on first question);
        with a spending cap, extractive once the day's LLM budget is spent."""
        return self._part("assistant", self._build_assistant)

    def _build_assistant(self):
        from assistant.answering.rag import Assistant
        from assistant.spending import BudgetedAssistant

        cap = self.spending_cap
        assistant = Assistant(lambda: self.retriever, self.llm, self.store,
                              sentence_vectors=self.sentence_vectors if self.llm is None else None,
                              judge=self.judge, observer=self._observer_of_costs,
                              coverage=lambda: self.coverage_gate)
        if cap is None:
            return assistant
        # Past the budget nothing may call the LLM, the reranker of the candidates included.
        extractive = Assistant(lambda: self.retriever.without_second_stage(), None, self.store,
                               sentence_vectors=self.sentence_vectors, judge=None,
                               observer=self.observer, coverage=lambda: self.coverage_gate)
        return BudgetedAssistant(assistant, extractive, cap)

    # -- jobs --------------------------------------------------------------------------------

    def index(self, *, rebuild: bool = False, progress: bool = True):
        """One index job: ``settings.source`` into the configured engine, under the index's
        job lock, recorded on the index (:func:`indexing.update.update_index`).

        :raises IndexBusy: another index job holds the lock."""
        from indexing.update import update_index

        engine = self.open_engine()
        try:
            return update_index(self.settings, engine, self.embedder, self.retrieval_config,
                                rebuild=rebuild, progress=progress)
        finally:
            engine.close()

    def index_is_empty(self) -> bool:
        engine = self.open_engine()
        try:
            info = engine.info()
        finally:
            engine.close()
        return info is None or info.count == 0

    def warm_up(self, sentences: bool = False) -> None:
        """Open the index and load the embedding model now rather than on the first question.

        ``sentences``: in extractive mode (or with a spending cap), also embed the indexed
        passages' sentences on a background thread (once per corpus: they are kept in the
        embedding cache)."""
        from assistant.answering.sentence_vectors import warm_sentences

        retriever = self.retriever
        self.query_embeddings("warm up")
        gate = self.coverage_gate
        if gate is not None and gate.enabled:
            gate.warm_up()  # its background vectors and the index's vocabulary
        if not sentences or (self.llm is not None and self.spending_cap is None):
            return  # with a spending cap, extractive answers may be needed later today
        vectors = self.sentence_vectors

        def warm():
            started = time.monotonic()
            try:
                n = warm_sentences(vectors, retriever.indexed_chunks(), stop=self._stopping)
            except Exception as e:  # noqa: BLE001 - only an optimisation
                log.warning("sentence warm-up stopped: %s", e)
                return
            if n:
                log.info("embedded %d passage sentences for extractive answers in %.0f s",
                         n, time.monotonic() - started)

        threading.Thread(target=warm, name="sentence-warm-up", daemon=True).start()

    def close(self) -> None:
        """Stop the background work and release every client that was built."""
        self._stopping.set()
        with self._lock:
            built, self._built = self._built, {}
        for name in ("judge", "sentence_vectors", "store", "llm_reranker", "llm", "retriever"):
            part = built.get(name)
            if part is not None:
                part.close()

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
        llm = self.llm
        if llm is None:
            return {"ok": False, "mode": "extractive", "model": None,
                    "detail": "no LLM configured (OPENAI_API_KEY / OPENAI_BASE_URL): "
                              "answers are extractive"}
        now = time.monotonic()
        cached = self._llm_health
        if cached is not None and now - cached[0] < LLM_HEALTH_TTL:
            return self._with_budget(cached[1])
        try:
            llm.ping()
            health = {"ok": True, "mode": "llm", "model": llm.model, "detail": None}
        except Exception as e:  # noqa: BLE001
            health = {"ok": False, "mode": "llm", "model": llm.model, "detail": str(e)}
        self._llm_health = (now, health)
        return self._with_budget(health)

    def _with_budget(self, health: dict) -> dict:
        cap = self.spending_cap
        return {**health, **cap.status()} if cap is not None else health

    def health(self) -> tuple[dict, bool]:
        """The /health body and whether the service can answer (engine and database up)."""
        engine, database, llm = self.engine_health(), self.database_health(), self.llm_health()
        serving = engine["ok"] and database["ok"]
        degraded = not serving or (self.llm is not None and not llm["ok"])
        return {"status": "degraded" if degraded else "ok", "engine": engine,
                "database": database, "llm": llm}, serving
