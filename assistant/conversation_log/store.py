"""The conversation log: every exchange (question + answer), feedback and relevance judgement.

Two backends, one schema (``migrations/<backend>/NNNN_*.sql`` are the source of truth):
PostgreSQL for a ``postgresql://`` URL, else an embedded SQLite file
``<data_dir>/conversations.sqlite`` (see :mod:`assistant.conversation_log.backends`). Grafana
reads the tables directly; :mod:`assistant.conversation_log.reports` reads them through
:meth:`ConversationStore.read`.

Availability rules:

* ``save_exchange`` never raises because the database is unreachable: the exchange goes to the
  spool (``<data_dir>/spool.jsonl``) and the call returns False.
* ``save_feedback`` checks its value and comment first (:func:`validate_feedback`), then stores
  the feedback on the exchange it names, or on the latest exchange of the conversation it names,
  and returns ``"stored"``; it raises ``UnknownExchange`` / ``UnknownConversation`` when the
  database answers and the target is not there. When the database is unreachable the feedback
  is spooled and the call returns ``"spooled"``: accepted, although its target could not be
  checked; a replay sends feedback whose target is still unknown to ``spool.jsonl.rejected``.
* Every call that reaches the database first replays the spool (oldest first, idempotently:
  exchanges by id, feedback by its ``spool_id``), so spooled records land as soon as the
  database is back; ``replay_spool()`` does it on demand.
* Reads, ``set_relevance``, ``upgrade`` and ``ping`` raise :class:`StoreUnavailable`.
* A missing schema is created on first use (``upgrade()`` then retry); nothing is ever dropped.
"""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Literal, TypeVar

from assistant.conversation_log.backends import (
    Backend,
    Cursor,
    SchemaMissing,
    StoreUnavailable,
    iso,
    open_backend,
    to_utc,
    utcnow,
)
from assistant.conversation_log.spool import Rejected, Spool
from assistant.errors import ConfigError, InvalidFeedback, UnknownConversation, UnknownExchange

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
RELEVANCE_VALUES = ("RELEVANT", "PARTLY_RELEVANT", "NON_RELEVANT")
FEEDBACK_VALUES = (1, -1)
MAX_COMMENT_CHARS = 2000
_MIGRATION_FILE = re.compile(r"^(\d{4})_[A-Za-z0-9_\-]+\.sql$")

T = TypeVar("T")


def _new_id() -> str:
    return uuid.uuid4().hex


def validate_feedback(value: Any, comment: Any = None) -> str | None:
    """Check a reader's feedback before anything is stored or spooled: ``value`` must be the
    integer 1 or -1 (not a bool, not 1.0), ``comment`` None or a string of at most
    ``MAX_COMMENT_CHARS`` characters. Returns the comment stripped, None when it is empty.
    Raises :class:`~assistant.errors.InvalidFeedback`."""
    if isinstance(value, bool) or not isinstance(value, int) or value not in FEEDBACK_VALUES:
        raise InvalidFeedback(f"'feedback' must be the integer 1 or -1, not {value!r}")
    if comment is None:
        return None
    if not isinstance(comment, str):
        raise InvalidFeedback(f"'comment' must be a string, not {type(comment).__name__}")
    if len(comment) > MAX_COMMENT_CHARS:
        raise InvalidFeedback(f"'comment' is too long ({len(comment)} characters, "
                              f"at most {MAX_COMMENT_CHARS})")
    return comment.strip() or None


