"""The conversation log on both backends (SQLite file, real PostgreSQL), and its spool."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg2
import pytest

from assistant.conversation_log import (
    COLUMNS,
    MAX_COMMENT_CHARS,
    MIGRATIONS_DIR,
    Exchange,
    StoreUnavailable,
    open_store,
    stats,
)
from assistant.conversation_log.backends import iso, utcnow
from assistant.errors import (
    AssistantError,
    ConfigError,
    InvalidFeedback,
    InvalidInput,
    UnknownConversation,
    UnknownExchange,
)
from evaluation.ports import free_port

REPO = Path(__file__).resolve().parent.parent
UTC = timezone.utc
FEEDBACK_COLUMNS = ["id", "conversation_id", "exchange_id", "feedback", "comment", "created_at",
                    "spool_id"]
SOURCES = [{"article_id": "a12", "title": "La compression parallèle", "score": 0.83,
            "url": "https://arsonor.com/compression-parallele/", "chunk_id": "a12-3"}]


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, sqlite_data_dir):
    url = request.getfixturevalue("pg_url") if request.param == "postgresql" else ""
    s = open_store(url, data_dir=sqlite_data_dir)  # PostgreSQL keeps only its spool there
    yield s
    s.close()


def query(store, sql: str, params: tuple = ()) -> list[tuple]:
    """Raw SQL (``%s`` placeholders) on the store's database."""
    return store.read(lambda cur: cur.execute(sql, params).fetchall())


def count(store, table: str) -> int:
    return query(store, f"SELECT COUNT(*) FROM {table}")[0][0]


def columns(store, table: str) -> list[str]:
    if store.backend == "sqlite":
        return [row[1] for row in query(store, f"PRAGMA table_info({table})")]
    return [row[0] for row in query(
        store, "SELECT column_name FROM information_schema.columns WHERE table_name = %s "
               "ORDER BY ordinal_position", (table,))]


def exchange(conversation_id="c1", turn=1, **kw) -> Exchange:
    kw.setdefault("question", f"Comment régler un compresseur ? (tour {turn})")
    kw.setdefault("answer", "Réglez d'abord le seuil, puis le ratio.")
    return Exchange(conversation_id=conversation_id, turn=turn, **kw)


# -- schema ----------------------------------------------------------------------------------


def test_upgrade_is_idempotent_and_records_versions(store):
    assert store.upgrade() == [1, 2, 3]
    assert store.upgrade() == []
    assert store.schema_versions() == [1, 2, 3]
    rows = query(store, "SELECT version, applied_at FROM schema_migrations ORDER BY version")
    assert [r[0] for r in rows] == [1, 2, 3] and all(r[1] for r in rows)
    # Same tables and columns on both backends: the ones Grafana queries.
    assert columns(store, "conversations") == list(COLUMNS)
    assert columns(store, "feedback") == FEEDBACK_COLUMNS
    assert columns(store, "schema_migrations") == ["version", "applied_at"]


def test_migration_files_pair_up_and_never_drop():
    names = {backend: sorted(p.name for p in (MIGRATIONS_DIR / backend).glob("*.sql"))
             for backend in ("postgres", "sqlite")}
    assert names["postgres"] == names["sqlite"]
    assert names["postgres"][:2] == ["0001_initial.sql", "0002_feedback_spool_id.sql"]
    for path in MIGRATIONS_DIR.glob("*/*.sql"):
        code = re.sub(r"--[^\n]*", "", path.read_text())
        assert not re.search(r"\b(DROP|DELETE|TRUNCATE|RENAME)\b", code, re.I), path


def test_first_save_on_an_empty_database_creates_the_schema(store):
    assert store.save_exchange(exchange())
    assert store.schema_versions() == [1, 2, 3]
    assert store.upgrade() == []


def test_upgrade_never_drops_data(store):
    store.upgrade()
    store.save_exchange(exchange())
    store.save_feedback(1, conversation_id="c1")
    for _ in range(2):
        assert store.upgrade() == []
    assert (count(store, "conversations"), count(store, "feedback")) == (1, 1)
    # Re-opening (as a restart of the app does) drops nothing either.
    store.close()
    assert (count(store, "conversations"), count(store, "feedback")) == (1, 1)


# -- exchanges -------------------------------------------------------------------------------


