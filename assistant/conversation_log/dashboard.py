"""The monitoring dashboard's data: the Grafana panels, computed from the conversation log.

``dashboard_data(store, since, bucket_seconds)`` returns every panel of the Grafana dashboard
as JSON-ready data, on SQLite and PostgreSQL alike (``/dashboard/data`` serves it, the
``/dashboard`` page draws it):

* ``totals``              exchanges and conversations ("Exchanges");
* ``feedback``            +1 / -1 counts ("Feedback +1 / -1");
* ``feedback_rate``       feedback given per exchange ("Feedback rate");
* ``error_rate``          share of exchanges whose status is not 'ok' ("Error rate");
* ``cost``                answers + judge in USD, exchanges of unknown cost ("LLM cost");
* ``relevance``           the judge's verdicts, ``unjudged`` for the others ("Relevance");
* ``answer_modes``        llm / extractive (``unknown`` for no mode) ("Answer mode");
* ``models``              exchanges per model (``none`` for no model) ("Model used");
* ``last_conversations``  the latest exchanges: time, question, answer, relevance, mode,
                          response time ("Last conversations");
* ``errors_by_status``    count, last seen, last error per failing status ("Errors by status");
* ``series``              one point per time bucket: cost (answers, judge), tokens (prompt,
                          completion, judge), response time (avg, p95), retrieval latency
                          (avg, p95), LLM latency (avg), error rate, exchanges, feedback.

The ratios follow the Grafana panels' SQL: feedback rate = feedback rows / exchanges, error
rate = exchanges with status <> 'ok' / exchanges, both over the range.

Time buckets are aligned on the UNIX epoch in UTC (``bucket start = floor(epoch / size) * size``)
and computed by the database itself: ``EXTRACT(EPOCH FROM created_at)`` on PostgreSQL,
``unixepoch(created_at)`` on SQLite (whose timestamps are ISO text with an explicit offset).
Every bucket of the range is present, empty ones with zero counts and ``None`` averages, so a
chart shows gaps honestly. Percentiles interpolate like PostgreSQL's ``percentile_cont`` (and
``ConversationStore.stats()``). Timestamps go out as ISO-8601 UTC text and epoch seconds.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from typing import Any

from assistant.conversation_log.store import RELEVANCE_VALUES, ConversationStore

UTC = timezone.utc
MAX_BUCKETS = 2000
LAST_CONVERSATIONS = 50
ANSWER_PREVIEW = 600  # characters of each answer in the last-conversations panel

# Range choices offered by the page: hours -> bucket size (about 48-60 points per chart).
RANGES = {1: 60, 24: 1800, 168: 3 * 3600, 720: 12 * 3600}


def bucket_for_hours(hours: float) -> int:
    """A round bucket size giving about 50 points over ``hours``."""
    if hours in RANGES:
        return RANGES[hours]
    target = hours * 3600 / 50
    for size in (60, 120, 300, 600, 900, 1800, 3600, 2 * 3600, 3 * 3600, 6 * 3600,
                 12 * 3600, 86400, 7 * 86400):
        if size >= target:
            return size
    return 30 * 86400


def percentile_cont(sorted_values: list[float], fraction: float) -> float | None:
    """Linear interpolation between the closest ranks, as PostgreSQL's ``percentile_cont``."""
    if not sorted_values:
        return None
    position = fraction * (len(sorted_values) - 1)
    low = math.floor(position)
    value = sorted_values[low]
    if low + 1 < len(sorted_values):
        value += (position - low) * (sorted_values[low + 1] - value)
    return value


def _round(value: Any, digits: int = 6) -> float | None:
    return None if value is None else round(float(value), digits)


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="seconds")


def _utc(value: datetime, name: str) -> datetime:
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (UTC), got naive {value.isoformat()}")
    return value.astimezone(UTC)


def _epoch_bucket(backend: str, size: int) -> str:
    """SQL for the UTC epoch second starting the bucket of ``created_at`` (an integer)."""
    if backend == "postgresql":
        return f"(FLOOR(EXTRACT(EPOCH FROM created_at) / {size}) * {size})::BIGINT"
    return f"((unixepoch(created_at) / {size}) * {size})"


