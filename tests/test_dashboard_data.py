"""The dashboard's panels (``dashboard_data``) and ``assistant stats``, on a real log.

The log is written by the store's own ``save_exchange`` / ``set_relevance`` / ``save_feedback``
on SQLite and on a real PostgreSQL (whose session runs in a far-away time zone, to prove the
UTC buckets do not depend on it); every panel is checked against figures worked out by hand,
and the two backends must return exactly the same data.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest

from assistant.conversation_log import Exchange, open_store
from assistant.conversation_log.reports import (
    MAX_BUCKETS,
    bucket_for_hours,
    dashboard_data,
    dashboard_for_hours,
    format_stats,
    parse_since,
    percentile_cont,
    stats,
)

UTC = timezone.utc
HOUR = 3600
SERIES_KEYS = {
    "t", "time", "exchanges", "errors", "error_rate", "cost", "judge_cost", "total_cost",
    "prompt_tokens", "completion_tokens", "total_tokens", "judge_tokens",
    "response_time_avg", "response_time_p95", "retrieval_time_avg", "retrieval_time_p95",
    "llm_time_avg", "feedback_positive", "feedback_negative"}


def _base() -> datetime:
    """The start of the hour two hours ago (UTC); waits if the current hour is about to end,
    so that everything seeded "now" stays inside the third hour."""
    now = datetime.now(UTC)
    hour = now.replace(minute=0, second=0, microsecond=0)
    if (hour + timedelta(hours=1) - now).total_seconds() < 15:
        time.sleep((hour + timedelta(hours=1) - now).total_seconds() + 0.5)
        return _base()
    return hour - timedelta(hours=2)


def seed(store, future: bool = True) -> dict:
    """Seven exchanges in the window [B, B + 3h), one just before, one just after, judge verdicts
    and four feedbacks. Returns the window and the ids."""
    B = _base()
    m = lambda minutes: B + timedelta(minutes=minutes)  # noqa: E731
    llm = dict(mode="llm", model="gpt-4o-mini")

    rows = {
        "before": Exchange(conversation_id="conv-z", question="trop tôt", answer="x",
                           created_at=B - timedelta(seconds=1), response_time=99.0, **llm,
                           prompt_tokens=1000, completion_tokens=1000, total_tokens=2000,
                           cost=1.0),
        "e1": Exchange(conversation_id="conv-a", turn=1, question="Qu'est-ce qu'un VCO ?",
                       answer="Un oscillateur [1].", created_at=m(5), response_time=1.0,
                       retrieval_time=0.1, llm_time=0.8, prompt_tokens=100,
                       completion_tokens=50, total_tokens=150, cost=0.001,
                       sources=[{"article_id": "3f9a1c02", "title": "VCO", "score": 0.9,
                                 "url": "/articles/3f9a1c02", "chunk_id": "3f9a1c02-0"}],
                       **llm),
        "e2": Exchange(conversation_id="conv-a", turn=2, question="Et le DCO ?",
                       answer="Pareil, piloté numériquement [1].", created_at=m(20),
                       response_time=2.0, retrieval_time=0.2, llm_time=1.7, prompt_tokens=200,
                       completion_tokens=100, total_tokens=300, cost=0.002, **llm),
        "e3": Exchange(conversation_id="conv-b", question="LUFS podcast ?",
                       answer="-16 LUFS [1].", created_at=m(40), mode="extractive",
                       model=None, response_time=0.5, retrieval_time=0.3, llm_time=None,
                       cost=None),
        "e4": Exchange(conversation_id="conv-c", question="Compression parallèle ?",
                       answer="On mélange un signal compressé [2].", created_at=m(70),
                       mode="llm", model="gpt-4o", response_time=4.0, retrieval_time=0.4,
                       llm_time=3.5, prompt_tokens=400, completion_tokens=200,
                       total_tokens=600, cost=0.01),
        "e5": Exchange(conversation_id="conv-d", question="Moteur en panne ?", answer=None,
                       created_at=m(90), mode=None, model=None, status="engine_error",
                       error="engine down", response_time=0.05, retrieval_time=None,
                       llm_time=None, cost=None),
        "e8": Exchange(conversation_id="conv-f", question="LLM trop lent ?", answer=None,
                       created_at=m(105), status="llm_error", error="timeout after 30 s",
                       response_time=30.0, retrieval_time=0.15, llm_time=29.5, cost=None,
                       **llm),
        "e6": Exchange(conversation_id="conv-e", question="What is an LFO?",
                       answer="A low-frequency oscillator [1].", created_at=m(120),
                       mode="extractive", model=None, response_time=0.6, retrieval_time=0.25,
                       cost=None),
        "after": Exchange(conversation_id="conv-y", question="trop tard", answer="y",
                          created_at=B + timedelta(hours=3), response_time=99.0, **llm,
                          status="llm_error", cost=5.0),
    }
    if not future:
        del rows["after"]
    for exchange in rows.values():
        assert store.save_exchange(exchange) is True
    store.set_relevance(rows["e1"].id, "RELEVANT", "ok", prompt_tokens=20, completion_tokens=10,
                        cost=0.0002)
    store.set_relevance(rows["e2"].id, "PARTLY_RELEVANT", "bof", prompt_tokens=30,
                        completion_tokens=10, cost=0.0003)
    store.set_relevance(rows["e4"].id, "NON_RELEVANT", "non", prompt_tokens=50,
                        completion_tokens=20, cost=0.001)
    store.set_relevance(rows["before"].id, "NON_RELEVANT", "hors fenêtre")
    assert store.save_feedback(1, conversation_id="conv-a") == "stored"  # -> e2 (latest)
    assert store.save_feedback(1, "merci", exchange_id=rows["e2"].id) == "stored"
    assert store.save_feedback(-1, conversation_id="conv-c") == "stored"  # -> e4
    assert store.save_feedback(1, exchange_id=rows["e3"].id) == "stored"
    return {"since": B, "until": B + timedelta(hours=3) - timedelta(microseconds=1),
            "ids": {k: v.id for k, v in rows.items()}}


def feedback_bucket(store) -> int:
    """The bucket (hour, epoch seconds) of the feedback rows, from what the database stored."""
    rows = store.read(lambda cur: cur.execute("SELECT created_at FROM feedback").fetchall())
    starts = {int(store.py_time(r[0]).timestamp()) // HOUR * HOUR for r in rows}
    assert len(starts) == 1
    return starts.pop()


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, sqlite_data_dir, monkeypatch):
    url = ""
    if request.param == "postgresql":
        url = request.getfixturevalue("pg_url")
        monkeypatch.setenv("PGTZ", "Asia/Kathmandu")  # +05:45: a bucketing in local time shows
    s = open_store(url, data_dir=sqlite_data_dir)
    yield s
    s.close()


def test_every_panel_has_the_hand_computed_figures(store):
    seeded = seed(store)
    if store.backend == "postgresql":
        zone = store.read(lambda cur: cur.execute("SHOW TimeZone").fetchone()[0])
        assert zone == "Asia/Kathmandu"
    data = dashboard_data(store, seeded["since"], HOUR, seeded["until"])
    ids = seeded["ids"]
    B = seeded["since"]

    assert data["since"] == B.isoformat(timespec="seconds")
    assert data["since"].endswith("+00:00") and data["until"].endswith("+00:00")
    assert data["bucket_seconds"] == HOUR
    assert data["backend"] == store.backend
    assert data["totals"] == {"exchanges": 7, "conversations": 6}
    assert data["feedback"] == {"positive": 3, "negative": 1, "total": 4}
    assert data["feedback_rate"] == {"feedback": 4, "rated_exchanges": 3, "exchanges": 7,
                                     "rate": round(4 / 7, 4), "positive_share": 0.75}
    assert data["error_rate"] == {"errors": 2, "exchanges": 7, "rate": round(2 / 7, 4)}
    assert data["cost"] == {"answers": 0.013, "judge": 0.0015, "total": 0.0145,
                            "unknown_cost_exchanges": 4}
    assert data["relevance"] == {"RELEVANT": 1, "PARTLY_RELEVANT": 1, "NON_RELEVANT": 1,
                                 "unjudged": 4}
    assert data["answer_modes"] == {"extractive": 2, "llm": 4, "unknown": 1}
    assert data["models"] == [
        {"model": "gpt-4o-mini", "exchanges": 3, "total_tokens": 450, "cost": 0.003},
        {"model": "none", "exchanges": 3, "total_tokens": 0, "cost": None},
        {"model": "gpt-4o", "exchanges": 1, "total_tokens": 600, "cost": 0.01},
    ]
    assert data["errors_by_status"] == [
        {"status": "engine_error", "exchanges": 1,
         "last_seen": (B + timedelta(minutes=90)).isoformat(timespec="seconds"),
         "last_error": "engine down"},
        {"status": "llm_error", "exchanges": 1,
         "last_seen": (B + timedelta(minutes=105)).isoformat(timespec="seconds"),
         "last_error": "timeout after 30 s"},
    ]

    last = data["last_conversations"]
    assert [r["id"] for r in last] == [ids[k] for k in ("e6", "e8", "e5", "e4", "e3", "e2", "e1")]
    assert last[0] == {
        "id": ids["e6"], "conversation_id": "conv-e", "turn": 1,
        "time": (B + timedelta(hours=2)).isoformat(timespec="seconds"),
        "question": "What is an LFO?", "answer": "A low-frequency oscillator [1].",
        "relevance": None, "mode": "extractive", "model": None, "status": "ok",
        "response_time": 0.6}
    assert last[3]["relevance"] == "NON_RELEVANT" and last[3]["model"] == "gpt-4o"
    assert last[2]["answer"] == "" and last[2]["status"] == "engine_error"
    assert all(r["time"].endswith("+00:00") for r in last)

    series = data["series"]
    start = int(B.timestamp())
    assert [p["t"] for p in series] == [start, start + HOUR, start + 2 * HOUR]
    assert [p["time"] for p in series] == [
        (B + timedelta(hours=h)).isoformat(timespec="seconds") for h in range(3)]
    assert all(set(p) == SERIES_KEYS for p in series)
    b0, b1, b2 = series
    assert {k: b0[k] for k in SERIES_KEYS - {"t", "time", "feedback_positive",
                                             "feedback_negative"}} == {
        "exchanges": 3, "errors": 0, "error_rate": 0.0, "cost": 0.003, "judge_cost": 0.0005,
        "total_cost": 0.0035, "prompt_tokens": 300, "completion_tokens": 150,
        "total_tokens": 450, "judge_tokens": 70, "response_time_avg": 1.166667,
        "response_time_p95": 1.9, "retrieval_time_avg": 0.2, "retrieval_time_p95": 0.29,
        "llm_time_avg": 1.25}
    assert {k: b1[k] for k in SERIES_KEYS - {"t", "time", "feedback_positive",
                                             "feedback_negative"}} == {
        "exchanges": 3, "errors": 2, "error_rate": 0.6667, "cost": 0.01, "judge_cost": 0.001,
        "total_cost": 0.011, "prompt_tokens": 400, "completion_tokens": 200,
        "total_tokens": 600, "judge_tokens": 70, "response_time_avg": 11.35,
        "response_time_p95": 27.4, "retrieval_time_avg": 0.275, "retrieval_time_p95": 0.3875,
        "llm_time_avg": 16.5}
    assert {k: b2[k] for k in SERIES_KEYS - {"t", "time", "feedback_positive",
                                             "feedback_negative"}} == {
        "exchanges": 1, "errors": 0, "error_rate": 0.0, "cost": None, "judge_cost": None,
        "total_cost": None, "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0,
        "judge_tokens": 0, "response_time_avg": 0.6, "response_time_p95": 0.6,
        "retrieval_time_avg": 0.25, "retrieval_time_p95": 0.25, "llm_time_avg": None}
    # The feedback was given "now": it lands in the bucket of its stored timestamp.
    fb = feedback_bucket(store)
    for p in series:
        expected = (3, 1) if p["t"] == fb else (0, 0)
        assert (p["feedback_positive"], p["feedback_negative"]) == expected


def test_both_backends_return_the_same_data(sqlite_data_dir, pg_url, tmp_path, monkeypatch):
    monkeypatch.setenv("PGTZ", "America/Los_Angeles")
    results = []
    for url, data_dir in (("", sqlite_data_dir), (pg_url, tmp_path / "pg-spool")):
        with open_store(url, data_dir=data_dir) as store:
            seeded = seed(store)
            results.append((store, dashboard_data(store, seeded["since"], 1800,
                                                  seeded["until"])))
    (sqlite_store, lite), (pg_store, pg) = results
    for data in (lite, pg):
        data.pop("backend")
        for row in data["last_conversations"]:  # random uuid4 ids, one set per store
            row.pop("id")
    assert len(lite["series"]) == 6
    assert lite == pg


def test_empty_log_gives_every_bucket_with_zeros(store):
    since = datetime(2024, 5, 1, 9, 30, tzinfo=UTC)
    until = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    data = dashboard_data(store, since, HOUR, until)
    assert [p["time"] for p in data["series"]] == [
        "2024-05-01T09:00:00+00:00", "2024-05-01T10:00:00+00:00",
        "2024-05-01T11:00:00+00:00", "2024-05-01T12:00:00+00:00"]
    assert all(p["exchanges"] == 0 and p["response_time_avg"] is None
               and p["error_rate"] is None for p in data["series"])
    assert data["totals"] == {"exchanges": 0, "conversations": 0}
    assert data["feedback_rate"]["rate"] is None and data["error_rate"]["rate"] is None
    assert data["cost"] == {"answers": None, "judge": None, "total": 0.0,
                            "unknown_cost_exchanges": 0}
    assert data["last_conversations"] == [] and data["models"] == []
    assert data["answer_modes"] == {"extractive": 0, "llm": 0}
    assert data["relevance"] == {"RELEVANT": 0, "PARTLY_RELEVANT": 0, "NON_RELEVANT": 0,
                                 "unjudged": 0}


def test_long_answers_are_cut_and_the_limit_applies(store):
    now = datetime.now(UTC)
    for i in range(5):
        store.save_exchange(Exchange(question=f"q{i}", answer="é" * 2000, mode="extractive",
                                     created_at=now - timedelta(minutes=i)))
    data = dashboard_data(store, now - timedelta(hours=1), 600, now, last=3)
    assert [r["question"] for r in data["last_conversations"]] == ["q0", "q1", "q2"]
    assert all(len(r["answer"]) == 601 and r["answer"].endswith("…")
               for r in data["last_conversations"])


def test_arguments_are_checked(sqlite_data_dir):
    store = open_store("", data_dir=sqlite_data_dir)
    now = datetime.now(UTC)
    with pytest.raises(ValueError, match="timezone-aware"):
        dashboard_data(store, datetime(2024, 5, 1), HOUR)
    with pytest.raises(ValueError, match="positive"):
        dashboard_data(store, now - timedelta(hours=1), 0)
    with pytest.raises(ValueError, match="positive"):
        dashboard_data(store, now - timedelta(hours=1), 1.5)
    with pytest.raises(ValueError, match="buckets"):
        dashboard_data(store, now - timedelta(days=30), 60)
    with pytest.raises(ValueError, match="before"):
        dashboard_data(store, now, 60, now - timedelta(hours=1))
    assert (30 * 86400) // 60 > MAX_BUCKETS


def test_ranges_and_percentiles():
    assert [bucket_for_hours(h) for h in (1, 24, 168, 720)] == [60, 1800, 10800, 43200]
    assert bucket_for_hours(3) == 300
    assert percentile_cont([], 0.95) is None
    assert percentile_cont([2.0], 0.95) == 2.0
    assert percentile_cont([1.0, 2.0, 3.0, 4.0, 5.0], 0.5) == 3.0
    assert percentile_cont([0.5, 1.0, 2.0], 0.95) == pytest.approx(1.9)


def test_dashboard_for_hours_matches_the_stats(store):
    seed(store, future=False)  # stats() has no upper bound: nothing after now
    data = dashboard_for_hours(store, 24)
    summary = stats(store, datetime.now(UTC) - timedelta(hours=24))
    assert data["hours"] == 24 and data["bucket_seconds"] == 1800
    assert len(data["series"]) in (48, 49)
    assert data["totals"]["exchanges"] == summary["exchanges"] == 8  # 7 + the one just before B
    assert data["feedback"] == summary["feedback"]
    assert data["relevance"] == summary["relevance"]
    assert data["totals"]["conversations"] == summary["conversations"]
    assert data["error_rate"]["errors"] == summary["errors"]
    assert (data["cost"]["answers"], data["cost"]["judge"]) == (summary["cost"]["answer"],
                                                                summary["cost"]["judge"])
    assert {m["model"]: m["exchanges"] for m in data["models"]} == \
        {model: g["exchanges"] for model, g in summary["by_model"].items()}
    assert sum(p["exchanges"] for p in data["series"]) == summary["exchanges"]
    assert sum(p["total_tokens"] for p in data["series"]) == summary["tokens"]["total"]


# -- assistant stats --------------------------------------------------------------------------


def test_format_stats_summarises_the_log(store):
    seeded = seed(store)
    text = format_stats(store, seeded["since"])
    assert f"({store.backend})" in text
    assert "since " + seeded["since"].strftime("%Y-%m-%d %H:%M") + " UTC" in text
    # since B (inclusive): the 7 exchanges of the window and the one after it
    assert "8 in 7 conversation(s)" in text
    assert "Errors                 3 (38%)" in text
    assert "+1: 3   -1: 1   (75% positive)" in text
    assert "RELEVANT: 1   PARTLY_RELEVANT: 1   NON_RELEVANT: 1   (unjudged: 5)" in text
    assert "Cost                   $5.0145 (answers $5.0130, judge $0.0015)" in text
    assert "gpt-4o-mini" in text and "extractive" in text
    whole = format_stats(store)
    assert "all time" in whole and "9 in 8 conversation(s)" in whole


def test_format_stats_of_an_empty_log(sqlite_data_dir):
    with open_store("", data_dir=sqlite_data_dir) as store:
        assert "No exchange recorded in this period." in format_stats(store)


def test_parse_since():
    now = datetime(2024, 5, 10, 12, 0, tzinfo=UTC)
    assert parse_since("24h", now) == datetime(2024, 5, 9, 12, 0, tzinfo=UTC)
    assert parse_since("7d", now) == datetime(2024, 5, 3, 12, 0, tzinfo=UTC)
    assert parse_since("30m", now) == datetime(2024, 5, 10, 11, 30, tzinfo=UTC)
    assert parse_since("all", now) is None and parse_since(None, now) is None
    assert parse_since("2024-05-01", now) == datetime(2024, 5, 1, tzinfo=UTC)
    assert parse_since("2024-05-01T10:00+02:00", now) == datetime(2024, 5, 1, 8, tzinfo=UTC)
    with pytest.raises(ValueError, match="expected"):
        parse_since("yesterday", now)
