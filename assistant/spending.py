"""The daily LLM spending cap (``LLM_DAILY_BUDGET_USD``).

:class:`SpendingCap` knows what the LLM has cost today (UTC): the answers' and the judge's
costs in the conversation log, read at most every :data:`READ_EVERY` seconds, plus the cost of
each exchange and verdict reported since that read (it is the assistant's and the judge's
observer). Once the day's spend reaches the budget, :class:`BudgetedAssistant` answers
extractively — no rewrite, no answer, no judge call — with the ``llm_budget_reached`` notice
in the reply, until the next UTC day.

The cap routes whole exchanges between two :class:`~assistant.answering.rag.Assistant`\\ s that
share the retriever, the log and the conversations' memory, so the answering flow itself knows
nothing about budgets. Costs the price table does not know (``None``) count as 0.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timezone
from typing import Callable

from assistant.conversation_log import StoreUnavailable
from assistant.conversation_log.backends import utcnow

log = logging.getLogger(__name__)

READ_EVERY = 5.0  # seconds a read of today's spend from the log is reused
NOTICE_CODE = "llm_budget_reached"
NOTICE_MESSAGES = {
    "fr": "Le budget quotidien du modèle de langue est atteint : cette réponse cite directement "
          "les passages des articles. Les réponses rédigées reprendront demain.",
    "en": "Today's budget for the language model is used up: this answer quotes the articles' "
          "passages directly. Written answers will be back tomorrow.",
}


def budget_notice(language: str | None) -> dict:
    return {"code": NOTICE_CODE, "message": NOTICE_MESSAGES.get(language or "fr",
                                                                NOTICE_MESSAGES["fr"])}


def cost_since(store, start: datetime) -> float:
    """USD the LLM cost (answers and judge) for exchanges created at ``start`` or later.
    Raises StoreUnavailable."""
    def read(cur) -> float:
        row = cur.execute("SELECT COALESCE(SUM(cost), 0), COALESCE(SUM(judge_cost), 0) "
                          "FROM conversations WHERE created_at >= %s",
                          (store.db_time(start),)).fetchone()
        return float(row[0] or 0) + float(row[1] or 0)

    return store.read(read)


class SpendingCap:
    """Today's LLM spend against ``budget_usd`` (thread-safe)."""

    def __init__(self, store, budget_usd: float, *, read_every: float = READ_EVERY,
                 clock: Callable[[], datetime] = utcnow):
        if budget_usd <= 0:
            raise ValueError("a spending cap needs a budget above 0")
        self.store = store
        self.budget_usd = float(budget_usd)
        self.read_every = read_every
        self.clock = clock
        self._lock = threading.Lock()
        self._day = None
        self._logged = 0.0  # today's spend in the log at the last read
        self._read_at: float | None = None  # time.monotonic() of that read
        self._since_read = 0.0  # reported since that read

    def spent_today(self) -> float:
        now = self.clock()
        with self._lock:
            if now.date() != self._day:  # a new UTC day: start again from the log
                self._day, self._logged, self._since_read = now.date(), 0.0, 0.0
                self._read_at = None
            stale = self._read_at is None or time.monotonic() - self._read_at >= self.read_every
            if stale:  # this caller reads; the others go on with the figure they have
                self._read_at = time.monotonic()
                day, added_before = self._day, self._since_read
            spent = self._logged + self._since_read
        if not stale:
            return spent
        start = datetime(now.year, now.month, now.day, tzinfo=timezone.utc)
        try:
            logged = cost_since(self.store, start)  # outside the lock: the log may be slow
        except StoreUnavailable as e:  # keep counting in memory meanwhile
            log.warning("spending cap: conversation log unavailable (%s): counting today's "
                        "spend in memory", e)
            return spent
        with self._lock:
            if self._day == day:
                # What was reported before the read is in the log now; what came during it
                # may not be: keep that part.
                self._logged = logged
                self._since_read = max(0.0, self._since_read - added_before)
            return self._logged + self._since_read

    def allows_llm(self) -> bool:
        return self.spent_today() < self.budget_usd

    def status(self) -> dict:
        spent = self.spent_today()
        return {"budget_usd": self.budget_usd, "spent_today_usd": round(spent, 6),
                "capped": spent >= self.budget_usd}

    def _add(self, cost: float | None) -> None:
        if cost:
            with self._lock:
                self._since_read += float(cost)

    # -- observer of the assistant and the judge -------------------------------------------------

    def exchange(self, exchange, stored: bool) -> None:
        self._add(exchange.cost)

    def judged(self, relevance: str, usage, cost: float | None) -> None:
        self._add(cost)


class Observers:
    """Several observers as one: each is told, a failing one does not stop the others."""

    def __init__(self, *observers):
        self.observers = [o for o in observers if o is not None]

    def _tell(self, method: str, *args) -> None:
        for observer in self.observers:
            try:
                getattr(observer, method)(*args)
            except Exception:  # noqa: BLE001 - observers never break answers
                log.exception("%s observer failed", method)

    def exchange(self, exchange, stored: bool) -> None:
        self._tell("exchange", exchange, stored)

    def judged(self, relevance: str, usage, cost) -> None:
        self._tell("judged", relevance, usage, cost)


class BudgetedAssistant:
    """An LLM assistant while the cap allows it, an extractive one (with the notice) after.
    Anything else (``mode``, ``llm``, ``store``…) is the LLM assistant's."""

    def __init__(self, with_llm, extractive, cap: SpendingCap):
        self.with_llm = with_llm
        self.extractive = extractive
        self.cap = cap
        extractive.conversations = with_llm.conversations  # one memory of follow-ups

    def __getattr__(self, name):
        return getattr(self.with_llm, name)

    def answer(self, ask):
        if self.cap.allows_llm():
            return self.with_llm.answer(ask)
        result = self.extractive.answer(ask)
        result.notices.append(budget_notice(result.language))
        return result

    def answer_stream(self, ask):
        if self.cap.allows_llm():
            return self.with_llm.answer_stream(ask)
        return self._noticed(self.extractive.answer_stream(ask))  # errors raised here, as usual

    @staticmethod
    def _noticed(events):
        try:
            for event, data in events:
                if event == "done":
                    data = {**data, "notices": [*data.get("notices", []),
                                                budget_notice(data.get("language"))]}
                yield event, data
        finally:
            events.close()

