"""The answering flow: an :class:`~assistant.answering.request.Ask` → (stand-alone rewrite) →
retrieval → answer → conversation log.

    assistant = Assistant(retriever, llm_or_None, store)
    result = assistant.answer(Ask.parse("Qu'est-ce qu'un VCO ?"))
    for event, data in assistant.answer_stream(Ask.parse("et le VCF ?", result.conversation_id)):
        ...  # ("sources", {...}), ("token", {"text": ...})..., ("done", {...})

Both go through one prepare step (the conversation's context, the rewrite of a follow-up, the
search) and then one of two emitters (the whole answer, or a stream of events). With an LLM the
answer is written from the numbered passages (citations outside 1..n are stripped) and
``sources`` are exactly the passages the model was given, in their order. Without one, the
answer is extractive (the best sentences of the passages, cited), framed in the reader's
language.

Coverage: after the search, the coverage gate (:mod:`assistant.answering.coverage`) decides on
the stand-alone question (a follow-up's rewrite) whether the blog covers it. Not covered: no
LLM call, no sources, an answer that says so in the reader's language, ``related`` close
articles when there are; with an LLM, the model may also reply the "not covered" marker, which
ends the same way. The exchange is logged with ``covered`` and the gate's score.

Every exchange that got past reading its conversation is logged, whatever happens next:
``ok``, ``llm_error``, ``engine_error``, ``cancelled`` (the reader left mid-stream) or ``error``
(anything unexpected); a database outage only spools it. Relevance judging runs after the
reply, on the judge worker given to the constructor.
"""

from __future__ import annotations

import logging
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from assistant.answering.conversations import Conversations, Turn
from assistant.answering.coverage import NOT_COVERED, CoverageGate
from assistant.answering.extractive import NO_MATCH, extractive_answer, framed
from assistant.answering.llm import Completion, LLMClient, LLMError
from assistant.answering.prompts import (
    NOT_COVERED_MARKER,
    build_answer_messages,
    is_not_covered,
    strip_invalid_citations,
)
from assistant.answering.request import Ask
from assistant.answering.result import AnswerResult, Spend, grouped_sources, source_of
from assistant.answering.rewrite import llm_rewrite, simple_rewrite
from assistant.answering.streaming import CitationFilter, pieces
from assistant.conversation_log import Exchange
from assistant.errors import AssistantError, EngineError
from assistant.language import detect_language
from assistant.retrieval import Passage, Retriever

log = logging.getLogger(__name__)

TOP_K = 5


@dataclass
class _Work:
    """An exchange being answered: what the prepare step found, what the emitters add."""

    exchange: Exchange
    turns: list[Turn]
    started: float
    spend: Spend = field(default_factory=Spend)
    passages: list[Passage] = field(default_factory=list)
    streamed: str = ""  # what a stream has sent so far (kept if the reader leaves)
    related: list[dict] = field(default_factory=list)  # {title, url} when not covered
    notices: list[dict] = field(default_factory=list)

    @property
    def covered(self) -> bool:
        return self.exchange.covered

    @property
    def searched(self) -> str:
        return self.exchange.rewritten_question or self.exchange.question

    @property
    def history(self) -> list[tuple[str, str]]:
        return [(t.question, t.answer or "") for t in self.turns]


class _MarkerGuard:
    """Holds back the start of a streamed reply until it cannot be the "not covered" marker,
    so the reader never sees the marker (the plain "not covered" answer replaces it)."""

    def __init__(self):
        self.held = ""
        self.decided = False
        self.marker = False

    def feed(self, delta: str) -> str:
        if self.decided:
            return "" if self.marker else delta
        self.held += delta
        if len(self.held.strip()) < len(NOT_COVERED_MARKER) + 2:
            return ""
        return self.flush()

    def flush(self) -> str:
        if self.decided:
            return ""
        self.decided = True
        self.marker = is_not_covered(self.held)
        out, self.held = ("" if self.marker else self.held), ""
        return out


