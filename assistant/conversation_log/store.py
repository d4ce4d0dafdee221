"""The conversation log: every exchange (question + answer), feedback and relevance judgement.

Two backends, one schema (``migrations/<backend>/NNNN_*.sql`` are the source of truth):
PostgreSQL for a ``postgresql://`` URL, else an embedded SQLite file
``<data_dir>/conversations.sqlite`` (see :mod:`assistant.conversation_log.backends`). Grafana
reads the tables directly.

Availability rules:

* ``save_exchange`` never raises because the database is unreachable: the exchange goes to the
  spool (``<data_dir>/spool.jsonl``) and the call returns False. ``save_feedback`` does the same
  but returns True: the feedback is *accepted* although its conversation could not be checked;
  when it is replayed, feedback whose conversation is still unknown goes to
  ``spool.jsonl.rejected`` instead of the table.
* Every call that reaches the database first replays the spool (oldest first, idempotently),
  so spooled records land as soon as the database is back; ``replay_spool()`` does it on demand.
* Reads, ``set_relevance``, ``upgrade`` and ``ping`` raise :class:`StoreUnavailable`.
* A missing schema is created on first use (``upgrade()`` then retry); nothing is ever dropped.
"""

from __future__ import annotations

import logging
import math
import re
import uuid
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable

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
from assistant.errors import ConfigError

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
RELEVANCE_VALUES = ("RELEVANT", "PARTLY_RELEVANT", "NON_RELEVANT")
FEEDBACK_VALUES = (1, -1)
_MIGRATION_FILE = re.compile(r"^(\d{4})_[A-Za-z0-9_\-]+\.sql$")


def _new_id() -> str:
    return uuid.uuid4().hex


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


COLUMNS = tuple(f.name for f in fields(Exchange))
_SELECT = f"SELECT {', '.join(COLUMNS)} FROM conversations"


