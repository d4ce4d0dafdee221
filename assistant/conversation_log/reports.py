"""Reports over the conversation log: ``stats`` (``assistant stats``) and the dashboard's panels.

Both read the store through :meth:`ConversationStore.read` and share every figure: the
aggregates over exchanges (:data:`_EXCHANGE_FIGURES`) and over feedback
(:data:`_FEEDBACK_FIGURES`), the relevance verdicts, the groups by mode and model, the cost
total and the p95 (PostgreSQL's ``percentile_cont`` on the values fetched in order). A figure of
``stats`` and the same figure of ``dashboard_data`` over the same window are equal.

``stats(store, since)`` sums up the whole log, or what came from ``since`` on.

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
and computed by the database itself (:meth:`ConversationStore.epoch_bucket`). Every bucket of
the range is present, empty ones with zero counts and ``None`` averages, so a chart shows gaps
honestly. Timestamps go out as ISO-8601 UTC text and epoch seconds.

``format_stats`` and ``parse_since`` are what ``assistant stats`` prints and reads.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from assistant.conversation_log.backends import Cursor, iso, to_utc
from assistant.conversation_log.store import RELEVANCE_VALUES, ConversationStore
from assistant.conversation_log.gaps import content_gaps

UTC = timezone.utc
MAX_BUCKETS = 2000
LAST_CONVERSATIONS = 50
ANSWER_PREVIEW = 600  # characters of each answer in the last-conversations panel
CONTENT_GAP_GROUPS = 10  # groups the dashboard shows

# Range choices offered by the page: hours -> bucket size (about 48-60 points per chart).
RANGES = {1: 60, 24: 1800, 168: 3 * 3600, 720: 12 * 3600}

# Aggregates over the exchanges of a window (or of one group of it): name -> SQL. Counts are
# 0 over no row, averages and costs NULL (unknown, not zero).
_EXCHANGE_FIGURES = {
    "exchanges": "COUNT(*)",
    "conversations": "COUNT(DISTINCT conversation_id)",
    "errors": "COALESCE(SUM(CASE WHEN status <> 'ok' THEN 1 ELSE 0 END), 0)",
    "response_time_avg": "AVG(response_time)",
    "retrieval_time_avg": "AVG(retrieval_time)",
    "llm_time_avg": "AVG(llm_time)",
    "prompt_tokens": "COALESCE(SUM(prompt_tokens), 0)",
    "completion_tokens": "COALESCE(SUM(completion_tokens), 0)",
    "total_tokens": "COALESCE(SUM(total_tokens), 0)",
    "judge_prompt_tokens": "COALESCE(SUM(judge_prompt_tokens), 0)",
    "judge_completion_tokens": "COALESCE(SUM(judge_completion_tokens), 0)",
    "judge_total_tokens": "COALESCE(SUM(judge_total_tokens), 0)",
    "cost": "SUM(cost)",
    "judge_cost": "SUM(judge_cost)",
    "with_cost": "COUNT(cost)",
}
# Aggregates over the feedback rows of a window (or of one group of it).
_FEEDBACK_FIGURES = {
    "positive": "COALESCE(SUM(CASE WHEN feedback = 1 THEN 1 ELSE 0 END), 0)",
    "negative": "COALESCE(SUM(CASE WHEN feedback = -1 THEN 1 ELSE 0 END), 0)",
    "rated_exchanges": "COUNT(DISTINCT exchange_id)",
}


# -- shared figures --------------------------------------------------------------------------


def _round(value: Any, digits: int = 6) -> float | None:
    return None if value is None else round(float(value), digits)


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


def _cost_total(*costs: Any) -> float | None:
    """The sum of the known costs; None when none is known."""
    known = [float(c) for c in costs if c is not None]
    return sum(known) if known else None


@dataclass(frozen=True)
class _Window:
    """``created_at`` bounds as SQL conditions and their parameters (both tables have it)."""

    conditions: tuple[str, ...]
    params: tuple

    @classmethod
    def between(cls, store: ConversationStore, since: datetime | None,
                until: datetime | None = None) -> "_Window":
        conditions, params = [], []
        for operator, bound in ((">=", since), ("<=", until)):
            if bound is not None:
                conditions.append(f"created_at {operator} %s")
                params.append(store.db_time(bound))
        return cls(tuple(conditions), tuple(params))

    def where(self, *extra: str) -> str:
        conditions = self.conditions + extra
        return " WHERE " + " AND ".join(conditions) if conditions else ""


def _aggregate(cur: Cursor, table: str, figures: dict[str, str], window: _Window,
               group: str | None = None) -> dict[Any, dict]:
    """``figures`` over the rows of ``table`` in ``window``, by ``group`` (an SQL expression);
    without a group, one entry (key None) that is there even when no row is."""
    columns = ", ".join(figures.values())
    if group is None:
        rows = [(None, *cur.execute(f"SELECT {columns} FROM {table}{window.where()}",
                                    window.params).fetchone())]
    else:
        rows = cur.execute(f"SELECT {group} AS grp, {columns} FROM {table}{window.where()}"
                           " GROUP BY grp", window.params).fetchall()
    return {key: dict(zip(figures, values)) for key, *values in rows}


def _p95(cur: Cursor, column: str, window: _Window, group: str = "NULL") -> dict[Any, float]:
    """The 95th percentile of ``column`` (NULLs left out) by ``group``: the values are fetched
    in order and interpolated by :func:`percentile_cont`, identically on both backends."""
    values: dict[Any, list[float]] = {}
    for key, value in cur.execute(
            f"SELECT {group} AS grp, {column} FROM conversations"
            f"{window.where(f'{column} IS NOT NULL')} ORDER BY 1, 2", window.params).fetchall():
        values.setdefault(key, []).append(float(value))
    return {key: percentile_cont(ordered, 0.95) for key, ordered in values.items()}


def _relevance(cur: Cursor, window: _Window) -> dict[str, int]:
    """Exchanges per verdict, ``unjudged`` for those without one; every verdict present."""
    counts = {value: 0 for value in RELEVANCE_VALUES}
    counts["unjudged"] = 0
    for verdict, figures in _aggregate(cur, "conversations", {"exchanges": "COUNT(*)"},
                                       window, "relevance").items():
        counts[verdict if verdict is not None else "unjudged"] = figures["exchanges"]
    return counts


def _groups(cur: Cursor, window: _Window, column: str, missing: str) -> dict[str, dict]:
    """The exchange figures by ``column`` (``missing`` standing for NULL), sorted by key."""
    return dict(sorted(_aggregate(cur, "conversations", _EXCHANGE_FIGURES, window,
                                  f"COALESCE({column}, '{missing}')").items()))


def _totals(cur: Cursor, window: _Window) -> dict:
    """The exchange and feedback figures over the whole window, in one dict."""
    return {**_aggregate(cur, "conversations", _EXCHANGE_FIGURES, window)[None],
            **_aggregate(cur, "feedback", _FEEDBACK_FIGURES, window)[None]}


def _feedback_counts(figures: dict) -> dict[str, int]:
    return {"positive": figures["positive"], "negative": figures["negative"],
            "total": figures["positive"] + figures["negative"]}


# -- stats -----------------------------------------------------------------------------------


def stats(store: ConversationStore, since: datetime | None = None) -> dict:
    """Totals over the log (from ``since`` when given). Times in seconds (avg, and p95
    interpolated like PostgreSQL's percentile_cont), costs in USD (None when no exchange
    has a known cost), feedback +1/-1 counts, relevance verdicts, errors (status != 'ok').
    Raises StoreUnavailable."""
    if since is not None:
        since = to_utc(since, "since")
    window = _Window.between(store, since)

    def group_summary(figures: dict) -> dict:
        return {"exchanges": figures["exchanges"],
                "avg_response_time": _round(figures["response_time_avg"]),
                "total_tokens": figures["total_tokens"], "cost": _round(figures["cost"], 8)}

    def read(cur: Cursor) -> dict:
        t = _totals(cur, window)
        return {
            "since": iso(since) if since is not None else None,
            "exchanges": t["exchanges"],
            "conversations": t["conversations"],
            "errors": t["errors"],
            "feedback": _feedback_counts(t),
            "response_time": {"avg": _round(t["response_time_avg"]),
                              "p95": _round(_p95(cur, "response_time", window).get(None))},
            "tokens": {"prompt": t["prompt_tokens"], "completion": t["completion_tokens"],
                       "total": t["total_tokens"], "judge_prompt": t["judge_prompt_tokens"],
                       "judge_completion": t["judge_completion_tokens"],
                       "judge_total": t["judge_total_tokens"]},
            "cost": {"answer": _round(t["cost"], 8), "judge": _round(t["judge_cost"], 8),
                     "total": _round(_cost_total(t["cost"], t["judge_cost"]), 8),
                     "exchanges_with_cost": t["with_cost"]},
            "by_mode": {k: group_summary(g) for k, g in _groups(cur, window, "mode",
                                                                "none").items()},
            "by_model": {k: group_summary(g) for k, g in _groups(cur, window, "model",
                                                                 "none").items()},
            "relevance": _relevance(cur, window),
        }

    return store.read(read)


# -- the dashboard ---------------------------------------------------------------------------


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


def _empty_point(start: int) -> dict:
    return {
        "t": start, "time": iso(datetime.fromtimestamp(start, UTC), "seconds"),
        "exchanges": 0, "errors": 0,
        "cost": None, "judge_cost": None, "total_cost": None,
        "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0,
        "judge_tokens": 0,
        "error_rate": None,
        "response_time_avg": None, "response_time_p95": None,
        "retrieval_time_avg": None, "retrieval_time_p95": None, "llm_time_avg": None,
        "feedback_positive": 0, "feedback_negative": 0}


def _point_figures(f: dict) -> dict:
    """A series point's figures from the exchange figures of its bucket (never empty)."""
    return {
        "exchanges": f["exchanges"], "errors": f["errors"],
        "error_rate": _round(f["errors"] / f["exchanges"], 4),
        "cost": _round(f["cost"], 8), "judge_cost": _round(f["judge_cost"], 8),
        "total_cost": _round(_cost_total(f["cost"], f["judge_cost"]), 8),
        "prompt_tokens": f["prompt_tokens"], "completion_tokens": f["completion_tokens"],
        "total_tokens": f["total_tokens"], "judge_tokens": f["judge_total_tokens"],
        "response_time_avg": _round(f["response_time_avg"]),
        "retrieval_time_avg": _round(f["retrieval_time_avg"]),
        "llm_time_avg": _round(f["llm_time_avg"])}


