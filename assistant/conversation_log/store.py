"""The conversation log: every exchange (question + answer), feedback and relevance judgement.

Two backends, one schema (``migrations/<backend>/NNNN_*.sql`` are the source of truth):
PostgreSQL through psycopg2 for a ``postgresql://`` URL, else an embedded SQLite file
``<data_dir>/conversations.sqlite``. Grafana reads the tables directly.

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

import json
import logging
import math
import re
import sqlite3
import threading
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Iterator

from assistant.errors import AssistantError, ConfigError
from assistant.conversation_log.spool import Rejected, Spool

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
RELEVANCE_VALUES = ("RELEVANT", "PARTLY_RELEVANT", "NON_RELEVANT")
FEEDBACK_VALUES = (1, -1)
PG_CONNECT_TIMEOUT = 3
SQLITE_TIMEOUT = 10.0
_MIGRATION_LOCK_KEY = 0x4172_736F_6E6F_72  # pg_advisory_xact_lock key ("Arsonor")
_MIGRATION_FILE = re.compile(r"^(\d{4})_[A-Za-z0-9_\-]+\.sql$")


class StoreUnavailable(AssistantError):
    """The conversation database cannot be reached (down, restarting, refusing, locked)."""

    def __init__(self, why: str):
        super().__init__(why)
        self.why = why
        # Set by the PostgreSQL backend when a pooled connection failed: it may just be stale
        # (the server restarted since), so one retry on a fresh connection is worth it.
        self.retryable = False


class _SchemaMissing(Exception):
    """A table or column is missing: the schema needs ``upgrade()``."""

    def __init__(self, original: BaseException):
        super().__init__(str(original))
        self.original = original


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _to_utc(value: datetime | str, name: str = "created_at") -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (UTC), got naive {value.isoformat()}")
    return value.astimezone(timezone.utc)


def _iso(value: datetime) -> str:
    """Fixed-width UTC ISO-8601 (microseconds, ``+00:00``): text order is time order."""
    return value.astimezone(timezone.utc).isoformat(timespec="microseconds")


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
        self.created_at = _to_utc(self.created_at)

    def to_record(self) -> dict:
        """A JSON-ready dict (``created_at`` as ISO-8601 text)."""
        record = asdict(self)
        record["created_at"] = _iso(self.created_at)
        return record

    @classmethod
    def from_record(cls, record: dict) -> "Exchange":
        """The inverse of :meth:`to_record`; unknown keys (a newer writer) are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in record.items() if k in known})


COLUMNS = tuple(f.name for f in fields(Exchange))
_SELECT = f"SELECT {', '.join(COLUMNS)} FROM conversations"


# -- backends --------------------------------------------------------------------------------


class _Cursor:
    """A DB-API cursor taking ``%s`` placeholders on both backends."""

    def __init__(self, cursor, qmark: bool):
        self._cursor = cursor
        self._qmark = qmark

    def execute(self, sql: str, params: tuple | list = ()) -> "_Cursor":
        if self._qmark:
            sql = sql.replace("%s", "?")
        if params:
            self._cursor.execute(sql, tuple(params))
        else:
            self._cursor.execute(sql)
        return self

    def fetchone(self):
        return self._cursor.fetchone()

    def fetchall(self):
        return self._cursor.fetchall()

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount


class _Backend:
    name: str
    migrations_dir: str

    def transaction(self, *, write: bool, fresh: bool = False):
        raise NotImplementedError

    def run_script(self, cur: _Cursor, sql: str) -> None:
        raise NotImplementedError

    def lock_migrations(self, cur: _Cursor) -> None:
        pass

    def db_time(self, value: datetime) -> Any:
        return value

    def py_time(self, value: Any) -> datetime:
        return _to_utc(value)

    def db_json(self, value: Any) -> str:
        return json.dumps(value, ensure_ascii=False)

    def py_json(self, value: Any) -> Any:
        if value is None:
            return []
        return json.loads(value) if isinstance(value, (str, bytes)) else value

    def close(self) -> None:
        pass


