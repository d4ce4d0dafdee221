"""The conversation log's two databases behind one interface: PostgreSQL (psycopg2) and SQLite.

What a backend gives the store:

* ``transaction(write=..., fresh=...)``: a context manager yielding a :class:`Cursor` (``%s``
  placeholders on both); it commits on exit, rolls back on an exception, and raises the
  exception as ``translate(exc)`` makes it;
* ``translate(exc)``: the one place a driver error is classified. :class:`StoreUnavailable` for
  "cannot get at the database right now", :class:`SchemaMissing` for a missing table or column,
  anything else is returned unchanged (a bug or bad data: the caller's business);
* the dialect: ``db_time`` / ``py_time`` (timestamps as the driver wants them and back, always
  aware UTC in Python), ``db_json`` / ``py_json``, ``epoch_bucket(size)`` (SQL for the UTC epoch
  second starting the time bucket of ``created_at``), ``run_script``, ``lock_migrations``,
  ``schema_migrations_ddl``.

:func:`open_backend` picks the backend for a ``DATABASE_URL``. Nothing here connects before the
first transaction: building a backend never fails because the database is down.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from assistant.errors import AssistantError, ConfigError

PG_CONNECT_TIMEOUT = 3
SQLITE_TIMEOUT = 10.0
_MIGRATION_LOCK_KEY = 0x4172_736F_6E6F_72  # pg_advisory_xact_lock key ("Arsonor")


class StoreUnavailable(AssistantError):
    """The conversation database cannot be reached (down, restarting, refusing, locked)."""

    def __init__(self, why: str):
        super().__init__(why)
        self.why = why
        # Set by the PostgreSQL backend when a pooled connection failed: it may just be stale
        # (the server restarted since), so one retry on a fresh connection is worth it.
        self.retryable = False


class SchemaMissing(Exception):
    """A table or column is missing: the schema needs an upgrade."""

    def __init__(self, original: BaseException):
        super().__init__(str(original))
        self.original = original


# -- time and JSON ---------------------------------------------------------------------------


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def to_utc(value: datetime | str, name: str = "created_at") -> datetime:
    """``value`` (a datetime or ISO-8601 text) as an aware UTC datetime; a naive one is refused
    (ValueError) rather than guessed."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (UTC), got naive {value.isoformat()}")
    return value.astimezone(timezone.utc)


def iso(value: datetime, timespec: str = "microseconds") -> str:
    """Fixed-width UTC ISO-8601 (``+00:00``): with microseconds, text order is time order."""
    return value.astimezone(timezone.utc).isoformat(timespec=timespec)


# -- the cursor ------------------------------------------------------------------------------


class Cursor:
    """A DB-API cursor taking ``%s`` placeholders on both backends."""

    def __init__(self, cursor, qmark: bool):
        self._cursor = cursor
        self._qmark = qmark

    def execute(self, sql: str, params: tuple | list = ()) -> "Cursor":
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


# -- the backends ----------------------------------------------------------------------------


class Backend:
    """What both databases share; see the module docstring for the contract."""

    name: str
    migrations_dir: str  # below the store's migrations directory
    schema_migrations_ddl: str

    def transaction(self, *, write: bool, fresh: bool = False):
        raise NotImplementedError

    def translate(self, exc: BaseException) -> BaseException:
        raise NotImplementedError

    def run_script(self, cur: Cursor, sql: str) -> None:
        raise NotImplementedError

    def lock_migrations(self, cur: Cursor) -> None:
        pass

    def epoch_bucket(self, size: int) -> str:
        raise NotImplementedError

    def db_time(self, value: datetime) -> Any:
        return value

    def py_time(self, value: Any) -> datetime:
        return to_utc(value)

    def db_json(self, value: Any) -> str:
        return json.dumps(value, ensure_ascii=False)

    def py_json(self, value: Any) -> Any:
        if value is None:
            return []
        return json.loads(value) if isinstance(value, (str, bytes)) else value

    def close(self) -> None:
        pass