def dashboard_data(store: ConversationStore, since: datetime, bucket_seconds: int,
                   until: datetime | None = None, *, last: int = LAST_CONVERSATIONS) -> dict:
    """Every dashboard panel over ``since <= created_at <= until`` (``until`` defaults to now).

    Raises ``StoreUnavailable`` when the database cannot be reached, ValueError for a bucket
    size that is not a positive integer or that would give more than ``MAX_BUCKETS`` points.
    """
    since = _utc(since, "since")
    until = _utc(until, "until") if until is not None else datetime.now(UTC)
    if isinstance(bucket_seconds, bool) or not isinstance(bucket_seconds, int) \
            or bucket_seconds <= 0:
        raise ValueError(f"bucket_seconds must be a positive integer, got {bucket_seconds!r}")
    if until < since:
        raise ValueError("until is before since")
    first = int(since.timestamp()) // bucket_seconds * bucket_seconds
    final = int(until.timestamp()) // bucket_seconds * bucket_seconds
    if (final - first) // bucket_seconds + 1 > MAX_BUCKETS:
        raise ValueError(f"more than {MAX_BUCKETS} buckets: choose a larger bucket size")

    db = store._db
    window = (db.db_time(since), db.db_time(until))
    where = " WHERE created_at >= %s AND created_at <= %s"
    bucket = _epoch_bucket(store.backend, bucket_seconds)

    def read(cur) -> dict:
        # -- totals ------------------------------------------------------------------------
        exchanges, conversations, errors = cur.execute(
            "SELECT COUNT(*), COUNT(DISTINCT conversation_id),"
            " COALESCE(SUM(CASE WHEN status <> 'ok' THEN 1 ELSE 0 END), 0)"
            f" FROM conversations{where}", window).fetchone()
        exchanges, errors = int(exchanges), int(errors)

        cost_answers, cost_judge, unknown_cost = cur.execute(
            "SELECT SUM(cost), SUM(judge_cost),"
            " COALESCE(SUM(CASE WHEN cost IS NULL THEN 1 ELSE 0 END), 0)"
            f" FROM conversations{where}", window).fetchone()

        positive, negative, rated = cur.execute(
            "SELECT COALESCE(SUM(CASE WHEN feedback = 1 THEN 1 ELSE 0 END), 0),"
            " COALESCE(SUM(CASE WHEN feedback = -1 THEN 1 ELSE 0 END), 0),"
            " COUNT(DISTINCT exchange_id)"
            f" FROM feedback{where}", window).fetchone()
        positive, negative, rated = int(positive), int(negative), int(rated)

        relevance = {value: 0 for value in RELEVANCE_VALUES}
        relevance["unjudged"] = 0
        for verdict, n in cur.execute(
                f"SELECT relevance, COUNT(*) FROM conversations{where} GROUP BY relevance",
                window).fetchall():
            relevance[verdict if verdict is not None else "unjudged"] = int(n)

        modes: dict[str, int] = {"llm": 0, "extractive": 0}
        for mode, n in cur.execute(
                f"SELECT COALESCE(mode, 'unknown'), COUNT(*) FROM conversations{where}"
                " GROUP BY COALESCE(mode, 'unknown')", window).fetchall():
            modes[mode] = int(n)

        models = [
            {"model": model, "exchanges": int(n), "total_tokens": int(tokens or 0),
             "cost": _round(cost, 8)}
            for model, n, tokens, cost in cur.execute(
                "SELECT COALESCE(model, 'none'), COUNT(*), SUM(total_tokens), SUM(cost)"
                f" FROM conversations{where} GROUP BY COALESCE(model, 'none')",
                window).fetchall()]
        models.sort(key=lambda m: (-m["exchanges"], m["model"]))

        errors_by_status = []
        for status, n, last_seen in cur.execute(
                "SELECT status, COUNT(*), MAX(created_at)"
                f" FROM conversations{where} AND status <> 'ok' GROUP BY status",
                window).fetchall():
            last_error = cur.execute(
                f"SELECT error FROM conversations{where} AND status = %s"
                " ORDER BY created_at DESC, id LIMIT 1", window + (status,)).fetchone()[0]
            errors_by_status.append({"status": status, "exchanges": int(n),
                                     "last_seen": _iso(db.py_time(last_seen)),
                                     "last_error": last_error})
        errors_by_status.sort(key=lambda e: (-e["exchanges"], e["status"]))

        # -- last conversations ------------------------------------------------------------
        last_rows = []
        for (exchange_id, conversation_id, turn, created_at, question, answer, relevance_v,
             mode, model, status, response_time) in cur.execute(
                "SELECT id, conversation_id, turn, created_at, question, answer, relevance,"
                " mode, model, status, response_time"
                f" FROM conversations{where} ORDER BY created_at DESC, id LIMIT %s",
                window + (int(last),)).fetchall():
            answer = answer or ""
            last_rows.append({
                "id": exchange_id, "conversation_id": conversation_id, "turn": turn,
                "time": _iso(db.py_time(created_at)),
                "question": question,
                "answer": answer if len(answer) <= ANSWER_PREVIEW
                else answer[:ANSWER_PREVIEW].rstrip() + "…",
                "relevance": relevance_v, "mode": mode, "model": model, "status": status,
                "response_time": _round(response_time)})

        # -- time series -------------------------------------------------------------------
        points: dict[int, dict] = {}
        for start in range(first, final + 1, bucket_seconds):
            points[start] = {
                "t": start, "time": _iso(datetime.fromtimestamp(start, UTC)),
                "exchanges": 0, "errors": 0,
                "cost": None, "judge_cost": None, "total_cost": None,
                "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0,
                "judge_tokens": 0,
                "error_rate": None,
                "response_time_avg": None, "response_time_p95": None,
                "retrieval_time_avg": None, "retrieval_time_p95": None, "llm_time_avg": None,
                "feedback_positive": 0, "feedback_negative": 0}

        for (start, n, n_errors, cost, judge_cost, prompt, completion, total, judge_total,
             avg_response, avg_retrieval, avg_llm) in cur.execute(
                f"SELECT {bucket} AS bucket, COUNT(*),"
                " SUM(CASE WHEN status <> 'ok' THEN 1 ELSE 0 END),"
                " SUM(cost), SUM(judge_cost), SUM(prompt_tokens), SUM(completion_tokens),"
                " SUM(total_tokens), SUM(judge_total_tokens),"
                " AVG(response_time), AVG(retrieval_time), AVG(llm_time)"
                f" FROM conversations{where} GROUP BY bucket ORDER BY bucket",
                window).fetchall():
            p = points.get(int(start))
            if p is None:  # cannot happen: the window lies inside [first, final + size)
                continue
            known = [c for c in (cost, judge_cost) if c is not None]
            p.update({
                "exchanges": int(n), "errors": int(n_errors or 0),
                "error_rate": _round(int(n_errors or 0) / int(n), 4),
                "cost": _round(cost, 8), "judge_cost": _round(judge_cost, 8),
                "total_cost": _round(sum(float(c) for c in known), 8) if known else None,
                "prompt_tokens": int(prompt or 0), "completion_tokens": int(completion or 0),
                "total_tokens": int(total or 0), "judge_tokens": int(judge_total or 0),
                "response_time_avg": _round(avg_response),
                "retrieval_time_avg": _round(avg_retrieval),
                "llm_time_avg": _round(avg_llm)})

        for column, key in (("response_time", "response_time_p95"),
                            ("retrieval_time", "retrieval_time_p95")):
            values: dict[int, list[float]] = {}
            for start, value in cur.execute(
                    f"SELECT {bucket} AS bucket, {column} FROM conversations{where}"
                    f" AND {column} IS NOT NULL ORDER BY bucket, {column}", window).fetchall():
                values.setdefault(int(start), []).append(float(value))
            for start, ordered in values.items():
                if start in points:
                    points[start][key] = _round(percentile_cont(ordered, 0.95))

        for start, value, n in cur.execute(
                f"SELECT {bucket} AS bucket, feedback, COUNT(*) FROM feedback{where}"
                " GROUP BY bucket, feedback", window).fetchall():
            p = points.get(int(start))
            if p is not None:
                p["feedback_positive" if value == 1 else "feedback_negative"] += int(n)

        feedback_total = positive + negative
        return {
            "since": _iso(since),
            "until": _iso(until),
            "bucket_seconds": bucket_seconds,
            "backend": store.backend,
            "totals": {"exchanges": exchanges, "conversations": int(conversations)},
            "last_conversations": last_rows,
            "feedback": {"positive": positive, "negative": negative, "total": feedback_total},
            "feedback_rate": {
                "feedback": feedback_total, "rated_exchanges": rated, "exchanges": exchanges,
                "rate": _round(feedback_total / exchanges, 4) if exchanges else None,
                "positive_share": _round(positive / feedback_total, 4) if feedback_total
                else None},
            "relevance": relevance,
            "answer_modes": dict(sorted(modes.items())),
            "models": models,
            "error_rate": {"errors": errors, "exchanges": exchanges,
                           "rate": _round(errors / exchanges, 4) if exchanges else None},
            "cost": {"answers": _round(cost_answers, 8), "judge": _round(cost_judge, 8),
                     "total": _round(float(cost_answers or 0) + float(cost_judge or 0), 8),
                     "unknown_cost_exchanges": int(unknown_cost)},
            "errors_by_status": errors_by_status,
            "series": list(points.values()),
        }

    store._sync()
    return store._run(read, write=False)


def dashboard_for_hours(store: ConversationStore, hours: float,
                        bucket_seconds: int | None = None,
                        now: datetime | None = None) -> dict:
    """``dashboard_data`` over the last ``hours`` hours (bucket size from ``RANGES``)."""
    now = _utc(now, "now") if now is not None else datetime.now(UTC)
    data = dashboard_data(store, now - timedelta(hours=hours),
                          bucket_seconds or bucket_for_hours(hours), now)
    data["hours"] = hours
    return data
