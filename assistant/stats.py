"""``assistant stats``: a terminal summary of the conversation log.

``format_stats(store, since)`` renders ``ConversationStore.stats(since)`` as aligned text;
``stats_command`` is the click command (register it with ``cli.add_command(stats_command)``).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import click

from assistant.conversation_log import ConversationStore

UTC = timezone.utc
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([mhdw])\s*$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str | None, now: datetime | None = None) -> datetime | None:
    """``24h``, ``7d``, ``30m``, ``2w`` (before now), an ISO date/time (UTC unless it has an
    offset), or None / ``all`` for the whole log."""
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
    s = store.stats(since)
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
    row("Relevance", "   ".join(f"{k}: {rel.get(k, 0)}"
                                for k in ("RELEVANT", "PARTLY_RELEVANT", "NON_RELEVANT"))
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


@click.command("stats")
@click.option("--since", "since_text", default="all", show_default=True,
              help="Period: 24h, 7d, 30m, 2w, an ISO date, or 'all'.")
@click.pass_obj
def stats_command(settings, since_text: str) -> None:
    """Summarise the conversation log: volume, feedback, relevance, latency, tokens, cost.

    \b
    Example:
        assistant stats --since 7d
    """
    from assistant.conversation_log import open_store
    from assistant.errors import AssistantError

    try:
        since = parse_since(since_text)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--since") from None
    try:
        with open_store(settings.database_url, data_dir=settings.data_dir) as store:
            click.echo(format_stats(store, since), nl=False)
    except AssistantError as e:
        raise click.ClickException(str(e)) from None