@dataclass(kw_only=True)
class Exchange:
    """One question and its answer: one row of ``conversations`` (fields in column order)."""

    id: str = field(default_factory=_new_id)
    conversation_id: str = field(default_factory=_new_id)
    turn: int = 1
    question: str
    rewritten_question: str | None = None
    answer: str | None = None
    sources: list[dict] = field(default_factory=list)  # {article_id,title,url,chunk_id,score}
    mode: str | None = None  # 'llm' | 'extractive'
    model: str | None = None
    category: str | None = None
    language: str | None = None
    status: str = "ok"  # 'ok' | 'llm_error' | 'engine_error' ...
    error: str | None = None
    response_time: float | None = None  # seconds
    retrieval_time: float | None = None
    llm_time: float | None = None
    prompt_tokens: int | None = 0
    completion_tokens: int | None = 0
    total_tokens: int | None = 0
    judge_prompt_tokens: int | None = 0
    judge_completion_tokens: int | None = 0
    judge_total_tokens: int | None = 0
    cost: float | None = None  # USD; None when unknown
    judge_cost: float | None = None
    relevance: str | None = None  # RELEVANT | PARTLY_RELEVANT | NON_RELEVANT
    relevance_explanation: str | None = None
    created_at: datetime = field(default_factory=utcnow)
    covered: bool = True  # False: the coverage gate (or the LLM) said the blog does not cover it
    coverage_score: float | None = None  # the gate's score; None when the gate was off

    def __post_init__(self) -> None:
        if not self.id or not isinstance(self.id, str):
            raise ValueError("exchange id must be a non-empty string")
        if not self.conversation_id or not isinstance(self.conversation_id, str):
            raise ValueError("conversation_id must be a non-empty string")
        if not isinstance(self.question, str):
            raise ValueError("question must be a string")
        if isinstance(self.turn, bool) or not isinstance(self.turn, int) or self.turn < 1:
            raise ValueError(f"turn must be an integer >= 1, got {self.turn!r}")
        if self.relevance is not None and self.relevance not in RELEVANCE_VALUES:
            raise ValueError(f"relevance must be one of {RELEVANCE_VALUES}, got {self.relevance!r}")
        if self.sources is None:
            self.sources = []
        if isinstance(self.cost, Decimal):
            self.cost = float(self.cost)
        if isinstance(self.judge_cost, Decimal):
            self.judge_cost = float(self.judge_cost)
        self.covered = True if self.covered is None else bool(self.covered)  # SQLite: 0/1
        self.created_at = to_utc(self.created_at)

    def to_record(self) -> dict:
        """A JSON-ready dict (``created_at`` as ISO-8601 text)."""
        record = asdict(self)
        record["created_at"] = iso(self.created_at)
        return record

    @classmethod
    def from_record(cls, record: dict) -> "Exchange":
        """The inverse of :meth:`to_record`; unknown keys (a newer writer) are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in record.items() if k in known})


@dataclass(frozen=True)
class PurgeReport:
    """What :meth:`ConversationStore.purge_before` deleted."""

    cutoff: datetime
    exchanges: int
    feedback: int
    judgements: int  # verdicts among the deleted exchanges

    def summary(self) -> str:
        return (f"purged what is older than {iso(self.cutoff)}: {self.exchanges} exchange(s) "
                f"({self.judgements} with a verdict), {self.feedback} feedback row(s)")


COLUMNS = tuple(f.name for f in fields(Exchange))
_SELECT = f"SELECT {', '.join(COLUMNS)} FROM conversations"


# -- the store -------------------------------------------------------------------------------


class ConversationStore:
    """The conversation log on one backend; thread-safe (one connection per call or thread)."""

    def __init__(self, backend: Backend, spool: Spool):
        self._db = backend
        self.backend: str = backend.name
        self.spool = spool

    def __repr__(self) -> str:
        return f"ConversationStore(backend={self.backend!r}, spool={str(self.spool.path)!r})"

    def __enter__(self) -> "ConversationStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- plumbing ----------------------------------------------------------------------------

    def _run(self, fn: Callable[[Cursor], T], *, write: bool = True,
             create_schema: bool = True) -> T:
        """``fn(cursor)`` in one transaction; a stale pooled connection is retried once on a
        fresh one, a missing schema is upgraded once. Raises StoreUnavailable."""
        fresh = upgraded = False
        while True:
            try:
                with self._db.transaction(write=write, fresh=fresh) as cur:
                    return fn(cur)
            except StoreUnavailable as exc:
                if exc.retryable and not fresh:
                    fresh = True
                    continue
                raise
            except SchemaMissing as exc:
                if upgraded or not create_schema:
                    raise exc.original
                log.warning("conversation log schema missing (%s): upgrading", exc)
                self.upgrade()
                upgraded = True

    def _sync(self) -> None:
        """Replay the spool before touching the database, if anything waits in it."""
        if not self.spool.pending():
            return
        self.ping()  # while the database is down, the records stay where they are
        try:
            replayed = self.spool.replay(self._apply_spooled)
            if replayed:
                log.info("replayed %d spooled record(s) into the conversation log", replayed)
        except StoreUnavailable:
            raise
        except Exception:  # a bug in replay must not stop the log: the batch stays on disk
            log.exception("spool replay failed; the records stay in %s", self.spool.path)

    def _spool(self, kind: str, data: dict, why: StoreUnavailable) -> None:
        record = {"kind": kind, "spooled_at": iso(utcnow()), "data": data}
        try:
            self.spool.append(record)
        except OSError as e:
            raise StoreUnavailable(
                f"{why.why}; and the spool {self.spool.path} cannot be written: {e}") from e
        log.warning("conversation log unavailable (%s): %s spooled to %s",
                    why.why, kind, self.spool.path)

    # -- reading for reports -----------------------------------------------------------------

    def read(self, fn: Callable[[Cursor], T]) -> T:
        """``fn(cursor)`` in one read transaction, after replaying the spool (so that spooled
        records are counted), and its result. The cursor takes ``%s`` placeholders on both
        backends; parameters and results pass through :meth:`db_time` / :meth:`py_time`.
        ``fn`` must only read. Raises StoreUnavailable."""
        self._sync()
        return self._run(fn, write=False)

    def db_time(self, value: datetime) -> Any:
        """An aware datetime as a query parameter for this backend."""
        return self._db.db_time(to_utc(value))

    def py_time(self, value: Any) -> datetime:
        """A timestamp column's value as an aware UTC datetime."""
        return self._db.py_time(value)

    def epoch_bucket(self, size: int) -> str:
        """SQL for the UTC epoch second (an integer) starting the ``size``-second bucket of
        ``created_at``, whatever the session's time zone."""
        return self._db.epoch_bucket(size)

    # -- schema ------------------------------------------------------------------------------

    def migrations(self) -> list[tuple[int, Path]]:
        """The migration files of this backend, by version."""
        directory = MIGRATIONS_DIR / self._db.migrations_dir
        found: dict[int, Path] = {}
        for path in sorted(directory.glob("*.sql")):
            match = _MIGRATION_FILE.match(path.name)
            if not match:
                raise ConfigError(f"migration file name not NNNN_name.sql: {path}")
            version = int(match.group(1))
            if version in found:
                raise ConfigError(f"two migrations with version {version}: "
                                  f"{found[version].name}, {path.name}")
            found[version] = path
        return sorted(found.items())

    def upgrade(self) -> list[int]:
        """Apply the migrations not applied yet, in order, each in its own transaction (with a
        lock so that two processes upgrading at once apply each version once). Returns the
        versions applied by this call; [] when the schema is current. Never drops anything."""
        applied: list[int] = []
        for version, path in self.migrations():
            sql = path.read_text(encoding="utf-8")

            def step(cur: Cursor, version=version, sql=sql) -> bool:
                self._db.lock_migrations(cur)
                self._db.run_script(cur, self._db.schema_migrations_ddl)
                cur.execute("SELECT 1 FROM schema_migrations WHERE version = %s", (version,))
                if cur.fetchone():
                    return False
                self._db.run_script(cur, sql)
                cur.execute("INSERT INTO schema_migrations (version, applied_at) VALUES (%s, %s)",
                            (version, self._db.db_time(utcnow())))
                return True

            if self._run(step, create_schema=False):
                log.info("conversation log: applied migration %s", path.name)
                applied.append(version)
        return applied

    def schema_versions(self) -> list[int]:
        """The versions recorded in ``schema_migrations``."""
        def read(cur: Cursor) -> list[int]:
            return [row[0] for row in
                    cur.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()]
        return self._run(read, write=False)

    # -- writes ------------------------------------------------------------------------------

    def _insert_exchange(self, cur: Cursor, exchange: Exchange) -> None:
        values = []
        for name in COLUMNS:
            value = getattr(exchange, name)
            if name == "sources":
                value = self._db.db_json(value)
            elif name == "created_at":
                value = self._db.db_time(value)
            values.append(value)
        cur.execute(f"INSERT INTO conversations ({', '.join(COLUMNS)}) "
                    f"VALUES ({', '.join(['%s'] * len(COLUMNS))}) ON CONFLICT (id) DO NOTHING",
                    values)

    def save_exchange(self, exchange: Exchange) -> bool:
        """Store one exchange: True when stored, False when the database was unreachable and
        the exchange went to the spool (it will be stored by a later call). Idempotent on
        ``exchange.id``."""
        try:
            self._sync()
            self._run(lambda cur: self._insert_exchange(cur, exchange))
            return True
        except StoreUnavailable as why:
            self._spool("exchange", exchange.to_record(), why)
            return False

    def _latest_exchange(self, cur: Cursor, conversation_id: str,
                         before: datetime | None = None) -> str | None:
        if before is not None:
            row = cur.execute(
                "SELECT id FROM conversations WHERE conversation_id = %s AND created_at <= %s "
                "ORDER BY turn DESC, created_at DESC LIMIT 1",
                (conversation_id, self._db.db_time(before))).fetchone()
            if row:
                return row[0]
        row = cur.execute("SELECT id FROM conversations WHERE conversation_id = %s "
                          "ORDER BY turn DESC, created_at DESC LIMIT 1",
                          (conversation_id,)).fetchone()
        return row[0] if row else None

    def _feedback_target(self, cur: Cursor, data: dict,
                         before: datetime | None) -> tuple[str, str]:
        """(exchange id, conversation id) that feedback ``data`` is about: its ``exchange_id``
        (which must belong to its ``conversation_id`` when both are given), else the latest
        exchange of its conversation (``before`` its time when there is one, for a replay).
        Raises UnknownExchange / UnknownConversation."""
        exchange_id, conversation_id = data.get("exchange_id"), data.get("conversation_id")
        if exchange_id is not None:
            row = cur.execute("SELECT conversation_id FROM conversations WHERE id = %s",
                              (exchange_id,)).fetchone()
            if row is None:
                raise UnknownExchange(f"unknown exchange {exchange_id}")
            if conversation_id is not None and row[0] != conversation_id:
                raise UnknownExchange(
                    f"exchange {exchange_id} is not in conversation {conversation_id}")
            return exchange_id, row[0]
        latest = self._latest_exchange(cur, conversation_id, before)
        if latest is None:
            raise UnknownConversation(f"unknown conversation {conversation_id}")
        return latest, conversation_id

    def _insert_feedback(self, cur: Cursor, data: dict, before: datetime | None = None) -> None:
        exchange_id, conversation_id = self._feedback_target(cur, data, before)
        cur.execute(
            "INSERT INTO feedback (conversation_id, exchange_id, feedback, comment, created_at,"
            " spool_id) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (spool_id) DO NOTHING",
            (conversation_id, exchange_id, data["feedback"], data.get("comment"),
             self._db.db_time(to_utc(data["created_at"])), data["spool_id"]))

    def save_feedback(self, value: int, comment: str | None = None, *,
                      exchange_id: str | None = None,
                      conversation_id: str | None = None) -> Literal["stored", "spooled"]:
        """Record a reader's +1 / -1 (and comment) on an exchange.

        The target: ``exchange_id`` when given (then ``conversation_id``, if also given, must
        be that exchange's conversation), else the latest exchange of ``conversation_id``.

        Returns ``"stored"``, or ``"spooled"`` when the database was unreachable: the feedback
        is accepted and stored by a later call, or set aside in the rejected file if its target
        still does not exist then.

        Raises, before touching the database: InvalidFeedback (see :func:`validate_feedback`),
        ValueError when neither id is given. Then UnknownExchange (no such exchange, or not in
        that conversation) / UnknownConversation (no such conversation).
        """
        comment = validate_feedback(value, comment)
        if exchange_id is None and conversation_id is None:
            raise ValueError("save_feedback needs an exchange_id or a conversation_id")
        for name, given in (("exchange_id", exchange_id), ("conversation_id", conversation_id)):
            if given is not None and (not isinstance(given, str) or not given):
                raise ValueError(f"{name} must be a non-empty string, got {given!r}")
        data = {"spool_id": _new_id(), "exchange_id": exchange_id,
                "conversation_id": conversation_id, "feedback": value, "comment": comment,
                "created_at": iso(utcnow())}
        try:
            self._sync()
            self._run(lambda cur: self._insert_feedback(cur, data))
            return "stored"
        except StoreUnavailable as why:
            self._spool("feedback", data, why)
            return "spooled"

    def set_relevance(self, exchange_id: str, relevance: str, explanation: str | None, *,
                      prompt_tokens: int = 0, completion_tokens: int = 0,
                      cost: float | None = None) -> None:
        """Record the judge's verdict on an exchange and what judging it cost.
        Raises KeyError for an unknown exchange, StoreUnavailable when the database is down
        (judgements are not spooled: the batch judge picks unjudged exchanges up again)."""
        if relevance not in RELEVANCE_VALUES:
            raise ValueError(f"relevance must be one of {RELEVANCE_VALUES}, got {relevance!r}")
        total = (prompt_tokens or 0) + (completion_tokens or 0)

        def write(cur: Cursor) -> int:
            return cur.execute(
                "UPDATE conversations SET relevance = %s, relevance_explanation = %s,"
                " judge_prompt_tokens = %s, judge_completion_tokens = %s,"
                " judge_total_tokens = %s, judge_cost = %s WHERE id = %s",
                (relevance, explanation, prompt_tokens, completion_tokens, total, cost,
                 exchange_id)).rowcount

        self._sync()
        if not self._run(write):
            raise KeyError(f"no exchange {exchange_id!r} in the conversation log")

    def purge_before(self, cutoff: datetime) -> "PurgeReport":
        """Delete the exchanges created before ``cutoff`` (their verdicts are on their rows),
        the feedback given before it and any feedback on a deleted exchange, in one
        transaction. Raises StoreUnavailable."""
        when = self._db.db_time(to_utc(cutoff))

        def purge(cur: Cursor) -> PurgeReport:
            judged = cur.execute("SELECT COUNT(*) FROM conversations WHERE created_at < %s"
                                 " AND relevance IS NOT NULL", (when,)).fetchone()[0]
            feedback = cur.execute(
                "DELETE FROM feedback WHERE created_at < %s OR exchange_id IN"
                " (SELECT id FROM conversations WHERE created_at < %s)", (when, when)).rowcount
            exchanges = cur.execute("DELETE FROM conversations WHERE created_at < %s",
                                    (when,)).rowcount
            return PurgeReport(to_utc(cutoff), exchanges, feedback, judged)

        self._sync()
        return self._run(purge)

    # -- spool -------------------------------------------------------------------------------

    def _store_spooled(self, cur: Cursor, record: dict) -> None:
        kind, data = record.get("kind"), record.get("data")
        if kind == "exchange":
            self._insert_exchange(cur, Exchange.from_record(data))
        elif kind == "feedback":
            # Records spooled before feedback named its exchange have no "exchange_id": they
            # go to the conversation's latest exchange at the time the feedback was given.
            data = {**data, "comment": validate_feedback(data["feedback"], data.get("comment"))}
            self._insert_feedback(cur, data, before=to_utc(data["created_at"]))
        else:
            raise ValueError(f"unknown spooled record kind {kind!r}")

    def _apply_spooled(self, records: list[dict]) -> Rejected:
        """Store spooled records in one transaction (idempotent: exchanges by id, feedback by
        spool_id); a record that cannot be stored is rejected, not retried forever."""
        def apply(cur: Cursor) -> Rejected:
            rejected: Rejected = []
            for record in records:
                cur.execute("SAVEPOINT spooled_record")
                try:
                    self._store_spooled(cur, record)
                except Exception as exc:
                    # Connection trouble or a missing schema: the whole batch must wait.
                    if self._db.translate(exc) is not exc:
                        raise
                    cur.execute("ROLLBACK TO SAVEPOINT spooled_record")
                    rejected.append((record, f"{type(exc).__name__}: {exc}"))
                cur.execute("RELEASE SAVEPOINT spooled_record")
            return rejected

        return self._run(apply)

    def replay_spool(self) -> int:
        """Store what the spool holds; returns how many records were stored (0 when empty).
        Raises StoreUnavailable when the database is still down (the spool is kept)."""
        if not self.spool.pending():
            return 0
        self.ping()
        return self.spool.replay(self._apply_spooled)

    def spooled(self) -> int:
        """How many records wait in the spool."""
        return self.spool.count()

    # -- reads -------------------------------------------------------------------------------

    def _exchange(self, row: tuple) -> Exchange:
        values = dict(zip(COLUMNS, row))
        values["sources"] = self._db.py_json(values["sources"])
        values["created_at"] = self._db.py_time(values["created_at"])
        return Exchange(**values)

    def _select(self, sql: str, params: tuple) -> list[Exchange]:
        rows = self.read(lambda cur: cur.execute(sql, params).fetchall())
        return [self._exchange(row) for row in rows]

    def conversation_exists(self, conversation_id: str) -> bool:
        return self.read(lambda cur: cur.execute(
            "SELECT 1 FROM conversations WHERE conversation_id = %s LIMIT 1",
            (conversation_id,)).fetchone() is not None)

    def history(self, conversation_id: str, limit: int = 10) -> list[Exchange]:
        """The last ``limit`` exchanges of a conversation, oldest first."""
        rows = self._select(f"{_SELECT} WHERE conversation_id = %s "
                            "ORDER BY turn DESC, created_at DESC LIMIT %s",
                            (conversation_id, int(limit)))
        return rows[::-1]

    def get(self, exchange_id: str) -> Exchange | None:
        rows = self._select(f"{_SELECT} WHERE id = %s", (exchange_id,))
        return rows[0] if rows else None

    def recent(self, limit: int = 20) -> list[Exchange]:
        """The latest exchanges, newest first."""
        return self._select(f"{_SELECT} ORDER BY created_at DESC, id LIMIT %s", (int(limit),))

    def exchanges_without_relevance(self, limit: int = 100) -> list[Exchange]:
        """Answered exchanges (status 'ok') not judged yet, oldest first: the batch judge's work."""
        return self._select(f"{_SELECT} WHERE relevance IS NULL AND status = 'ok' "
                            "AND answer IS NOT NULL AND answer <> '' "
                            "ORDER BY created_at, id LIMIT %s", (int(limit),))

    def ping(self) -> None:
        """Raise StoreUnavailable(why) unless the database answers."""
        self._run(lambda cur: cur.execute("SELECT 1").fetchone(), write=False)

    def close(self) -> None:
        """Close the idle connections (the store stays usable: it reconnects on demand)."""
        self._db.close()


def open_store(database_url: str, *, data_dir: str | Path,
               spool_path: str | Path | None = None) -> ConversationStore:
    """The conversation log for ``database_url`` (see :func:`backends.open_backend`: a
    ``postgresql://`` URL, else the SQLite file ``<data_dir>/conversations.sqlite``). Connects
    lazily: opening never fails because the database is down. The spool defaults to
    ``<data_dir>/spool.jsonl``."""
    return ConversationStore(open_backend(database_url, data_dir),
                             Spool(spool_path or Path(data_dir) / "spool.jsonl"))