def _round(value: Any, digits: int) -> float | None:
    return None if value is None else round(float(value), digits)


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

    def _run(self, fn: Callable[[Cursor], Any], *, write: bool = True,
             create_schema: bool = True) -> Any:
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

    @staticmethod
    def _check_feedback(value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value not in FEEDBACK_VALUES:
            raise ValueError(f"feedback must be 1 or -1, got {value!r}")

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

    def _insert_feedback(self, cur: Cursor, data: dict, exchange_id: str) -> None:
        cur.execute(
            "INSERT INTO feedback (conversation_id, exchange_id, feedback, comment, created_at,"
            " spool_id) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (spool_id) DO NOTHING",
            (data["conversation_id"], exchange_id, data["feedback"], data.get("comment"),
             self._db.db_time(to_utc(data["created_at"])), data["spool_id"]))

    def save_feedback(self, conversation_id: str, value: int, comment: str | None = None) -> bool:
        """Record +1/-1 feedback on a conversation (attached to its latest exchange).

        False when the conversation is unknown. When the database is unreachable the feedback
        is spooled and the call returns True: accepted, although the conversation could not be
        checked (a replay sends feedback for a still-unknown conversation to the rejected file).
        Raises ValueError for a value other than 1 / -1, before touching the database.
        """
        self._check_feedback(value)
        if not conversation_id or not isinstance(conversation_id, str):
            raise ValueError("conversation_id must be a non-empty string")
        data = {"spool_id": _new_id(), "conversation_id": conversation_id, "feedback": value,
                "comment": comment, "created_at": iso(utcnow())}

        def write(cur: Cursor) -> bool:
            exchange_id = self._latest_exchange(cur, conversation_id)
            if exchange_id is None:
                return False
            self._insert_feedback(cur, data, exchange_id)
            return True

        try:
            self._sync()
            return self._run(write)
        except StoreUnavailable as why:
            self._spool("feedback", data, why)
            return True

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

    # -- spool -------------------------------------------------------------------------------

    def _apply_spooled(self, records: list[dict]) -> Rejected:
        """Store spooled records in one transaction (idempotent: exchanges by id, feedback by
        spool_id); a record that cannot be stored is rejected, not retried forever."""
        def apply(cur: Cursor) -> Rejected:
            rejected: Rejected = []
            for record in records:
                cur.execute("SAVEPOINT spooled_record")
                try:
                    kind, data = record.get("kind"), record.get("data")
                    if kind == "exchange":
                        self._insert_exchange(cur, Exchange.from_record(data))
                    elif kind == "feedback":
                        self._check_feedback(data["feedback"])
                        exchange_id = self._latest_exchange(
                            cur, data["conversation_id"], to_utc(data["created_at"]))
                        if exchange_id is None:
                            raise LookupError(
                                f"feedback for unknown conversation {data['conversation_id']!r}")
                        self._insert_feedback(cur, data, exchange_id)
                    else:
                        raise ValueError(f"unknown spooled record kind {kind!r}")
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
        self._sync()
        rows = self._run(lambda cur: cur.execute(sql, params).fetchall(), write=False)
        return [self._exchange(row) for row in rows]

    def conversation_exists(self, conversation_id: str) -> bool:
        self._sync()
        return self._run(lambda cur: cur.execute(
            "SELECT 1 FROM conversations WHERE conversation_id = %s LIMIT 1",
            (conversation_id,)).fetchone() is not None, write=False)

    def history(self, conversation_id: str, limit: int = 10) -> list[Exchange]:
        """The last ``limit`` exchanges of a conversation, oldest first."""
        rows = self._select(f"{_SELECT} WHERE conversation_id = %s "
                            "ORDER BY turn DESC, created_at DESC LIMIT %s",
                            (conversation_id, int(limit)))
        return rows[::-1]

    def next_turn(self, conversation_id: str) -> int:
        self._sync()
        return self._run(lambda cur: cur.execute(
            "SELECT COALESCE(MAX(turn), 0) + 1 FROM conversations WHERE conversation_id = %s",
            (conversation_id,)).fetchone()[0], write=False)

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

    def stats(self, since: datetime | None = None) -> dict:
        """Totals over the log (from ``since`` when given). Times in seconds (avg, and p95
        interpolated like PostgreSQL's percentile_cont), costs in USD (None when no exchange
        has a known cost), feedback +1/-1 counts, relevance verdicts, errors (status != 'ok')."""
        where, params = "", ()
        if since is not None:
            since = to_utc(since, "since")
            where, params = " WHERE created_at >= %s", (self._db.db_time(since),)

        def read(cur: Cursor) -> dict:
            row = cur.execute(
                "SELECT COUNT(*), COUNT(DISTINCT conversation_id), AVG(response_time),"
                " COUNT(response_time), SUM(prompt_tokens), SUM(completion_tokens),"
                " SUM(total_tokens), SUM(judge_prompt_tokens), SUM(judge_completion_tokens),"
                " SUM(judge_total_tokens), SUM(cost), SUM(judge_cost), COUNT(cost),"
                " SUM(CASE WHEN status <> 'ok' THEN 1 ELSE 0 END)"
                f" FROM conversations{where}", params).fetchone()
            (exchanges, conversations, avg_time, timed, prompt, completion, total, j_prompt,
             j_completion, j_total, cost, judge_cost, with_cost, errors) = row

            p95 = None
            if timed:
                position = 0.95 * (timed - 1)
                low = math.floor(position)
                values = [r[0] for r in cur.execute(
                    "SELECT response_time FROM conversations"
                    f"{where or ' WHERE 1 = 1'} AND response_time IS NOT NULL"
                    " ORDER BY response_time LIMIT 2 OFFSET %s", params + (low,)).fetchall()]
                p95 = values[0]
                if len(values) > 1:
                    p95 = values[0] + (position - low) * (values[1] - values[0])

            def grouped(column: str) -> dict:
                out = {}
                for key, n, avg, tokens, group_cost in cur.execute(
                        f"SELECT {column}, COUNT(*), AVG(response_time), SUM(total_tokens),"
                        f" SUM(cost) FROM conversations{where} GROUP BY {column}",
                        params).fetchall():
                    out[key if key is not None else "none"] = {
                        "exchanges": n, "avg_response_time": _round(avg, 6),
                        "total_tokens": int(tokens or 0), "cost": _round(group_cost, 8)}
                return dict(sorted(out.items()))

            relevance = {value: 0 for value in RELEVANCE_VALUES}
            relevance["unjudged"] = 0
            for verdict, n in cur.execute(
                    f"SELECT relevance, COUNT(*) FROM conversations{where} GROUP BY relevance",
                    params).fetchall():
                relevance[verdict if verdict is not None else "unjudged"] = n

            positive, negative = cur.execute(
                "SELECT COALESCE(SUM(CASE WHEN feedback = 1 THEN 1 ELSE 0 END), 0),"
                " COALESCE(SUM(CASE WHEN feedback = -1 THEN 1 ELSE 0 END), 0)"
                f" FROM feedback{where}", params).fetchone()

            known = [c for c in (cost, judge_cost) if c is not None]
            return {
                "since": iso(since) if since is not None else None,
                "exchanges": exchanges,
                "conversations": conversations,
                "errors": int(errors or 0),
                "feedback": {"positive": int(positive), "negative": int(negative),
                             "total": int(positive) + int(negative)},
                "response_time": {"avg": _round(avg_time, 6), "p95": _round(p95, 6)},
                "tokens": {"prompt": int(prompt or 0), "completion": int(completion or 0),
                           "total": int(total or 0), "judge_prompt": int(j_prompt or 0),
                           "judge_completion": int(j_completion or 0),
                           "judge_total": int(j_total or 0)},
                "cost": {"answer": _round(cost, 8), "judge": _round(judge_cost, 8),
                         "total": _round(sum(float(c) for c in known), 8) if known else None,
                         "exchanges_with_cost": with_cost},
                "by_mode": grouped("mode"),
                "by_model": grouped("model"),
                "relevance": relevance,
            }

        self._sync()
        return self._run(read, write=False)

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