def _ratio(part: int, whole: int) -> float | None:
    return _round(part / whole, 4) if whole else None


def dashboard_data(store: ConversationStore, since: datetime, bucket_seconds: int,
                   until: datetime | None = None, *, last: int = LAST_CONVERSATIONS,
                   embed=None) -> dict:
    """Every dashboard panel over ``since <= created_at <= until`` (``until`` defaults to now).

    ``content_gaps``: the biggest groups of questions the blog does not cover
    (:mod:`assistant.conversation_log.gaps`), grouped with ``embed`` (a query-vector function)
    when given, else by shared words.

    Raises ``StoreUnavailable`` when the database cannot be reached, ValueError for a bucket
    size that is not a positive integer or that would give more than ``MAX_BUCKETS`` points.
    """
    since = to_utc(since, "since")
    until = to_utc(until, "until") if until is not None else datetime.now(UTC)
    if isinstance(bucket_seconds, bool) or not isinstance(bucket_seconds, int) \
            or bucket_seconds <= 0:
        raise ValueError(f"bucket_seconds must be a positive integer, got {bucket_seconds!r}")
    if until < since:
        raise ValueError("until is before since")
    first = int(since.timestamp()) // bucket_seconds * bucket_seconds
    final = int(until.timestamp()) // bucket_seconds * bucket_seconds
    if (final - first) // bucket_seconds + 1 > MAX_BUCKETS:
        raise ValueError(f"more than {MAX_BUCKETS} buckets: choose a larger bucket size")

    window = _Window.between(store, since, until)
    bucket = store.epoch_bucket(bucket_seconds)

    def time_text(value: Any) -> str:
        return iso(store.py_time(value), "seconds")

    def errors_by_status(cur: Cursor) -> list[dict]:
        found = []
        failing, of_status = window.where("status <> 'ok'"), window.where("status = %s")
        for status, n, last_seen in cur.execute(
                f"SELECT status, COUNT(*), MAX(created_at) FROM conversations{failing}"
                " GROUP BY status", window.params).fetchall():
            last_error = cur.execute(
                f"SELECT error FROM conversations{of_status}"
                " ORDER BY created_at DESC, id LIMIT 1", window.params + (status,)).fetchone()[0]
            found.append({"status": status, "exchanges": int(n), "last_seen": time_text(last_seen),
                          "last_error": last_error})
        return sorted(found, key=lambda e: (-e["exchanges"], e["status"]))

    def last_conversations(cur: Cursor) -> list[dict]:
        rows = []
        for (exchange_id, conversation_id, turn, created_at, question, answer, relevance,
             mode, model, status, response_time) in cur.execute(
                "SELECT id, conversation_id, turn, created_at, question, answer, relevance,"
                " mode, model, status, response_time"
                f" FROM conversations{window.where()} ORDER BY created_at DESC, id LIMIT %s",
                window.params + (int(last),)).fetchall():
            answer = answer or ""
            rows.append({
                "id": exchange_id, "conversation_id": conversation_id, "turn": turn,
                "time": time_text(created_at), "question": question,
                "answer": answer if len(answer) <= ANSWER_PREVIEW
                else answer[:ANSWER_PREVIEW].rstrip() + "…",
                "relevance": relevance, "mode": mode, "model": model, "status": status,
                "response_time": _round(response_time)})
        return rows

    def series(cur: Cursor) -> list[dict]:
        points = {start: _empty_point(start)
                  for start in range(first, final + 1, bucket_seconds)}
        # A bucket outside [first, final] cannot come back (the window lies inside it):
        # the `in points` checks only guard against a database disagreeing with Python.
        for start, figures in _aggregate(cur, "conversations", _EXCHANGE_FIGURES, window,
                                         bucket).items():
            if int(start) in points:
                points[int(start)].update(_point_figures(figures))
        for column in ("response_time", "retrieval_time"):
            for start, p95 in _p95(cur, column, window, bucket).items():
                if int(start) in points:
                    points[int(start)][f"{column}_p95"] = _round(p95)
        for start, figures in _aggregate(cur, "feedback", _FEEDBACK_FIGURES, window,
                                         bucket).items():
            if int(start) in points:
                points[int(start)].update(feedback_positive=figures["positive"],
                                          feedback_negative=figures["negative"])
        return list(points.values())

    def read(cur: Cursor) -> dict:
        t = _totals(cur, window)
        feedback = _feedback_counts(t)
        exchanges = t["exchanges"]
        models = [{"model": model, "exchanges": g["exchanges"],
                   "total_tokens": g["total_tokens"], "cost": _round(g["cost"], 8)}
                  for model, g in _groups(cur, window, "model", "none").items()]
        modes = {"llm": 0, "extractive": 0}
        modes.update({mode: g["exchanges"]
                      for mode, g in _groups(cur, window, "mode", "unknown").items()})
        return {
            "since": iso(since, "seconds"),
            "until": iso(until, "seconds"),
            "bucket_seconds": bucket_seconds,
            "backend": store.backend,
            "totals": {"exchanges": exchanges, "conversations": t["conversations"]},
            "last_conversations": last_conversations(cur),
            "feedback": feedback,
            "feedback_rate": {
                "feedback": feedback["total"], "rated_exchanges": t["rated_exchanges"],
                "exchanges": exchanges, "rate": _ratio(feedback["total"], exchanges),
                "positive_share": _ratio(feedback["positive"], feedback["total"])},
            "relevance": _relevance(cur, window),
            "answer_modes": dict(sorted(modes.items())),
            "models": sorted(models, key=lambda m: (-m["exchanges"], m["model"])),
            "error_rate": {"errors": t["errors"], "exchanges": exchanges,
                           "rate": _ratio(t["errors"], exchanges)},
            "cost": {"answers": _round(t["cost"], 8), "judge": _round(t["judge_cost"], 8),
                     "total": _round(_cost_total(t["cost"], t["judge_cost"]) or 0.0, 8),
                     "unknown_cost_exchanges": exchanges - t["with_cost"]},
            "errors_by_status": errors_by_status(cur),
            "series": series(cur),
        }

    data = store.read(read)
    data["content_gaps"] = content_gaps(store, since, until, embed=embed)[:CONTENT_GAP_GROUPS]
    return data


