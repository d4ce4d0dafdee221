"""The earlier turns of a conversation, for follow-up questions.

The conversation log is the reference; a small in-memory copy of recent conversations lets a
follow-up go on while the log is down (its exchanges wait in the spool meanwhile).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass

from assistant.conversation_log import StoreUnavailable
from assistant.errors import AssistantError, UnknownConversation

log = logging.getLogger(__name__)

HISTORY_LIMIT = 6  # exchanges read back for a follow-up (the prompts keep the last 3)


class ConversationUnavailable(AssistantError):
    """A follow-up's conversation cannot be read: the log is down and it is not in memory."""


@dataclass(frozen=True)
class Turn:
    turn: int
    question: str
    answer: str | None
    rewritten: str | None = None

    @property
    def searched(self) -> str:
        """What was searched for this turn: the stand-alone question."""
        return self.rewritten or self.question


class Conversations:
    """Reads conversations back from the log (``store``, None for none), with a memory of the
    last ``keep`` conversations as a fallback."""

    def __init__(self, store, keep: int = 2000):
        self.store = store
        self.keep = keep
        self._memory: OrderedDict[str, list[Turn]] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, conversation_id: str, turn: Turn) -> None:
        with self._lock:
            turns = self._memory.setdefault(conversation_id, [])
            turns.append(turn)
            del turns[:-HISTORY_LIMIT]
            self._memory.move_to_end(conversation_id)
            while len(self._memory) > self.keep:
                self._memory.popitem(last=False)

    def _remembered(self, conversation_id: str) -> list[Turn] | None:
        with self._lock:
            turns = self._memory.get(conversation_id)
            return list(turns) if turns is not None else None

    def context(self, conversation_id: str) -> tuple[list[Turn], int]:
        """The earlier turns of a conversation (oldest first) and the number of the next one.

        :raises UnknownConversation: neither the log nor the memory holds it.
        :raises ConversationUnavailable: the log is down and the memory does not hold it.
        """
        remembered = self._remembered(conversation_id)
        turns = remembered
        if self.store is not None:
            try:
                history = self.store.history(conversation_id, limit=HISTORY_LIMIT)
                turns = [Turn(e.turn, e.question, e.answer, e.rewritten_question)
                         for e in history] or remembered
            except StoreUnavailable as e:
                if remembered is None:
                    raise ConversationUnavailable(
                        f"the conversation log is unavailable ({e.why}): cannot continue "
                        "this conversation right now; ask again without conversation_id") from None
                log.warning("conversation log unavailable: continuing %s from memory",
                            conversation_id)
        if not turns:
            raise UnknownConversation(f"unknown conversation {conversation_id}")
        next_turn = max(t.turn for t in turns + (remembered or [])) + 1
        return turns, next_turn
