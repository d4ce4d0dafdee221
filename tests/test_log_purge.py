"""LOG_RETENTION_DAYS and ``assistant db purge`` on both log backends (SQLite and a real
PostgreSQL): old exchanges (with their verdicts) and old feedback go, recent ones stay, and
recent feedback on an old exchange goes with it."""

from __future__ import annotations

from datetime import timedelta

from click.testing import CliRunner

from assistant.cli import cli
from assistant.conversation_log import Exchange, open_store
from assistant.conversation_log.backends import utcnow


def feedback_rows(store) -> list[tuple]:
    return store.read(lambda cur: cur.execute(
        "SELECT exchange_id, feedback FROM feedback ORDER BY exchange_id, feedback").fetchall())


def fill(store):
    now = utcnow()
    old = Exchange(question="vieille question", answer="a", created_at=now - timedelta(days=40))
    old_judged = Exchange(question="vieille jugée", answer="b", relevance="RELEVANT",
                          judge_cost=0.01, created_at=now - timedelta(days=31))
    recent = Exchange(question="question récente", answer="c", created_at=now - timedelta(days=2))
    for exchange in (old, old_judged, recent):
        assert store.save_exchange(exchange)
    store.save_feedback(1, "bien", exchange_id=recent.id)
    store.save_feedback(-1, exchange_id=old.id)  # recent feedback on an old exchange
    return old, old_judged, recent


def run(env: dict, *args: str):
    return CliRunner().invoke(cli, ["--env-file", "/nonexistent/.env", *args],
                              env={"OPENAI_API_KEY": "", "OPENAI_BASE_URL": "", **env})


def test_purge_keeps_only_the_retention_period(tmp_path, log_database):
    data_dir = tmp_path / "var"
    with open_store(log_database, data_dir=data_dir) as store:
        old, old_judged, recent = fill(store)

    result = run({"DATABASE_URL": log_database, "DATA_DIR": str(data_dir),
                  "LOG_RETENTION_DAYS": "30"}, "db", "purge")
    assert result.exit_code == 0, result.output
    assert "2 exchange(s) (1 with a verdict), 1 feedback row(s)" in result.output

    with open_store(log_database, data_dir=data_dir) as store:
        assert [e.id for e in store.recent(10)] == [recent.id]
        assert feedback_rows(store) == [(recent.id, 1)]
        report = store.purge_before(utcnow() - timedelta(days=30))  # again: nothing left
        assert (report.exchanges, report.feedback) == (0, 0)
        report = store.purge_before(utcnow() - timedelta(days=1))  # --older-than 1
        assert (report.exchanges, report.feedback) == (1, 1)
        assert store.recent(10) == [] and feedback_rows(store) == []


def test_purge_options_and_retention_off(tmp_path):
    data_dir = tmp_path / "var"
    with open_store("", data_dir=data_dir) as store:
        fill(store)
    env = {"DATABASE_URL": "", "DATA_DIR": str(data_dir)}
    result = run(env, "db", "purge")
    assert result.exit_code == 0 and "kept forever" in result.output
    result = run(env, "db", "purge", "--older-than", "35")
    assert result.exit_code == 0 and "1 exchange(s)" in result.output, result.output
    for bad in (["--older-than", "0"], ["--every", "soon"]):
        result = run({**env, "LOG_RETENTION_DAYS": "30"}, "db", "purge", *bad)
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    result = run({**env, "LOG_RETENTION_DAYS": "-3"}, "db", "purge")
    assert result.exit_code == 1 and "LOG_RETENTION_DAYS" in result.output