class Assistant:
    """Answers questions from a retriever, with an LLM (or extractively without one), and logs
    every exchange to ``store`` (None: nothing is logged, for evaluation runs).

    ``retriever`` may be a :class:`Retriever` or a function returning one (called on each
    question until it succeeds, so an engine that comes up later is picked up).
    ``sentence_vectors``: the ``embed`` callable of extractive answers (None: lexical scoring
    only). ``judge``: a :class:`~assistant.answering.judge.JudgeWorker` rating answers after the
    reply (None: no judging). ``observer``: gets ``exchange(exchange, stored)`` (metrics).
    ``coverage``: the :class:`~assistant.answering.coverage.CoverageGate`, or a function
    returning it (None: every question counts as covered)."""

    def __init__(self, retriever: Retriever | Callable[[], Retriever], llm: LLMClient | None,
                 store, *, sentence_vectors: Callable | None = None, judge=None,
                 observer: Any = None, variant: str = "default", top_k: int = TOP_K,
                 coverage: CoverageGate | Callable[[], CoverageGate | None] | None = None):
        self._retriever = retriever if isinstance(retriever, Retriever) else None
        self._retriever_source = retriever
        self.llm = llm
        self.store = store
        self.sentence_vectors = sentence_vectors
        self.judge = judge
        self.observer = observer
        self.variant = variant
        self.top_k = top_k
        self.conversations = Conversations(store)
        self._coverage = coverage if isinstance(coverage, CoverageGate) else None
        self._coverage_source = coverage

    @property
    def mode(self) -> str:
        return "llm" if self.llm is not None else "extractive"

    @property
    def retriever(self) -> Retriever:
        if self._retriever is None:
            self._retriever = self._retriever_source()
        return self._retriever

    @property
    def coverage(self) -> CoverageGate | None:
        if self._coverage is None and callable(self._coverage_source):
            self._coverage = self._coverage_source()
        return self._coverage

    # -- the two ways to answer ----------------------------------------------------------------

    def answer(self, ask: Ask) -> AnswerResult:
        """Answer one question (a follow-up when ``ask.conversation_id`` is set).

        :raises UnknownConversation: ``ask.conversation_id`` is not in the log.
        :raises ConversationUnavailable: the log is down and the conversation is not in memory.
        :raises EngineError: the search engine failed (exchange logged as ``engine_error``).
        :raises LLMError: the LLM failed (exchange logged as ``llm_error``).
        """
        work = self._prepare(ask)
        with self._logging_failures(work):
            answer = self._write(work)
        return self._done(work, answer)

    def answer_stream(self, ask: Ask) -> Iterator[tuple[str, dict]]:
        """Prepare the answer now — errors are raised here, before any event — and return the
        events: ``("sources", {conversation_id, exchange_id, covered, sources, related})``,
        ``("token", {text})``…,
        then ``("done", response)``. A failure after the first event is raised by the iterator
        (the exchange is logged); closing it early logs the exchange as ``cancelled``."""
        return self._stream(self._prepare(ask))

    # -- prepare ---------------------------------------------------------------------------------

    def _prepare(self, ask: Ask) -> _Work:
        started = time.perf_counter()
        if ask.conversation_id is not None:
            conversation_id = ask.conversation_id
            turns, turn = self.conversations.context(conversation_id)
        else:
            conversation_id, turns, turn = uuid.uuid4().hex, [], 1
        exchange = Exchange(conversation_id=conversation_id, turn=turn, question=ask.question,
                            category=ask.category, language=detect_language(ask.question),
                            mode=self.mode, model=self.llm.model if self.llm is not None else None)
        work = _Work(exchange, turns, started)
        with self._logging_failures(work):
            if turns:
                exchange.rewritten_question = self._rewrite(work)
            t0 = time.perf_counter()
            retrieval = self.retriever.search(work.searched, self.top_k, category=ask.category)
            work.passages = retrieval.passages
            exchange.retrieval_time = time.perf_counter() - t0
            if retrieval.llm_rerank is not None and retrieval.llm_rerank.completion is not None:
                work.spend.add(retrieval.llm_rerank.completion)
            self._check_coverage(work, ask.category)
            exchange.sources = [source_of(p) for p in work.passages]
        return work

    def _check_coverage(self, work: _Work, category: str | None) -> None:
        """Run the gate on the stand-alone question; not covered: drop the passages."""
        gate = self.coverage
        if gate is None or not gate.enabled:
            return
        decision = gate.decide(work.searched, category=category)
        work.exchange.coverage_score = decision.score
        if not decision.covered:
            self._not_covered(work, decision.related_chunks)

    def _not_covered(self, work: _Work, related_chunks) -> None:
        work.exchange.covered = False
        work.passages = []
        work.exchange.sources = []
        chunks = self.retriever.engine.get_chunks(list(related_chunks)) if related_chunks else {}
        work.related = [{"title": chunks[c].title, "url": chunks[c].url}
                        for c in related_chunks if c in chunks]

    def _rewrite(self, work: _Work) -> str:
        if self.llm is None:  # the previous stand-alone question carries the topic along
            return simple_rewrite(work.turns[-1].searched, work.exchange.question)
        text, completion = llm_rewrite(self.llm, work.history, work.exchange.question)
        work.spend.add(completion)
        return text

    # -- emit --------------------------------------------------------------------------------

    def _write(self, work: _Work) -> str:
        """The whole answer."""
        if self.llm is None or not work.passages:
            return self._without_llm(work)
        return self._from_completion(work, self.llm.complete(self._messages(work)))

    def _sources_event(self, work: _Work) -> dict:
        return {"conversation_id": work.exchange.conversation_id,
                "exchange_id": work.exchange.id, "covered": work.covered,
                "sources": grouped_sources(work.passages), "related": work.related}

    def _stream(self, work: _Work) -> Iterator[tuple[str, dict]]:
        with self._logging_failures(work):
            yield "sources", self._sources_event(work)
            if self.llm is None or not work.passages:
                answer = self._without_llm(work)
                for piece in pieces(answer):
                    work.streamed += piece
                    yield "token", {"text": piece}
            else:
                citations = CitationFilter(len(work.passages))
                completion = None
                guard = _MarkerGuard()
                for piece in self.llm.stream(self._messages(work)):
                    if isinstance(piece, Completion):
                        completion = piece
                        continue
                    delta = guard.feed(citations.feed(piece))
                    if delta:
                        work.streamed += delta
                        yield "token", {"text": delta}
                delta = guard.feed(citations.flush()) + guard.flush()
                if delta:
                    work.streamed += delta
                    yield "token", {"text": delta}
                answer = self._from_completion(work, completion)
                if not work.covered:  # the model said "not covered": say it in plain words
                    work.streamed = answer
                    yield "token", {"text": answer}
        yield "done", self._done(work, answer).to_dict()

    def _without_llm(self, work: _Work) -> str:
        language = work.exchange.language
        if not work.covered:
            return NOT_COVERED[language]
        if self.llm is not None:  # nothing retrieved: no need to pay a model to say so
            return NO_MATCH[language]
        chunks = [p.chunk for p in work.passages]
        answer, _ = extractive_answer(work.searched, chunks,
                                      embed=self.sentence_vectors if chunks else None)
        answer, work.notices = framed(answer, language)
        return answer

    def _messages(self, work: _Work) -> list[dict]:
        return build_answer_messages(work.searched, [p.chunk for p in work.passages],
                                     work.history, variant=self.variant)

    def _from_completion(self, work: _Work, completion: Completion) -> str:
        work.spend.add(completion)
        work.exchange.model = completion.model
        if is_not_covered(completion.text):
            best = {}  # each retrieved article's best chunk: the gate found them close
            for p in work.passages:
                best.setdefault(p.chunk.article_id, p.chunk.chunk_id)
            self._not_covered(work, list(best.values())[:3])
            return NOT_COVERED[work.exchange.language]
        answer = strip_invalid_citations(completion.text, len(work.passages)).strip()
        return answer or NO_MATCH[work.exchange.language]

    # -- log -----------------------------------------------------------------------------------

    @contextmanager
    def _logging_failures(self, work: _Work):
        """Log the exchange with the status its failure deserves, then let the failure go on."""
        try:
            yield
        except GeneratorExit:  # the reader went away mid-stream
            work.exchange.answer = work.streamed or None
            self._finish(work, "cancelled",
                         "the client disconnected before the end of the answer")
            raise
        except Exception as e:
            if isinstance(e, LLMError):
                status = "llm_error"
            elif isinstance(e, EngineError):
                status = "engine_error"
            else:
                status = "error"
                if not isinstance(e, AssistantError):
                    log.exception("unexpected failure answering exchange %s", work.exchange.id)
            error = str(e) if isinstance(e, AssistantError) else f"{type(e).__name__}: {e}"
            self._finish(work, status, error)
            if isinstance(e, AssistantError):  # the API's error reply names the exchange
                e.exchange_id, e.conversation_id = work.exchange.id, work.exchange.conversation_id
            raise

    def _done(self, work: _Work, answer: str) -> AnswerResult:
        exchange = work.exchange
        exchange.answer = answer
        logged = self._finish(work, "ok")
        return AnswerResult(
            conversation_id=exchange.conversation_id, exchange_id=exchange.id,
            turn=exchange.turn, question=exchange.question,
            rewritten_question=exchange.rewritten_question, answer=answer,
            sources=grouped_sources(work.passages), mode=self.mode, model=exchange.model,
            response_time=exchange.response_time, tokens=work.spend.tokens(),
            cost=exchange.cost, category=exchange.category, language=exchange.language,
            logged=logged, notices=work.notices, covered=exchange.covered, related=work.related)

    def _finish(self, work: _Work, status: str, error: str | None = None) -> bool:
        """Complete the exchange, log it (spooled if need be), queue it for the judge."""
        exchange, spend = work.exchange, work.spend
        exchange.status = status
        exchange.error = error
        exchange.prompt_tokens = spend.prompt
        exchange.completion_tokens = spend.completion
        exchange.total_tokens = spend.total
        exchange.cost = spend.cost
        exchange.llm_time = spend.llm_time if spend.calls else None
        exchange.response_time = time.perf_counter() - work.started
        stored = False
        if self.store is not None:
            try:
                stored = self.store.save_exchange(exchange)
            except Exception:  # noqa: BLE001 - the spool failed too: still answer the reader
                log.exception("exchange %s could not be logged nor spooled", exchange.id)
        self.conversations.remember(exchange.conversation_id, Turn(
            exchange.turn, exchange.question, exchange.answer, exchange.rewritten_question))
        if self.observer is not None:
            try:
                self.observer.exchange(exchange, stored)
            except Exception:  # noqa: BLE001 - metrics never break answers
                log.exception("exchange observer failed")
        if (status == "ok" and stored and self.judge is not None and exchange.answer
                and exchange.covered):  # a declined question costs no LLM call, judge included
            self.judge.submit(exchange.id, work.searched, exchange.answer)
        return stored
