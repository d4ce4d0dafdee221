"""The conversation log: exchanges, feedback and relevance verdicts, on PostgreSQL or SQLite.

    store = open_store(settings.database_url, data_dir=settings.data_dir)
    store.upgrade()                      # what `assistant db upgrade` runs; idempotent
    store.save_exchange(Exchange(conversation_id=cid, turn=turn, question=q, ...))
    stats(store, since)                  # what `assistant stats` prints

``save_exchange`` / ``save_feedback`` never lose a record when the database is down: it is
spooled to ``<data_dir>/spool.jsonl`` and replayed by the next call that reaches the database
(see :mod:`assistant.conversation_log.store` for the exact rules).

Modules: ``backends`` (the two databases), ``store`` (writes, reads, spool, migrations),
``reports`` (``stats`` and the dashboard's panels), ``spool`` (the file the store falls back on).
"""

from assistant.conversation_log.backends import StoreUnavailable
from assistant.conversation_log.reports import (
    dashboard_data,
    dashboard_for_hours,
    format_stats,
    parse_since,
    stats,
)
from assistant.conversation_log.spool import Spool
from assistant.conversation_log.store import (
    COLUMNS,
    FEEDBACK_VALUES,
    MAX_COMMENT_CHARS,
    MIGRATIONS_DIR,
    RELEVANCE_VALUES,
    ConversationStore,
    Exchange,
    open_store,
    validate_feedback,
)

__all__ = [
    "COLUMNS",
    "FEEDBACK_VALUES",
    "MAX_COMMENT_CHARS",
    "MIGRATIONS_DIR",
    "RELEVANCE_VALUES",
    "ConversationStore",
    "Exchange",
    "Spool",
    "StoreUnavailable",
    "dashboard_data",
    "dashboard_for_hours",
    "format_stats",
    "open_store",
    "parse_since",
    "stats",
    "validate_feedback",
]