class PostgresBackend(Backend):
    """psycopg2, a few idle connections kept for reuse (one per call, never shared)."""

    name = "postgresql"
    migrations_dir = "postgres"
    schema_migrations_ddl = ("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER"
                             " PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now());")

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
    def transaction(self, *, write: bool, fresh: bool = False) -> Iterator[Cursor]:
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
                yield Cursor(raw, qmark=False)
            conn.commit()
        except BaseException as exc:
            translated = self.translate(exc)
            if isinstance(translated, StoreUnavailable):
                translated.retryable = pooled
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

    def translate(self, exc: BaseException) -> BaseException:
        pg = self._pg
        if isinstance(exc, (pg.errors.UndefinedTable, pg.errors.UndefinedColumn)):
            return SchemaMissing(exc)
        if isinstance(exc, (pg.OperationalError, pg.InterfaceError)):
            return StoreUnavailable(f"PostgreSQL unavailable: {_first_line(exc)}")
        return exc

    def run_script(self, cur: Cursor, sql: str) -> None:
        cur._cursor.execute(sql)  # no parameters: psycopg2 sends the text as it is

    def lock_migrations(self, cur: Cursor) -> None:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK_KEY,))

    def epoch_bucket(self, size: int) -> str:
        size = int(size)  # pasted into the SQL: digits only
        return f"(FLOOR(EXTRACT(EPOCH FROM created_at) / {size}) * {size})::BIGINT"

    def py_time(self, value: Any) -> datetime:
        return value.astimezone(timezone.utc)

    def close(self) -> None:
        self._drain()


class SQLiteBackend(Backend):
    """One connection per thread, WAL journal, explicit transactions (writers BEGIN IMMEDIATE).
    Timestamps are stored as fixed-width ISO-8601 UTC text (see :func:`iso`)."""

    name = "sqlite"
    migrations_dir = "sqlite"
    schema_migrations_ddl = ("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER"
                             " PRIMARY KEY, applied_at TEXT NOT NULL DEFAULT"
                             " (strftime('%Y-%m-%dT%H:%M:%f000+00:00', 'now')));")
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
    def transaction(self, *, write: bool, fresh: bool = False) -> Iterator[Cursor]:
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            yield Cursor(conn.cursor(), qmark=True)
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            translated = self.translate(exc)
            if translated is exc:
                raise
            raise translated from exc

    def translate(self, exc: BaseException) -> BaseException:
        if isinstance(exc, sqlite3.OperationalError):
            message = str(exc)
            if ("no such table" in message or "no such column" in message
                    or "has no column named" in message):
                return SchemaMissing(exc)
            code = getattr(exc, "sqlite_errorcode", None)
            if code is not None and code & 0xFF in self._UNAVAILABLE:
                return StoreUnavailable(f"SQLite database {self.path} unavailable: {message}")
        return exc

    def run_script(self, cur: Cursor, sql: str) -> None:
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

    def epoch_bucket(self, size: int) -> str:
        # unixepoch() reads the stored text's explicit offset: UTC whatever the session.
        size = int(size)  # pasted into the SQL: digits only
        return f"((unixepoch(created_at) / {size}) * {size})"

    def db_time(self, value: datetime) -> str:
        return iso(value)

    def close(self) -> None:
        with self._lock:
            conns, self._conns = list(self._conns.values()), {}
        for conn in conns:
            _quiet_close(conn)


def open_backend(database_url: str, data_dir: str | Path) -> Backend:
    """The backend for ``database_url``: PostgreSQL for a ``postgresql://`` (or ``postgres://``)
    URL, SQLite for ``sqlite:///<path>``, else the SQLite file ``<data_dir>/conversations.sqlite``
    when the URL is empty. Raises ConfigError for anything else (the password masked)."""
    url = (database_url or "").strip()
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme in ("postgresql", "postgres"):
        return PostgresBackend(url)
    if not url:
        return SQLiteBackend(Path(data_dir) / "conversations.sqlite")
    if scheme == "sqlite" and url.startswith("sqlite:///"):
        return SQLiteBackend(Path(url[len("sqlite:///"):]))
    raise ConfigError(f"DATABASE_URL {_mask(url)!r}: expected postgresql://… "
                      "(or empty for the SQLite file in DATA_DIR)")


def _mask(url: str) -> str:
    return re.sub(r"://([^:/@]+):[^@/]*@", r"://\1:***@", url)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _quiet_close(conn) -> None:
    try:
        conn.close()
    except Exception:
        pass