def test_save_and_history(store):
    store.upgrade()
    assert not store.conversation_exists("c1")
    saved = []
    for turn in (1, 2, 3):
        ex = exchange("c1", turn, sources=SOURCES, mode="llm",
                      model="gpt-4o-mini", language="fr", category="mixage",
                      response_time=1.25 * turn, retrieval_time=0.05, llm_time=1.1,
                      prompt_tokens=120, completion_tokens=80, total_tokens=200, cost=0.00042)
        assert store.save_exchange(ex) is True
        saved.append(ex)
    store.save_exchange(exchange("other", 1))
    assert store.save_exchange(saved[0]) is True  # idempotent on the id
    assert count(store, "conversations") == 4

    assert store.history("c1") == saved  # every field round-trips
    assert [e.turn for e in store.history("c1", limit=2)] == [2, 3]
    assert store.conversation_exists("c1") and not store.conversation_exists("nope")
    assert store.history("nope") == []
    assert store.get(saved[1].id) == saved[1] and store.get("nope") is None


def test_recent_is_newest_first(store):
    t0 = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
    for i in range(5):
        store.save_exchange(exchange(f"c{i}", created_at=t0 + timedelta(minutes=i)))
    assert [e.conversation_id for e in store.recent(3)] == ["c4", "c3", "c2"]


def test_timestamps_are_utc_aware_and_round_trip(store):
    paris = timezone(timedelta(hours=2))
    ex = exchange(created_at=datetime(2024, 5, 1, 11, 30, 0, 123456, tzinfo=paris))
    assert ex.created_at == datetime(2024, 5, 1, 9, 30, 0, 123456, tzinfo=UTC)
    store.save_exchange(ex)
    back = store.history("c1")[0]
    assert back.created_at == ex.created_at
    assert back.created_at.tzinfo is not None and back.created_at.utcoffset() == timedelta(0)
    store.save_feedback(1, exchange_id=ex.id)
    if store.backend == "sqlite":
        assert query(store, "SELECT created_at FROM conversations")[0][0] == \
            "2024-05-01T09:30:00.123456+00:00"
        fb = query(store, "SELECT created_at FROM feedback")[0][0]
        assert fb.endswith("+00:00") and datetime.fromisoformat(fb).tzinfo is not None
    else:
        for table in ("conversations", "feedback", "schema_migrations"):
            kind = query(store, f"SELECT pg_typeof(created_at)::text FROM {table} LIMIT 1"
                         if table != "schema_migrations" else
                         "SELECT pg_typeof(applied_at)::text FROM schema_migrations LIMIT 1")
            assert kind[0][0] == "timestamp with time zone", table
    with pytest.raises(ValueError, match="timezone-aware"):
        exchange(created_at=datetime(2024, 5, 1, 9, 30))


# -- feedback --------------------------------------------------------------------------------


def feedback_rows(store) -> list[tuple]:
    return query(store, "SELECT conversation_id, exchange_id, feedback, comment FROM feedback "
                        "ORDER BY id")


def test_feedback_targets_an_exchange_or_the_latest_of_a_conversation(store):
    first, latest = exchange("c1", 1), exchange("c1", 2)
    other = exchange("c2", 1)
    for ex in (first, latest, other):
        store.save_exchange(ex)
    # On a given exchange, not the latest one of its conversation.
    assert store.save_feedback(1, "  Merci, très clair ", exchange_id=first.id) == "stored"
    # On a conversation only: its latest exchange.
    assert store.save_feedback(-1, conversation_id="c1") == "stored"
    # Both named, and they agree.
    assert store.save_feedback(1, "", exchange_id=other.id, conversation_id="c2") == "stored"
    assert feedback_rows(store) == [("c1", first.id, 1, "Merci, très clair"),
                                    ("c1", latest.id, -1, None), ("c2", other.id, 1, None)]


def test_feedback_on_what_does_not_exist_raises(store):
    ex = exchange("c1", 1)
    store.save_exchange(ex)
    with pytest.raises(UnknownExchange, match="not in conversation c2"):
        store.save_feedback(1, exchange_id=ex.id, conversation_id="c2")
    with pytest.raises(UnknownExchange, match="unknown exchange nope"):
        store.save_feedback(1, exchange_id="nope")
    with pytest.raises(UnknownExchange):
        store.save_feedback(1, exchange_id="nope", conversation_id="c1")
    with pytest.raises(UnknownConversation, match="unknown conversation ghost"):
        store.save_feedback(1, conversation_id="ghost")
    assert feedback_rows(store) == [] and store.spooled() == 0


