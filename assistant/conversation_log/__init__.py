"""The conversation log: exchanges, feedback and relevance verdicts, on PostgreSQL or SQLite.

    store = open_store(settings.database_url, data_dir=settings.data_dir)
    store.upgrade()                      # what `assistant db upgrade` runs; idempotent
    store.save_exchange(Exchange(conversation_id=cid, turn=store.next_turn(cid), question=q, ...))

``save_exchange`` / ``save_feedback`` never lose a record when the database is down: it is
spooled to ``<data_dir>/spool.jsonl`` and replayed by the next call that reaches the database
(see :mod:`assistant.conversation_log.store` for the exact rules).
"""

from assistant.conversation_log.spool import Spool
from assistant.conversation_log.store import (
    COLUMNS,
    FEEDBACK_VALUES,
    MIGRATIONS_DIR,
    RELEVANCE_VALUES,
    ConversationStore,
    Exchange,
    StoreUnavailable,
    open_store,
)

__all__ = [
    "COLUMNS",
    "FEEDBACK_VALUES",
    "MIGRATIONS_DIR",
    "RELEVANCE_VALUES",
    "ConversationStore",
    "Exchange",
    "Spool",
    "StoreUnavailable",
    "open_store",
]
