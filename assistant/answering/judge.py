"""LLM-as-judge: how relevant an answer is to its question (RELEVANT / PARTLY_RELEVANT /
NON_RELEVANT), with the tokens and cost of asking.

Judging never runs on the request path: :class:`JudgeWorker` takes exchanges from a bounded
queue on one background thread after the reply has gone, and ``assistant judge`` does the same
in batch over the exchanges that have no verdict yet (what the worker dropped or could not
store is picked up there).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field

from assistant.answering.llm import LLMClient, LLMError, Usage
from assistant.answering.prices import cost as price_cost
from assistant.answering.prompts import build_judge_messages, parse_judge

log = logging.getLogger(__name__)


def _ask(llm: LLMClient, question: str, answer: str) -> tuple[str, str, Usage, float | None]:
    completion = llm.complete(build_judge_messages(question, answer), temperature=0.0)
    relevance, explanation = parse_judge(completion.text)
    # The model the server names (maybe a dated snapshot) prices like its base model.
    return relevance, explanation, completion.usage, price_cost(completion.model, completion.usage)


def judge(llm: LLMClient, question: str, answer: str) -> tuple[str, str, Usage]:
    """``(relevance, explanation, usage)`` for ``answer`` to ``question``.

    Raises :class:`LLMError` when the LLM fails and ``ValueError`` when its reply holds no
    known relevance label.
    """
    relevance, explanation, usage, _ = _ask(llm, question, answer)
    return relevance, explanation, usage


def judge_exchange(llm: LLMClient, store, exchange_id: str, question: str, answer: str,
                   observer=None) -> str:
    """Judge one exchange and store the verdict with its tokens and cost; returns the label."""
    relevance, explanation, usage, cost = _ask(llm, question, answer)
    store.set_relevance(exchange_id, relevance, explanation, prompt_tokens=usage.prompt_tokens,
                        completion_tokens=usage.completion_tokens, cost=cost)
    if observer is not None:
        try:
            observer.judged(relevance, usage, cost)
        except Exception:  # noqa: BLE001 - metrics must never break judging
            log.exception("judge observer failed")
    return relevance


@dataclass
class BatchReport:
    judged: int = 0
    failed: int = 0
    verdicts: dict = field(default_factory=dict)

    def summary(self) -> str:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(self.verdicts.items())) or "none"
        return f"judged {self.judged} exchange(s) ({counts}); {self.failed} failed"


def judge_pending(llm: LLMClient, store, limit: int = 100, observer=None) -> BatchReport:
    """Judge up to ``limit`` answered exchanges that have no verdict yet, oldest first.

    An exchange whose judging fails (LLM error, unreadable verdict) is counted and skipped;
    an unavailable LLM stops the batch (the rest would fail the same way)."""
    from assistant.answering.llm import LLMUnavailable

    report = BatchReport()
    for exchange in store.exchanges_without_relevance(limit):
        try:
            label = judge_exchange(llm, store, exchange.id,
                                   exchange.rewritten_question or exchange.question,
                                   exchange.answer or "", observer)
        except LLMUnavailable:
            report.failed += 1
            raise
        except (LLMError, ValueError, KeyError) as e:
            log.warning("judge: exchange %s not judged: %s", exchange.id, e)
            report.failed += 1
            continue
        report.judged += 1
        report.verdicts[label] = report.verdicts.get(label, 0) + 1
    return report


_STOP = object()


class JudgeWorker:
    """One daemon thread judging exchanges queued by the answering flow.

    ``submit`` never blocks: when the queue is full the exchange is left for the batch judge.
    The thread starts on the first submit."""

    def __init__(self, llm: LLMClient, store, *, maxsize: int = 1000, observer=None):
        self.llm = llm
        self.store = store
        self.observer = observer
        self._queue: queue.Queue = queue.Queue(maxsize=maxsize)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._pending = 0
        self._idle = threading.Condition(self._lock)
        self.judged = 0
        self.failed = 0
        self.dropped = 0

    def submit(self, exchange_id: str, question: str, answer: str) -> bool:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="judge-worker", daemon=True)
                self._thread.start()
            try:
                self._queue.put_nowait((exchange_id, question, answer))
            except queue.Full:
                self.dropped += 1
                log.warning("judge queue full: exchange %s left for `assistant judge`", exchange_id)
                return False
            self._pending += 1
        return True

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            exchange_id, question, answer = item
            try:
                judge_exchange(self.llm, self.store, exchange_id, question, answer, self.observer)
                self.judged += 1
            except Exception as e:  # noqa: BLE001 - the worker must survive anything
                self.failed += 1
                log.warning("judge: exchange %s not judged (left for `assistant judge`): %s",
                            exchange_id, e)
            finally:
                with self._lock:
                    self._pending -= 1
                    self._idle.notify_all()

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Wait until every submitted exchange has been handled; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def close(self, timeout: float = 5.0) -> None:
        with self._lock:
            thread = self._thread
        if thread is not None and thread.is_alive():
            try:
                self._queue.put(_STOP, timeout=timeout)
            except queue.Full:
                return
            thread.join(timeout)