def test_bad_feedback_is_refused_before_the_database(tmp_path):
    # A database that cannot be reached: nothing may be spooled for a bad value either.
    dead = dead_postgres_store(tmp_path, tmp_path / "spool.jsonl")
    for bad in (0, 2, True, False, "1", 1.0, None):
        with pytest.raises(InvalidFeedback, match="'feedback' must be the integer 1 or -1"):
            dead.save_feedback(bad, conversation_id="c1")
    with pytest.raises(InvalidFeedback, match="too long"):
        dead.save_feedback(1, "x" * (MAX_COMMENT_CHARS + 1), conversation_id="c1")
    with pytest.raises(InvalidFeedback, match="string"):
        dead.save_feedback(1, 5, conversation_id="c1")
    assert issubclass(InvalidFeedback, InvalidInput)
    with pytest.raises(ValueError, match="exchange_id or a conversation_id"):
        dead.save_feedback(1)
    with pytest.raises(ValueError, match="non-empty"):
        dead.save_feedback(1, conversation_id="")
    assert dead.spooled() == 0
    # The longest comment allowed is accepted.
    assert dead.save_feedback(1, "x" * MAX_COMMENT_CHARS, conversation_id="c1") == "spooled"


def test_feedback_check_constraint(store):
    store.save_exchange(exchange("c1", 1))
    store.save_feedback(1, conversation_id="c1")
    # The CHECK constraint holds in the database itself, not only in Python (the insert
    # fails, so the read transaction it runs in writes nothing).
    for bad in (0, 2):
        with pytest.raises((sqlite3.IntegrityError, psycopg2.IntegrityError)):
            query(store, "INSERT INTO feedback (conversation_id, feedback, created_at) "
                         "VALUES (%s, %s, %s)", ("c1", bad, "2024-05-01T09:30:00+00:00"))
    assert count(store, "feedback") == 1


# -- relevance -------------------------------------------------------------------------------


def test_set_relevance_and_unjudged_exchanges(store):
    ok1, ok2 = exchange("c1", 1), exchange("c1", 2)
    failed = exchange("c2", 1, status="llm_error", error="timeout", answer=None)
    for ex in (ok1, ok2, failed):
        store.save_exchange(ex)
    assert [e.id for e in store.exchanges_without_relevance()] == [ok1.id, ok2.id]

    store.set_relevance(ok1.id, "PARTLY_RELEVANT", "Répond à moitié.", prompt_tokens=300,
                        completion_tokens=40, cost=0.000069)
    judged = store.get(ok1.id)
    assert (judged.relevance, judged.relevance_explanation) == ("PARTLY_RELEVANT",
                                                                "Répond à moitié.")
    assert (judged.judge_prompt_tokens, judged.judge_completion_tokens,
            judged.judge_total_tokens, judged.judge_cost) == (300, 40, 340, 0.000069)
    assert [e.id for e in store.exchanges_without_relevance(limit=10)] == [ok2.id]
    with pytest.raises(ValueError):
        store.set_relevance(ok2.id, "MAYBE", "")
    with pytest.raises(KeyError):
        store.set_relevance("nope", "RELEVANT", "")


# -- stats -----------------------------------------------------------------------------------


