"""The answering flow: question → (stand-alone rewrite) → retrieval → answer → conversation log.

    assistant = Assistant(retriever, llm_or_None, store, settings)
    result = assistant.answer("Qu'est-ce qu'un VCO ?")
    for event, data in assistant.answer_stream("et le VCF ?", conversation_id=result.conversation_id):
        ...  # ("sources", {...}), ("token", {"text": ...})..., ("done", {...})

With an LLM the answer is written from the numbered passages (citations outside 1..n are
stripped) and ``sources`` are exactly the passages the model was given, in their order
(number n = position n). Without one, the answer is extractive (the best sentences of the
passages, cited). Every exchange is logged — failed ones too (status ``llm_error`` /
``engine_error``) — and a database outage only spools it. Relevance judging runs after the
reply, on a background thread (:class:`~assistant.answering.judge.JudgeWorker`).
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from assistant.answering.extractive import NO_MATCH, detect_language, extractive_answer
from assistant.answering.judge import JudgeWorker
from assistant.answering.llm import Completion, LLMClient, LLMError
from assistant.answering.prices import cost as price_cost
from assistant.answering.prompts import (build_answer_messages, build_rewrite_messages,
                                         strip_invalid_citations)
from assistant.conversation_log import Exchange, StoreUnavailable
from assistant.documents import CATEGORIES
from assistant.errors import AssistantError, EngineError, InvalidQuestion, UnknownConversation
from assistant.retrieval import Passage, Retriever, validate_question
from assistant.text import STOP_WORDS, fold, split_sentences, tokens

log = logging.getLogger(__name__)

TOP_K = 5
HISTORY_LIMIT = 6  # exchanges read back for a follow-up (the prompts keep the last 3)
MAX_REWRITE_CHARS = 2000
_CONVERSATION_ID = re.compile(r"^[0-9a-f]{32}$")


class ConversationUnavailable(AssistantError):
    """A follow-up's conversation cannot be read: the log is down and it is not in memory."""


class InvalidCategory(InvalidQuestion):
    """The category is not one of the blog's."""


def normalise_conversation_id(value: object) -> str:
    """The 32-hex form of a conversation id (a dashed UUID is accepted); InvalidQuestion else."""
    if not isinstance(value, str):
        raise InvalidQuestion("conversation_id must be a string")
    text = value.strip().lower()
    if len(text) == 36 and text.count("-") == 4:
        try:
            text = uuid.UUID(text).hex
        except ValueError:
            pass
    if not _CONVERSATION_ID.match(text):
        raise InvalidQuestion("conversation_id must be 32 hexadecimal characters (a UUID)")
    return text


def normalise_category(value: object) -> str | None:
    """One of :data:`CATEGORIES` (case and spacing forgiven), or None; InvalidCategory else."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidCategory("category must be a string")
    wanted = " ".join(value.split()).upper()
    if not wanted:
        return None
    for category in CATEGORIES:
        if category == wanted:
            return category
    raise InvalidCategory(f"unknown category {value!r}; expected one of: {', '.join(CATEGORIES)}")


# -- results ---------------------------------------------------------------------------------


@dataclass
class AnswerResult:
    conversation_id: str
    exchange_id: str
    turn: int
    question: str
    rewritten_question: str | None
    answer: str
    sources: list[dict]
    mode: str
    model: str | None
    response_time: float
    tokens: dict
    cost: float | None
    category: str | None = None
    language: str | None = None
    logged: bool = True  # False: the log was down, the exchange waits in the spool

    def to_dict(self) -> dict:
        return {
            "conversation_id": self.conversation_id,
            "exchange_id": self.exchange_id,
            "turn": self.turn,
            "question": self.question,
            "rewritten_question": self.rewritten_question,
            "answer": self.answer,
            "sources": self.sources,
            "mode": self.mode,
            "model": self.model,
            "category": self.category,
            "language": self.language,
            "response_time": round(self.response_time, 4),
            "tokens": self.tokens,
            "cost": self.cost,
        }


def source_of(passage: Passage) -> dict:
    c = passage.chunk
    return {"article_id": c.article_id, "title": c.title, "url": c.url, "chunk_id": c.chunk_id,
            "score": round(float(passage.score), 6)}


# -- follow-ups without an LLM ---------------------------------------------------------------

_WORD = re.compile(r"[^\W_]+(?:-[^\W_]+)*")


def simple_rewrite(previous_question: str, question: str, max_terms: int = 6) -> str:
    """The follow-up with the previous question's content words in front ("VCO — et le
    filtre ?"): enough for the search engine to stay on topic; no attempt at grammar."""
    have = {fold(w) for w in _WORD.findall(question)}
    terms: list[str] = []
    seen: set[str] = set()
    for word in _WORD.findall(previous_question or ""):
        key = fold(word)
        parts = key.split("-")
        if all(p in STOP_WORDS or (len(p) < 2 and not p.isdigit()) for p in parts):
            continue
        if key in have or key in seen:
            continue
        seen.add(key)
        terms.append(word)
        if len(terms) >= max_terms:
            break
    return f"{' '.join(terms)} — {question}" if terms else question