class _PostgresBackend(_Backend):
    """psycopg2, a few idle connections kept for reuse (one per call, never shared)."""

    name = "postgresql"
    migrations_dir = "postgres"

    def __init__(self, url: str, max_idle: int = 4):
        import psycopg2  # imported here: a SQLite-only install needs no driver
        import psycopg2.errors

        self._pg = psycopg2
        self.url = url
        self._max_idle = max_idle
        self._idle: list = []
        self._lock = threading.Lock()

    def _connect(self):
        try:
            return self._pg.connect(
                self.url, connect_timeout=PG_CONNECT_TIMEOUT, application_name="arsonor-assistant",
                keepalives=1, keepalives_idle=30, keepalives_interval=10, keepalives_count=3)
        except (self._pg.OperationalError, self._pg.InterfaceError) as e:
            raise StoreUnavailable(f"PostgreSQL unreachable: {_first_line(e)}") from e

    def _drain(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            _quiet_close(conn)

    @contextmanager
    def transaction(self, *, write: bool, fresh: bool = False) -> Iterator[_Cursor]:
        conn = None
        if not fresh:
            with self._lock:
                while self._idle and conn is None:
                    candidate = self._idle.pop()
                    if candidate.closed:
                        continue
                    conn = candidate
        pooled = conn is not None
        if conn is None:
            conn = self._connect()
        try:
            with conn.cursor() as raw:
                yield _Cursor(raw, qmark=False)
            conn.commit()
        except BaseException as exc:
            translated = self._translate(exc, pooled)
            if isinstance(translated, StoreUnavailable):
                _quiet_close(conn)
                self._drain()  # the server went away: the other idle connections are dead too
            else:
                try:
                    conn.rollback()
                    self._release(conn)
                except Exception:
                    _quiet_close(conn)
            if translated is exc:
                raise
            raise translated from exc
        else:
            self._release(conn)

    def _release(self, conn) -> None:
        if conn.closed:
            return
        with self._lock:
            if len(self._idle) < self._max_idle:
                self._idle.append(conn)
                return
        _quiet_close(conn)

    def _translate(self, exc: BaseException, pooled: bool) -> BaseException:
        pg = self._pg
        if isinstance(exc, (pg.errors.UndefinedTable, pg.errors.UndefinedColumn)):
            return _SchemaMissing(exc)
        if isinstance(exc, (pg.OperationalError, pg.InterfaceError)):
            unavailable = StoreUnavailable(f"PostgreSQL unavailable: {_first_line(exc)}")
            unavailable.retryable = pooled
            return unavailable
        return exc

    def run_script(self, cur: _Cursor, sql: str) -> None:
        cur._cursor.execute(sql)  # no parameters: psycopg2 sends the text as it is

    def lock_migrations(self, cur: _Cursor) -> None:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK_KEY,))

    def py_time(self, value: Any) -> datetime:
        return value.astimezone(timezone.utc)

    def close(self) -> None:
        self._drain()


class _SQLiteBackend(_Backend):
    """One connection per thread, WAL journal, explicit transactions (writers BEGIN IMMEDIATE)."""

    name = "sqlite"
    migrations_dir = "sqlite"
    # Primary result codes meaning "cannot get at the database right now".
    _UNAVAILABLE = {5: "SQLITE_BUSY", 6: "SQLITE_LOCKED", 8: "SQLITE_READONLY",
                    10: "SQLITE_IOERR", 13: "SQLITE_FULL", 14: "SQLITE_CANTOPEN",
                    15: "SQLITE_PROTOCOL"}

    def __init__(self, path: Path):
        self.path = path
        self._conns: dict[threading.Thread, sqlite3.Connection] = {}
        self._lock = threading.Lock()

    def _conn(self) -> sqlite3.Connection:
        me = threading.current_thread()
        conn = self._conns.get(me)
        if conn is not None:
            return conn
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=SQLITE_TIMEOUT, isolation_level=None,
                                   check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
        except (sqlite3.Error, OSError) as e:
            raise StoreUnavailable(f"SQLite database {self.path} unavailable: {e}") from e
        with self._lock:
            # Threads come and go (a server may use one per request): close the dead ones'.
            for thread in [t for t in self._conns if not t.is_alive()]:
                _quiet_close(self._conns.pop(thread))
            self._conns[me] = conn
        return conn

    @contextmanager
    def transaction(self, *, write: bool, fresh: bool = False) -> Iterator[_Cursor]:
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            yield _Cursor(conn.cursor(), qmark=True)
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            translated = self._translate(exc)
            if translated is exc:
                raise
            raise translated from exc

    def _translate(self, exc: BaseException) -> BaseException:
        if isinstance(exc, sqlite3.OperationalError):
            message = str(exc)
            if ("no such table" in message or "no such column" in message
                    or "has no column named" in message):
                return _SchemaMissing(exc)
            code = getattr(exc, "sqlite_errorcode", None)
            if code is not None and code & 0xFF in self._UNAVAILABLE:
                return StoreUnavailable(f"SQLite database {self.path} unavailable: {message}")
        return exc

    def run_script(self, cur: _Cursor, sql: str) -> None:
        # executescript() would COMMIT first: run statement by statement inside our transaction.
        buffer = ""
        for line in sql.splitlines(keepends=True):
            buffer += line
            if sqlite3.complete_statement(buffer):
                cur._cursor.execute(buffer)
                buffer = ""
        if buffer.strip() and not all(
                ln.strip().startswith("--") or not ln.strip() for ln in buffer.splitlines()):
            raise ConfigError(f"incomplete SQL statement at the end of a migration: {buffer!r}")

    def db_time(self, value: datetime) -> str:
        return _iso(value)

    def close(self) -> None:
        with self._lock:
            conns, self._conns = list(self._conns.values()), {}
        for conn in conns:
            _quiet_close(conn)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _quiet_close(conn) -> None:
    try:
        conn.close()
    except Exception:
        pass