def seed_log(store):
    t0 = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
    a1 = exchange("A", 1, mode="llm", model="gpt-4o-mini", response_time=1.0, prompt_tokens=100,
                  completion_tokens=50, total_tokens=150, cost=0.001, created_at=t0)
    a2 = exchange("A", 2, mode="llm", model="gpt-4o-mini", response_time=2.0, prompt_tokens=200,
                  completion_tokens=100, total_tokens=300, cost=0.002,
                  created_at=t0 + timedelta(minutes=1))
    b1 = exchange("B", 1, mode="extractive", response_time=3.0, prompt_tokens=0,
                  completion_tokens=0, total_tokens=0, created_at=t0 + timedelta(minutes=2))
    c1 = exchange("C", 1, mode="llm", model="gpt-4o", status="llm_error", error="timeout",
                  answer=None, response_time=4.0, created_at=t0 + timedelta(minutes=3))
    old = exchange("O", 1, mode="llm", model="gpt-4o-mini", response_time=10.0,
                   prompt_tokens=10, completion_tokens=10, total_tokens=20, cost=0.5,
                   created_at=datetime(2020, 1, 1, tzinfo=UTC))
    for ex in (a1, a2, b1, c1, old):
        assert store.save_exchange(ex)
    store.set_relevance(a1.id, "RELEVANT", "ok", prompt_tokens=30, completion_tokens=10,
                        cost=0.0001)
    store.set_relevance(a2.id, "PARTLY_RELEVANT", "bof", prompt_tokens=20, completion_tokens=5,
                        cost=0.00005)
    store.set_relevance(b1.id, "NON_RELEVANT", "non", prompt_tokens=10, completion_tokens=5)
    assert store.save_feedback(1, conversation_id="A") == "stored"
    assert store.save_feedback(-1, conversation_id="A") == "stored"
    assert store.save_feedback(1, exchange_id=b1.id) == "stored"


def test_stats_are_exact(store):
    empty = stats(store)
    assert empty["exchanges"] == 0 and empty["response_time"] == {"avg": None, "p95": None}
    assert empty["cost"]["total"] is None

    seed_log(store)
    assert stats(store) == {
        "since": None,
        "exchanges": 5,
        "conversations": 4,
        "errors": 1,
        "feedback": {"positive": 2, "negative": 1, "total": 3},
        "response_time": {"avg": 4.0, "p95": 8.8},  # percentile_cont over 1, 2, 3, 4, 10
        "tokens": {"prompt": 310, "completion": 160, "total": 470, "judge_prompt": 60,
                   "judge_completion": 20, "judge_total": 80},
        "cost": {"answer": 0.503, "judge": 0.00015, "total": 0.50315, "exchanges_with_cost": 3},
        "by_mode": {
            "extractive": {"exchanges": 1, "avg_response_time": 3.0, "total_tokens": 0,
                           "cost": None},
            "llm": {"exchanges": 4, "avg_response_time": 4.25, "total_tokens": 470,
                    "cost": 0.503},
        },
        "by_model": {
            "gpt-4o": {"exchanges": 1, "avg_response_time": 4.0, "total_tokens": 0,
                       "cost": None},
            "gpt-4o-mini": {"exchanges": 3, "avg_response_time": 4.333333, "total_tokens": 470,
                            "cost": 0.503},
            "none": {"exchanges": 1, "avg_response_time": 3.0, "total_tokens": 0, "cost": None},
        },
        "relevance": {"RELEVANT": 1, "PARTLY_RELEVANT": 1, "NON_RELEVANT": 1, "unjudged": 2},
    }

    recent = stats(store, since=datetime(2024, 1, 1, tzinfo=UTC))
    assert recent["since"] == "2024-01-01T00:00:00.000000+00:00"
    assert (recent["exchanges"], recent["conversations"], recent["errors"]) == (4, 3, 1)
    assert recent["response_time"] == {"avg": 2.5, "p95": 3.85}
    assert recent["tokens"]["total"] == 450
    assert recent["cost"] == {"answer": 0.003, "judge": 0.00015, "total": 0.00315,
                              "exchanges_with_cost": 2}
    assert recent["relevance"]["unjudged"] == 1
    assert recent["feedback"]["total"] == 3  # feedback was given now, after `since`
    json.dumps(recent)  # ready for the API as it is


# -- configuration ---------------------------------------------------------------------------


def test_open_store_backends(tmp_path):
    assert open_store("", data_dir=tmp_path).backend == "sqlite"
    assert open_store("postgresql://u:p@localhost/db", data_dir=tmp_path).backend == "postgresql"
    with pytest.raises(ConfigError) as info:
        open_store("mysql://u:secret@localhost/db", data_dir=tmp_path)
    assert "secret" not in str(info.value)
    assert issubclass(StoreUnavailable, AssistantError)


# -- the spool -------------------------------------------------------------------------------


def dead_postgres_store(tmp_path, spool: Path):
    """A store whose PostgreSQL refuses connections (nothing listens on the port)."""
    return open_store(f"postgresql://postgres@127.0.0.1:{free_port()}/postgres",
                      data_dir=tmp_path / "dead", spool_path=spool)