def _clean_rewrite(text: str) -> str:
    """The first meaningful line of a rewrite, without quotes or a "Question:" prefix."""
    for line in (text or "").splitlines():
        line = line.strip().strip("\"'«»“”`").strip()
        line = re.sub(r"^(?:stand-alone question|question|reformulation)\s*:\s*", "", line,
                      flags=re.IGNORECASE).strip().strip("\"'«»“”`").strip()
        if line:
            return line[:MAX_REWRITE_CHARS]
    return ""


# -- streaming -------------------------------------------------------------------------------

_TRAILING = re.compile(r"(?:\s|\[[\d\s,;\-–]*\])*$")


class CitationFilter:
    """Streams an LLM answer with invalid citations removed: text is held back while it ends
    in an unfinished or trailing citation (whose fate depends on what follows)."""

    def __init__(self, n_passages: int):
        self.n = n_passages
        self.raw = ""
        self.emitted = ""

    def _emit(self, cleaned: str) -> str:
        if not cleaned.startswith(self.emitted):
            return ""  # an earlier cut proved unstable: the final answer corrects it
        delta, self.emitted = cleaned[len(self.emitted):], cleaned
        return delta

    def feed(self, delta: str) -> str:
        self.raw += delta
        cut = len(self.raw)
        opening = self.raw.rfind("[")
        if opening != -1 and "]" not in self.raw[opening:]:
            cut = opening
        cut = _TRAILING.search(self.raw[:cut]).start()
        return self._emit(strip_invalid_citations(self.raw[:cut], self.n))

    def flush(self) -> str:
        return self._emit(strip_invalid_citations(self.raw, self.n))


def _pieces(text: str, words: int = 6) -> list[str]:
    """An extractive answer cut into a few token events (about ``words`` words each)."""
    tokens = re.findall(r"\s*\S+", text)
    return ["".join(tokens[i:i + words]) for i in range(0, len(tokens), words)] or [text]


# -- sentence vectors for extractive answers -------------------------------------------------


class SentenceEmbedder:
    """``embed(texts)`` for :func:`extractive_answer`: ``texts[0]`` is the question (a query
    vector, memoised by the retriever), the others are passage sentences, embedded as passages
    and cached in memory and in the embedding cache file (sentences recur across questions:
    after the first few questions most answers embed nothing)."""

    def __init__(self, embed_query: Callable[[str], np.ndarray], embedder, cache_path=None,
                 size: int = 20000):
        self.embed_query = embed_query
        self.embedder = embedder
        self.cache_path = cache_path
        self.size = size
        self._memo: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self._cache = None
        self._cache_failed = cache_path is None

    def _file_cache(self):
        if self._cache is None and not self._cache_failed:
            from assistant.embeddings import EmbeddingCache

            with self._lock:
                if self._cache is None and not self._cache_failed:
                    try:
                        self._cache = EmbeddingCache(self.cache_path)
                    except Exception as e:  # noqa: BLE001 - memory-only is fine
                        log.warning("embedding cache %s unavailable (%s): sentence vectors kept "
                                    "in memory only", self.cache_path, e)
                        self._cache_failed = True
        return self._cache

    def passages(self, texts: Sequence[str]) -> np.ndarray:
        found: dict[str, np.ndarray] = {}
        with self._lock:
            for t in texts:
                if t in self._memo:
                    self._memo.move_to_end(t)
                    found[t] = self._memo[t]
        missing = list(dict.fromkeys(t for t in texts if t not in found))
        if missing:
            cache = self._file_cache()
            if cache is not None:
                from assistant.embeddings import embed_passages_cached

                try:
                    vectors, _ = embed_passages_cached(self.embedder, missing, cache,
                                                       progress=False)
                except Exception as e:  # noqa: BLE001 - e.g. the cache file is locked
                    log.warning("embedding cache failed (%s): embedding directly", e)
                    vectors = self.embedder.embed_passages(missing)
            else:
                vectors = self.embedder.embed_passages(missing)
            fresh = dict(zip(missing, np.asarray(vectors, dtype=np.float32)))
            found.update(fresh)
            with self._lock:
                self._memo.update(fresh)
                while len(self._memo) > self.size:
                    self._memo.popitem(last=False)
        return np.vstack([found[t] for t in texts]) if texts else np.zeros((0, 1), np.float32)

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        question = np.asarray(self.embed_query(texts[0]), dtype=np.float32).reshape(1, -1)
        if len(texts) == 1:
            return question
        return np.vstack([question, self.passages(list(texts[1:]))])

    def missing(self, texts: Sequence[str]) -> list[str]:
        """The texts whose vectors are neither in memory nor in the cache file."""
        with self._lock:
            unknown = [t for t in dict.fromkeys(texts) if t not in self._memo]
        cache = self._file_cache()
        if cache is None or not unknown:
            return unknown
        from assistant.embeddings import EmbeddingCache

        hashes = {EmbeddingCache.key(t): t for t in unknown}
        known = cache.get_many(self.embedder.name, list(hashes))
        return [t for h, t in hashes.items() if h not in known]

    def close(self) -> None:
        if self._cache is not None:
            self._cache.close()
            self._cache = None