def _round(value: Any, digits: int) -> float | None:
    return None if value is None else round(float(value), digits)


# -- the store -------------------------------------------------------------------------------


class ConversationStore:
    """The conversation log on one backend; thread-safe (one connection per call or thread)."""

    def __init__(self, backend: _Backend, spool: Spool):
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

    def _run(self, fn: Callable[[_Cursor], Any], *, write: bool = True,
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
            except _SchemaMissing as exc:
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
        record = {"kind": kind, "spooled_at": _iso(utcnow()), "data": data}
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
        bootstrap = {
            "postgresql": "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY,"
                          " applied_at TIMESTAMPTZ NOT NULL DEFAULT now());",
            "sqlite": "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY,"
                      " applied_at TEXT NOT NULL DEFAULT"
                      " (strftime('%Y-%m-%dT%H:%M:%f000+00:00', 'now')));",
        }[self.backend]

        applied: list[int] = []
        for version, path in self.migrations():
            sql = path.read_text(encoding="utf-8")

            def step(cur: _Cursor, version=version, sql=sql) -> bool:
                self._db.lock_migrations(cur)
                self._db.run_script(cur, bootstrap)
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
        def read(cur: _Cursor) -> list[int]:
            return [row[0] for row in
                    cur.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()]
        return self._run(read, write=False)

    # -- writes ------------------------------------------------------------------------------

    def _insert_exchange(self, cur: _Cursor, exchange: Exchange) -> None:
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

    def _latest_exchange(self, cur: _Cursor, conversation_id: str,
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

    def _insert_feedback(self, cur: _Cursor, data: dict, exchange_id: str) -> None:
        cur.execute(
            "INSERT INTO feedback (conversation_id, exchange_id, feedback, comment, created_at,"
            " spool_id) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (spool_id) DO NOTHING",
            (data["conversation_id"], exchange_id, data["feedback"], data.get("comment"),
             self._db.db_time(_to_utc(data["created_at"])), data["spool_id"]))

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
                "comment": comment, "created_at": _iso(utcnow())}

        def write(cur: _Cursor) -> bool:
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

        def write(cur: _Cursor) -> int:
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
        def apply(cur: _Cursor) -> Rejected:
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
                            cur, data["conversation_id"], _to_utc(data["created_at"]))
                        if exchange_id is None:
                            raise LookupError(
                                f"feedback for unknown conversation {data['conversation_id']!r}")
                        self._insert_feedback(cur, data, exchange_id)
                    else:
                        raise ValueError(f"unknown spooled record kind {kind!r}")
                except Exception as exc:
                    if self._is_infrastructure_error(exc):
                        raise
                    cur.execute("ROLLBACK TO SAVEPOINT spooled_record")
                    rejected.append((record, f"{type(exc).__name__}: {exc}"))
                cur.execute("RELEASE SAVEPOINT spooled_record")
            return rejected

        return self._run(apply)

    def _is_infrastructure_error(self, exc: BaseException) -> bool:
        """Connection trouble or a missing schema: the whole batch must wait, not the record."""
        if isinstance(self._db, _PostgresBackend):
            return self._db._translate(exc, False) is not exc
        return self._db._translate(exc) is not exc

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
            since = _to_utc(since, "since")
            where, params = " WHERE created_at >= %s", (self._db.db_time(since),)

        def read(cur: _Cursor) -> dict:
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
                "since": _iso(since) if since is not None else None,
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
    """The conversation log for ``database_url`` (a ``postgresql://`` URL), else the SQLite file
    ``<data_dir>/conversations.sqlite``. Connects lazily: opening never fails because the
    database is down. The spool defaults to ``<data_dir>/spool.jsonl``."""
    data_dir = Path(data_dir)
    url = (database_url or "").strip()
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme in ("postgresql", "postgres"):
        backend: _Backend = _PostgresBackend(url)
    elif not url:
        backend = _SQLiteBackend(data_dir / "conversations.sqlite")
    elif scheme == "sqlite" and url.startswith("sqlite:///"):
        backend = _SQLiteBackend(Path(url[len("sqlite:///"):]))
    else:
        raise ConfigError(f"DATABASE_URL {_mask(url)!r}: expected postgresql://… "
                          "(or empty for the SQLite file in DATA_DIR)")
    return ConversationStore(backend, Spool(spool_path or data_dir / "spool.jsonl"))


def _mask(url: str) -> str:
    return re.sub(r"://([^:/@]+):[^@/]*@", r"://\1:***@", url)