def dashboard_for_hours(store: ConversationStore, hours: float,
                        bucket_seconds: int | None = None,
                        now: datetime | None = None, *, embed=None) -> dict:
    """``dashboard_data`` over the last ``hours`` hours (bucket size from ``RANGES``)."""
    now = to_utc(now, "now") if now is not None else datetime.now(UTC)
    data = dashboard_data(store, now - timedelta(hours=hours),
                          bucket_seconds or bucket_for_hours(hours), now, embed=embed)
    data["hours"] = hours
    return data


# -- assistant stats -------------------------------------------------------------------------

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([mhdw])\s*$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str | None, now: datetime | None = None) -> datetime | None:
    """``24h``, ``7d``, ``30m``, ``2w`` (before now), an ISO date/time (UTC unless it has an
    offset), or None / ``all`` for the whole log. Raises ValueError for anything else."""
    if text is None or text.strip().lower() in ("", "all"):
        return None
    now = now or datetime.now(UTC)
    match = _DURATION.match(text.lower())
    if match:
        return now - timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"--since {text!r}: expected e.g. 24h, 7d, 30m, 2w, all, "
                         "or an ISO date such as 2024-05-01") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def _usd(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 0.01 or value == 0:
        return f"${value:,.4f}"
    return "$" + f"{value:.6f}".rstrip("0")


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.0f}%" if whole else "-"