def answer_sentences(text: str) -> list[str]:
    """The sentences of a passage that :func:`extractive_answer` scores (and embeds)."""
    return [s for s in split_sentences(text) if len(tokens(s)) >= 3]


# -- the assistant ---------------------------------------------------------------------------


@dataclass
class _Turn:
    turn: int
    question: str
    answer: str | None
    rewritten: str | None = None


@dataclass
class _Spend:
    prompt: int = 0
    completion: int = 0
    total: int = 0
    cost: float | None = 0.0
    llm_time: float = 0.0
    calls: int = 0

    def add(self, completion: Completion) -> None:
        u = completion.usage
        self.prompt += u.prompt_tokens
        self.completion += u.completion_tokens
        self.total += u.total_tokens or (u.prompt_tokens + u.completion_tokens)
        c = price_cost(completion.model, u)
        self.cost = None if c is None or self.cost is None else self.cost + c
        self.llm_time += completion.elapsed
        self.calls += 1

    def tokens(self) -> dict:
        return {"prompt": self.prompt, "completion": self.completion, "total": self.total}


class Assistant:
    """Answers questions from a retriever, with an LLM (or extractively without one), and logs
    every exchange to ``store`` (None: nothing is logged, for evaluation runs).

    ``retriever`` may be a :class:`Retriever` or a function returning one (called on each
    question until it succeeds, so an engine that comes up later is picked up)."""

    def __init__(self, retriever: Retriever | Callable[[], Retriever], llm: LLMClient | None,
                 store, settings=None, *, judge: bool | None = None, variant: str = "default",
                 observer: Any = None, top_k: int = TOP_K):
        self._retriever_source = retriever
        self._retriever: Retriever | None = retriever if isinstance(retriever, Retriever) else None
        self._retriever_lock = threading.Lock()
        self.llm = llm
        self.store = store
        self.settings = settings
        self.variant = variant
        self.observer = observer
        self.top_k = top_k
        enabled = getattr(settings, "judge_enabled", True) if judge is None else judge
        self.judge_worker = (JudgeWorker(llm, store, observer=observer)
                             if enabled and llm is not None and store is not None else None)
        self._conversations: OrderedDict[str, list[_Turn]] = OrderedDict()
        self._conversations_lock = threading.Lock()
        self._sentence_embedder: SentenceEmbedder | None = None

    # -- parts -------------------------------------------------------------------------------

    @property
    def mode(self) -> str:
        return "llm" if self.llm is not None else "extractive"

    @property
    def retriever(self) -> Retriever:
        if self._retriever is None:
            with self._retriever_lock:
                if self._retriever is None:
                    self._retriever = self._retriever_source()
        return self._retriever

    def _embed(self) -> SentenceEmbedder | None:
        if self._sentence_embedder is None:
            retriever = self.retriever
            embedder = getattr(retriever.embed_query, "embedder", None)
            if embedder is None:
                return None
            cache = getattr(self.settings, "embedding_cache_file", None)
            self._sentence_embedder = SentenceEmbedder(retriever.embed_query, embedder, cache)
        return self._sentence_embedder

    def warm_sentences(self, batch: int = 8, stop: threading.Event | None = None) -> int:
        """Embed (into the embedding cache) the sentences of every indexed chunk that extractive
        answers may score, a few at a time so that questions interleave; returns how many were
        embedded. A no-op with an LLM. Meant for a background thread at start-up: the first
        answers about each article are then as fast as the later ones."""
        if self.llm is not None:
            return 0
        embed = self._embed()
        if embed is None:
            return 0
        engine = self.retriever.engine
        chunks = engine.get_chunks(sorted(engine.chunk_hashes()))
        sentences = [s for c in chunks.values() for s in answer_sentences(c.text)]
        todo = embed.missing(sentences)
        for start in range(0, len(todo), batch):
            if stop is not None and stop.is_set():
                return start
            embed.passages(todo[start:start + batch])
        return len(todo)

    def close(self) -> None:
        if self.judge_worker is not None:
            self.judge_worker.close()
        if self._sentence_embedder is not None:
            self._sentence_embedder.close()

    # -- conversations -----------------------------------------------------------------------

    def _remember(self, conversation_id: str, turn: _Turn, keep: int = 2000) -> None:
        with self._conversations_lock:
            turns = self._conversations.setdefault(conversation_id, [])
            turns.append(turn)
            del turns[:-HISTORY_LIMIT]
            self._conversations.move_to_end(conversation_id)
            while len(self._conversations) > keep:
                self._conversations.popitem(last=False)

    def _remembered(self, conversation_id: str) -> list[_Turn] | None:
        with self._conversations_lock:
            turns = self._conversations.get(conversation_id)
            return list(turns) if turns is not None else None

    def _context(self, conversation_id: str) -> tuple[list[_Turn], int]:
        """The earlier turns of a conversation and the number of the next one."""
        remembered = self._remembered(conversation_id)
        if self.store is None:
            turns = remembered
        else:
            try:
                history = self.store.history(conversation_id, limit=HISTORY_LIMIT)
                turns = [_Turn(e.turn, e.question, e.answer, e.rewritten_question)
                         for e in history] or remembered
            except StoreUnavailable as e:
                if remembered is None:
                    raise ConversationUnavailable(
                        f"the conversation log is unavailable ({e.why}): cannot continue "
                        "this conversation right now; ask again without conversation_id") from None
                log.warning("conversation log unavailable: continuing %s from memory",
                            conversation_id)
                turns = remembered
        if not turns:
            raise UnknownConversation(f"unknown conversation {conversation_id}")
        next_turn = max([t.turn for t in turns] + [t.turn for t in remembered or []]) + 1
        return turns, next_turn

    def _rewrite(self, turns: list[_Turn], question: str, spend: _Spend) -> str:
        if self.llm is None:  # the previous stand-alone question carries the topic along
            return simple_rewrite(turns[-1].rewritten or turns[-1].question, question)
        history = [(t.question, t.answer or "") for t in turns]
        completion = self.llm.complete(build_rewrite_messages(history, question), temperature=0.0,
                                       max_tokens=200)
        spend.add(completion)
        text = _clean_rewrite(completion.text)
        try:
            return validate_question(text)
        except InvalidQuestion:
            log.warning("unusable rewrite %r: searching the follow-up as asked", completion.text)
            return question

    # -- answering ---------------------------------------------------------------------------

    def answer(self, question: str, *, conversation_id: str | None = None,
               category: str | None = None) -> AnswerResult:
        """Answer one question (a follow-up when ``conversation_id`` is given).

        :raises InvalidQuestion: empty, punctuation-only or too long question, bad category.
        :raises UnknownConversation: ``conversation_id`` is not in the log.
        :raises ConversationUnavailable: the log is down and the conversation is not in memory.
        :raises EngineError: the search engine failed (exchange logged as ``engine_error``).
        :raises LLMError: the LLM failed (exchange logged as ``llm_error``).
        """
        result = None
        for event, data in self._flow(question, conversation_id, category, stream=False):
            if event == "done":
                result = data
        return result

    def answer_stream(self, question: str, *, conversation_id: str | None = None,
                      category: str | None = None) -> Iterator[tuple[str, dict]]:
        """Events ``("sources", {conversation_id, sources})``, ``("token", {text})``…, then
        ``("done", response)``. Errors are raised: before the first event for bad input, an
        unknown conversation or a failed engine; later for a failed LLM."""
        flow = self._flow(question, conversation_id, category, stream=True)
        try:
            for event, data in flow:
                yield event, (data.to_dict() if event == "done" else data)
        finally:
            flow.close()  # a reader that went away: the exchange is logged as cancelled

    def _search(self, question: str, category: str | None) -> list[Passage]:
        return self.retriever.search(question, self.top_k, category=category)

    def _flow(self, question, conversation_id, category, *, stream: bool):
        started = time.perf_counter()
        question = validate_question(question)
        category = normalise_category(category)
        if conversation_id is not None:
            conversation_id = normalise_conversation_id(conversation_id)
            turns, turn = self._context(conversation_id)
        else:
            conversation_id, turns, turn = uuid.uuid4().hex, [], 1
        language = detect_language(question)
        exchange = Exchange(conversation_id=conversation_id, turn=turn, question=question,
                            category=category, language=language, mode=self.mode,
                            model=self.llm.model if self.llm is not None else None)
        spend = _Spend(cost=0.0)
        answer = ""
        streamed = ""
        try:
            if turns:
                exchange.rewritten_question = self._rewrite(turns, question, spend)
            search = exchange.rewritten_question or question
            t0 = time.perf_counter()
            passages = self._search(search, category)
            exchange.retrieval_time = time.perf_counter() - t0
            exchange.sources = [source_of(p) for p in passages]
            yield "sources", {"conversation_id": conversation_id, "sources": exchange.sources}

            chunks = [p.chunk for p in passages]
            if self.llm is not None and chunks:
                history = [(t.question, t.answer or "") for t in turns]
                messages = build_answer_messages(search, chunks, history, variant=self.variant)
                if stream:
                    completion = None
                    citations = CitationFilter(len(chunks))
                    for piece in self.llm.stream(messages):
                        if isinstance(piece, Completion):
                            completion = piece
                            continue
                        delta = citations.feed(piece)
                        if delta:
                            streamed += delta
                            yield "token", {"text": delta}
                    delta = citations.flush()
                    if delta:
                        streamed += delta
                        yield "token", {"text": delta}
                else:
                    completion = self.llm.complete(messages)
                spend.add(completion)
                exchange.model = completion.model
                answer = strip_invalid_citations(completion.text, len(chunks)).strip()
                if not answer:
                    answer = NO_MATCH[language]
            else:
                if self.llm is None:
                    embed = self._embed() if chunks else None
                    answer, _ = extractive_answer(search, chunks, embed=embed)
                else:  # nothing retrieved: no need to pay a model to say so
                    answer = NO_MATCH[language]
                if stream:
                    for piece in _pieces(answer):
                        streamed += piece
                        yield "token", {"text": piece}
        except LLMError as e:
            self._finish(exchange, started, spend, status="llm_error", error=str(e))
            e.exchange_id, e.conversation_id = exchange.id, conversation_id
            raise
        except EngineError as e:
            self._finish(exchange, started, spend, status="engine_error", error=str(e))
            e.exchange_id, e.conversation_id = exchange.id, conversation_id
            raise
        except GeneratorExit:  # the reader went away mid-stream
            exchange.answer = streamed or None
            self._finish(exchange, started, spend, status="cancelled",
                         error="the client disconnected before the end of the answer")
            raise
        exchange.answer = answer
        logged = self._finish(exchange, started, spend, status="ok")
        yield "done", AnswerResult(
            conversation_id=conversation_id, exchange_id=exchange.id, turn=turn,
            question=question, rewritten_question=exchange.rewritten_question, answer=answer,
            sources=exchange.sources, mode=self.mode, model=exchange.model,
            response_time=exchange.response_time, tokens=spend.tokens(), cost=exchange.cost,
            category=category, language=language, logged=logged)

    def _finish(self, exchange: Exchange, started: float, spend: _Spend, *, status: str,
                error: str | None = None) -> bool:
        """Complete the exchange, log it (spooled if need be), queue it for the judge."""
        exchange.status = status
        exchange.error = error
        exchange.prompt_tokens = spend.prompt
        exchange.completion_tokens = spend.completion
        exchange.total_tokens = spend.total
        exchange.cost = spend.cost
        exchange.llm_time = spend.llm_time if spend.calls else None
        exchange.response_time = time.perf_counter() - started
        stored = False
        if self.store is not None:
            try:
                stored = self.store.save_exchange(exchange)
            except Exception:  # noqa: BLE001 - the spool failed too: still answer the reader
                log.exception("exchange %s could not be logged nor spooled", exchange.id)
        self._remember(exchange.conversation_id, _Turn(exchange.turn, exchange.question,
                                                       exchange.answer, exchange.rewritten_question))
        if self.observer is not None:
            try:
                self.observer.exchange(exchange, stored)
            except Exception:  # noqa: BLE001 - metrics never break answers
                log.exception("exchange observer failed")
        if (status == "ok" and stored and self.judge_worker is not None and exchange.answer):
            self.judge_worker.submit(exchange.id, exchange.rewritten_question or exchange.question,
                                     exchange.answer)
        return stored