def test_unreachable_database_spools_instead_of_raising(tmp_path):
    spool = tmp_path / "var" / "spool.jsonl"
    dead = dead_postgres_store(tmp_path, spool)
    started = time.monotonic()
    assert dead.save_exchange(exchange("c1", 1)) is False
    # Accepted: existence cannot be checked.
    assert dead.save_feedback(1, conversation_id="c1") == "spooled"
    assert time.monotonic() - started < 5
    with pytest.raises(StoreUnavailable, match="unreachable"):
        dead.ping()
    with pytest.raises(StoreUnavailable):
        dead.history("c1")
    assert dead.spooled() == 2
    lines = [json.loads(line) for line in spool.read_text().splitlines()]
    assert [r["kind"] for r in lines] == ["exchange", "feedback"]

    # Another backend replays the same spool: everything lands once.
    live = open_store("", data_dir=tmp_path / "var", spool_path=spool)
    assert live.replay_spool() == 2
    assert live.replay_spool() == 0
    assert (count(live, "conversations"), count(live, "feedback")) == (1, 1)
    assert not spool.exists() and dead.spooled() == 0


def test_replay_survives_a_crash_at_any_point(tmp_path):
    spool = tmp_path / "var" / "spool.jsonl"
    dead = dead_postgres_store(tmp_path, spool)
    for turn in (1, 2, 3):
        dead.save_exchange(exchange("c1", turn))
    dead.save_feedback(-1, conversation_id="c1")
    batch = spool.read_bytes()
    live = open_store("", data_dir=tmp_path / "var", spool_path=spool)

    # Crash between the commit and the deletion: the batch is still there, already stored.
    assert live.replay_spool() == 4
    live.spool.replaying_path.write_bytes(batch)
    assert live.spooled() == 4
    assert live.replay_spool() == 4
    assert (count(live, "conversations"), count(live, "feedback")) == (3, 1)

    # Crash before the commit, with newer records spooled since: older batch first, all kept.
    live.spool.replaying_path.write_bytes(batch)
    dead.save_exchange(exchange("c1", 4))
    assert live.save_exchange(exchange("c1", 5)) is True  # a write replays what waits first
    assert [e.turn for e in live.history("c1")] == [1, 2, 3, 4, 5]
    assert live.spooled() == 0 and count(live, "feedback") == 1


def test_unstorable_records_are_set_aside(tmp_path):
    spool_path = tmp_path / "var" / "spool.jsonl"
    dead = dead_postgres_store(tmp_path, spool_path)
    dead.save_exchange(exchange("c1", 1))
    # Accepted while down; the conversation never existed.
    assert dead.save_feedback(1, conversation_id="ghost") == "spooled"
    with open(spool_path, "ab") as f:
        f.write(b'{"kind": "exchange", "data": {"quest')  # torn by a crash mid-append
    dead.save_exchange(exchange("c1", 2))  # still a whole line after the torn one

    live = open_store("", data_dir=tmp_path / "var", spool_path=spool_path)
    assert live.replay_spool() == 2
    assert [e.turn for e in live.history("c1")] == [1, 2]
    rejected = [json.loads(line) for line in live.spool.rejected_path.read_text().splitlines()]
    assert len(rejected) == 2
    assert any("unreadable" in r["error"] for r in rejected)
    assert any("unknown conversation" in r["error"] for r in rejected)
    assert live.spooled() == 0


def test_spooled_feedback_replays_on_its_exchange_once(tmp_path, log_database):
    spool = tmp_path / "var" / "spool.jsonl"
    live = open_store(log_database, data_dir=tmp_path / "var", spool_path=spool)
    first, latest, other = exchange("c1", 1), exchange("c1", 2), exchange("c2", 1)
    for ex in (first, latest, other):
        assert live.save_exchange(ex)

    dead = dead_postgres_store(tmp_path, spool)  # the same spool, while "the database is down"
    assert dead.save_feedback(1, " premier ", exchange_id=first.id) == "spooled"
    assert dead.save_feedback(-1, conversation_id="c1") == "spooled"
    assert dead.save_feedback(1, exchange_id=other.id, conversation_id="c2") == "spooled"
    assert dead.save_feedback(1, exchange_id="nope") == "spooled"
    assert dead.save_feedback(1, exchange_id=first.id, conversation_id="c2") == "spooled"
    # Written by the code before feedback could name an exchange: no "exchange_id" key.
    old = {"kind": "feedback", "spooled_at": iso(utcnow()),
           "data": {"spool_id": "0" * 32, "conversation_id": "c2", "feedback": -1,
                    "comment": "ancien", "created_at": iso(utcnow())}}
    live.spool.append(old)
    batch = spool.read_bytes()

    assert live.replay_spool() == 4
    expected = [("c1", first.id, 1, "premier"), ("c1", latest.id, -1, None),
                ("c2", other.id, 1, None), ("c2", other.id, -1, "ancien")]
    assert feedback_rows(live) == expected
    rejected = [json.loads(line)["error"]
                for line in live.spool.rejected_path.read_text().splitlines()]
    assert len(rejected) == 2
    assert any(e.startswith("UnknownExchange: unknown exchange nope") for e in rejected)
    assert any("not in conversation c2" in e for e in rejected)

    # Replayed again (a crash between the commit and the deletion): nothing stored twice.
    live.spool.replaying_path.write_bytes(batch)
    assert live.replay_spool() == 4
    assert feedback_rows(live) == expected
    live.close()