def format_stats(store: ConversationStore, since: datetime | None = None) -> str:
    """A readable summary of the log (from ``since`` when given): volume, feedback, relevance,
    latency, tokens, cost, modes and models."""
    s = stats(store, since)
    n = s["exchanges"]
    period = (f"since {since.astimezone(UTC).strftime('%Y-%m-%d %H:%M')} UTC"
              if since is not None else "all time")
    lines = [f"Arsonor Assistant — conversation log ({store.backend}), {period}", ""]

    def row(label: str, value: str) -> None:
        lines.append(f"  {label:<22} {value}")

    if n == 0:
        lines.append("  No exchange recorded in this period.")
        return "\n".join(lines) + "\n"

    row("Exchanges", f"{n} in {s['conversations']} conversation(s)")
    row("Errors", f"{s['errors']} ({_pct(s['errors'], n)})")
    fb = s["feedback"]
    row("Feedback", f"+1: {fb['positive']}   -1: {fb['negative']}   "
                    f"({_pct(fb['positive'], fb['total'])} positive)" if fb["total"]
        else "none yet")
    rel = s["relevance"]
    judged = n - rel.get("unjudged", 0)
    row("Relevance", "   ".join(f"{k}: {rel.get(k, 0)}" for k in RELEVANCE_VALUES)
        + f"   (unjudged: {rel.get('unjudged', 0)})")
    if judged:
        row("", f"{_pct(rel.get('RELEVANT', 0), judged)} relevant of {judged} judged")
    rt = s["response_time"]
    row("Response time", f"avg {_seconds(rt['avg'])}   p95 {_seconds(rt['p95'])}")
    tk = s["tokens"]
    row("Tokens (answers)", f"{tk['total']:,} (prompt {tk['prompt']:,}, "
                            f"completion {tk['completion']:,})")
    if tk["judge_total"]:
        row("Tokens (judge)", f"{tk['judge_total']:,}")
    cost = s["cost"]
    row("Cost", f"{_usd(cost['total'])} (answers {_usd(cost['answer'])}, "
                f"judge {_usd(cost['judge'])})")

    lines += ["", "  By mode:"]
    for mode, g in s["by_mode"].items():
        lines.append(f"    {mode:<20} {g['exchanges']:>6}  {_pct(g['exchanges'], n):>4}  "
                     f"avg {_seconds(g['avg_response_time'])}")
    lines += ["", "  By model:"]
    for model, g in s["by_model"].items():
        lines.append(f"    {model:<20} {g['exchanges']:>6}  {g['total_tokens']:>10,} tokens  "
                     f"{_usd(g['cost'])}")
    return "\n".join(lines) + "\n"