def test_spool_appends_from_two_processes_never_interleave(tmp_path):
    path = tmp_path / "spool.jsonl"
    code = ("import sys\nfrom assistant.conversation_log import Spool\n"
            "s = Spool(sys.argv[1])\n"
            "for i in range(150):\n"
            "    s.append({'tag': sys.argv[2], 'i': i, 'pad': 'é' * 6000})\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path), tag], cwd=REPO)
             for tag in ("a", "b")]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(records) == 300
    for tag in ("a", "b"):
        assert [r["i"] for r in records if r["tag"] == tag] == list(range(150))


def test_postgres_down_then_back(pg_cluster, pg_url, tmp_path):
    store = open_store(pg_url, data_dir=tmp_path / "var")
    store.upgrade()
    assert store.save_exchange(exchange("c1", 1))
    pg_cluster.stop()
    try:
        down = [exchange("c1", turn) for turn in (2, 3, 4, 5, 6)]
        assert [store.save_exchange(ex) for ex in down] == [False] * 5
        assert store.save_feedback(1, "spooled", conversation_id="c1") == "spooled"
        assert store.spooled() == 6
        with pytest.raises(StoreUnavailable):
            store.ping()
    finally:
        pg_cluster.start()
    store.ping()  # reconnects transparently (the pooled connections died with the server)
    assert store.replay_spool() == 6
    assert store.replay_spool() == 0
    assert count(store, "conversations") == 6
    assert [e.turn for e in store.history("c1")] == [1, 2, 3, 4, 5, 6]
    assert query(store, "SELECT exchange_id, comment FROM feedback") == [(down[-1].id, "spooled")]
    assert store.spooled() == 0


def test_concurrent_saves_while_postgres_restarts(pg_cluster, pg_url, tmp_path):
    store = open_store(pg_url, data_dir=tmp_path / "var")
    store.upgrade()
    threads_n, per_thread = 4, 25
    results: list[bool] = []
    lock = threading.Lock()
    stopped = threading.Barrier(threads_n + 1, timeout=30)

    def worker(k: int) -> None:
        for i in range(per_thread):
            if i == 10:
                stopped.wait()  # the main thread has stopped the database
            ok = store.save_exchange(exchange(f"t{k}", i + 1, question=f"q{k}-{i}"))
            with lock:
                results.append(ok)
            time.sleep(0.002 if i < 10 else 0.02)

    def wait_for(n: int) -> None:
        deadline = time.monotonic() + 30
        while len(results) < n and time.monotonic() < deadline:
            time.sleep(0.002)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(threads_n)]
    for t in threads:
        t.start()
    try:
        wait_for(20)
        pg_cluster.stop()  # while the threads write
        stopped.wait()
        wait_for(60)
        pg_cluster.start()  # while they write again
    finally:
        pg_cluster.start()
        for t in threads:
            t.join(timeout=60)
    assert len(results) == 100
    assert results.count(False) >= 20
    store.replay_spool()
    assert store.replay_spool() == 0
    assert count(store, "conversations") == 100
    assert query(store, "SELECT COUNT(DISTINCT question) FROM conversations")[0][0] == 100
    for k in range(threads_n):
        assert [e.turn for e in store.history(f"t{k}", limit=per_thread)] == \
            list(range(1, per_thread + 1))
