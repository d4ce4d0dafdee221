"""The ``assistant`` command: a thin layer that parses, calls the library and prints.

Every library error (``AssistantError``) becomes a one-line message and exit code 1 (usage
errors exit 2, click's convention); no traceback reaches the user.
"""

from __future__ import annotations

import functools
import json
import logging
import sys

import click

from assistant.answering.request import Ask
from assistant.config import load_settings
from assistant.errors import AssistantError
from assistant.services import Services

log = logging.getLogger("assistant.serve")


def reports_errors(command):
    """Turn library errors into clean CLI errors."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except AssistantError as e:
            raise click.ClickException(str(e)) from None
        except KeyboardInterrupt:
            raise click.ClickException("interrupted") from None

    return wrapper


@click.group()
@click.option("--env-file", default=".env", show_default=True,
              help="Read settings from this file (environment variables win).")
@click.pass_context
def cli(ctx: click.Context, env_file: str) -> None:
    """Arsonor Assistant: answers home-studio audio questions from the blog's articles."""
    try:
        ctx.obj = load_settings(env_file=env_file)
    except AssistantError as e:
        raise click.ClickException(str(e)) from None


def _checked_text(**values):
    """Command-line text is the boundary too: an undecodable byte in an argument arrives as a
    lone surrogate (Python's surrogateescape), which the embedder and the log cannot take."""
    from assistant.safe_text import check_text

    for name, value in values.items():
        if value is not None:
            check_text(value, name.replace("_", " "))


def _with(settings, **changes):
    """The settings with the options the user gave (None: not given)."""
    return settings.replace(**{k: v for k, v in changes.items() if v is not None})


@cli.command("index")
@click.option("--source", help="Articles JSON, chunks JSON or sitemap URL (default: SOURCE).")
@click.option("--engine", type=click.Choice(["embedded", "elasticsearch"]),
              help="Engine to build (default: ENGINE).")
@click.option("--rebuild", is_flag=True, help="Replace the whole index instead of updating it.")
@click.option("--every", metavar="DURATION",
              help="Update again every DURATION (30m, 6h, 1d...) until stopped (SIGINT/SIGTERM).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.pass_obj
@reports_errors
def index_command(settings, source, engine, rebuild, every, quiet):
    """Build or update the search index from a source.

    Unchanged chunks are skipped and cached embeddings reused, so re-indexing an unchanged
    corpus takes seconds; a re-crawl downloads only the pages that changed. Readers keep a
    working index throughout. One index job at a time: another one exits with code 75.

    \b
    Example:
        assistant index --source data/articles.json
        assistant index --source https://example.org/sitemap.xml --rebuild
        assistant index --every 6h
    """
    from assistant.errors import IndexBusy

    settings = _with(settings, source=source, engine=engine)
    if every is not None:
        from indexing.schedule import parse_every, run_every

        try:
            period = parse_every(every)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--every") from None
        if rebuild:
            raise click.UsageError("--rebuild and --every do not go together: rebuild once, "
                                   "then schedule updates")

        def run_once():
            with Services(settings) as services:
                return services.index(progress=not quiet)

        run_every(run_once, period, emit=click.echo)
        return
    try:
        with Services(settings) as services:
            report = services.index(rebuild=rebuild, progress=not quiet)
    except IndexBusy as e:
        raise _Busy(str(e)) from None
    click.echo(report.summary())


class _Busy(click.ClickException):
    exit_code = 75  # EX_TEMPFAIL: try again later


@cli.command("search")
@click.argument("question")
@click.option("-k", "--top", default=5, show_default=True, help="Number of passages.")
@click.option("--mode", type=click.Choice(["hybrid", "lexical", "vector"]), default="hybrid",
              show_default=True)
@click.option("--category", help="Only this category (e.g. 'LA POST-PROD').")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
@reports_errors
def search_command(settings, question, top, mode, category, as_json):
    """Print the best passages for QUESTION and the articles they come from."""
    _checked_text(question=question, category=category)
    ask = Ask.parse(question, category=category)
    with Services(settings) as services:
        passages = services.retriever.search(ask.question, top, mode=mode,
                                             category=ask.category).passages
    if as_json:
        click.echo(json.dumps([{"chunk_id": p.chunk.chunk_id, "article_id": p.chunk.article_id,
                                "title": p.chunk.title, "url": p.chunk.url, "score": p.score,
                                "text": p.chunk.text} for p in passages], ensure_ascii=False))
        return
    if not passages:
        click.echo("No passage found.")
    for n, p in enumerate(passages, 1):
        click.echo(f"[{n}] {p.chunk.title}  ({p.chunk.url or p.chunk.article_id})")
        snippet = p.chunk.text[:280].rsplit(" ", 1)[0]
        click.echo(f"    {snippet}…\n")


def ensure_index(services: Services, index_if_empty: bool) -> None:
    """Fail clearly when the index is empty, or build it first (``--index-if-empty``)."""
    if not services.index_is_empty():
        return
    settings = services.settings
    if not index_if_empty:
        raise click.ClickException(
            f"the {settings.engine} index is empty: build it first with `assistant index` "
            "(or start with `assistant serve --index-if-empty`)")
    click.echo(f"The index is empty: indexing {settings.source} first…", err=True)
    click.echo(services.index(progress=True).summary(), err=True)


@cli.command("serve")
@click.option("--host", help="Interface to listen on (default: HOST, 127.0.0.1).")
@click.option("--port", type=click.IntRange(0, 65535), help="Port (default: PORT, 5000).")
@click.option("--threads", type=click.IntRange(1, 256),
              help="Worker threads: concurrent requests, slow LLM calls included (default: THREADS).")
@click.option("--index-if-empty", is_flag=True,
              help="Index SOURCE (the demo corpus by default) first if the index is empty.")
@click.option("--warm/--no-warm", default=True, show_default=True,
              help="Without an LLM, embed the passages' sentences in the background at start "
                   "(once per corpus) so that first answers are fast.")
@click.pass_obj
@reports_errors
def serve_command(settings, host, port, threads, index_if_empty, warm):
    """Serve the chat page, the dashboard and the JSON API with waitress.

    Connection limits and timeouts: MAX_CONNECTIONS, CHANNEL_TIMEOUT, REQUEST_TIMEOUT. SIGTERM
    or Ctrl+C drains: no new connection, requests under way finish (SHUTDOWN_TIMEOUT), exit 0.

    \b
    Example:
        assistant serve --index-if-empty        # then open http://127.0.0.1:5000/
    """
    from assistant.web import create_app
    from assistant.web.serving import build_server, serve

    settings = _with(settings, host=host, port=port, threads=threads)
    budget = settings.llm_daily_budget_usd
    app = create_app({"SETTINGS": settings})
    services = app.extensions["assistant"]
    try:
        ensure_index(services, index_if_empty)
        services.warm_up(sentences=warm)  # the index and the model, before the first visitor
        try:
            server = build_server(app, settings)
        except OSError as e:
            raise click.ClickException(
                f"cannot listen on {settings.host}:{settings.port}: {e}") from None
        for level, line in app.extensions.get("start_lines", []):
            log.log(level, "%s", line)
        if budget > 0 and services.llm is not None:
            from assistant.answering.prices import price

            if price(services.llm.model) is None:
                log.warning("LLM_DAILY_BUDGET_USD=%g cannot bite: the price of %s is unknown "
                            "(assistant/answering/prices.py), so its answers cost 0 for the cap",
                            budget, services.llm.model)
        shown = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
        answers = services.describe_answers() + (
            f", at most ${budget:g} a day" if budget > 0 and services.llm is not None else "")
        click.echo(f"Arsonor Assistant: open http://{shown}:{server.effective_port}/  "
                   f"(answers: {answers}; log: {services.store.backend}; "
                   f"{settings.threads} threads; Ctrl+C or SIGTERM to stop)")
        serve(server, settings.shutdown_timeout)  # returns once drained
        click.echo("Arsonor Assistant: stopped", err=True)
    finally:
        services.close()  # the conversation log and the spool, after the last request


@cli.command("ask")
@click.argument("question")
@click.option("--category", help="Only this category (e.g. 'LA POST-PROD').")
@click.option("--conversation-id", help="Continue this conversation (a follow-up question).")
@click.option("--json", "as_json", is_flag=True, help="Print the whole answer as JSON.")
@click.pass_obj
@reports_errors
def ask_command(settings, question, category, conversation_id, as_json):
    """Answer QUESTION from the indexed articles and print the numbered sources.

    The exchange is logged like the web app's (the batch `assistant judge` rates it later).

    \b
    Example:
        assistant ask "Quel niveau LUFS viser pour Spotify ?"
        assistant ask "What is a VCO?" --json
    """
    _checked_text(question=question, category=category, conversation_id=conversation_id)
    ask = Ask.parse(question, conversation_id, category)
    with Services(settings.replace(judge_enabled=False)) as services:
        result = services.assistant.answer(ask)
    if as_json:
        click.echo(json.dumps(result.to_dict(), ensure_ascii=False, indent=2))
        return
    click.echo(result.answer.strip())
    if result.sources:  # grouped by article: one line per cited number, in number order
        click.echo("\nSources:")
        numbered = sorted((p["n"], source) for source in result.sources
                          for p in source["passages"])
        for n, source in numbered:
            click.echo(f"  [{n}] {source['title']} — {source['url'] or source['article_id']}")
    for notice in result.notices:
        click.echo(f"\n({notice['message']})")
    if result.related:
        click.echo("\nRelated articles:" if result.language == "en" else "\nArticles proches :")
        for article in result.related:
            click.echo(f"  - {article['title']} — {article['url']}")
    details = [result.mode if result.model is None else f"{result.mode}, {result.model}",
               f"{result.response_time:.2f} s"]
    if result.tokens["total"]:
        details.append(f"{result.tokens['total']} tokens")
    if result.cost:
        details.append(f"${result.cost:.5f}")
    if not result.logged:
        details.append("log unavailable: spooled")
    click.echo(f"\n({'; '.join(details)}; conversation {result.conversation_id}; "
               f"exchange {result.exchange_id})", err=True)


@cli.group("db")
def db_group():
    """The conversation log database (PostgreSQL at DATABASE_URL, else SQLite in DATA_DIR)."""


@db_group.command("upgrade")
@click.pass_obj
@reports_errors
def db_upgrade_command(settings):
    """Apply the migrations not applied yet (never drops anything)."""
    with Services(settings).open_log() as store:
        applied = store.upgrade()
        versions = store.schema_versions()
    if applied:
        click.echo(f"{store.backend}: applied migration(s) {', '.join(map(str, applied))}")
    else:
        click.echo(f"{store.backend}: schema up to date "
                   f"(version(s) {', '.join(map(str, versions)) or 'none'})")


@db_group.command("replay")
@click.pass_obj
@reports_errors
def db_replay_command(settings):
    """Store the records spooled while the database was down."""
    with Services(settings).open_log() as store:
        waiting = store.spooled()
        stored = store.replay_spool()
        left = store.spooled()
    click.echo(f"replayed {stored} spooled record(s) of {waiting}"
               + (f"; {left} still waiting" if left else "")
               + (f" (rejected ones are kept in {store.spool.rejected_path})"
                  if stored < waiting and not left else ""))


@db_group.command("purge")
@click.option("--older-than", "days", type=click.IntRange(1, None), metavar="DAYS",
              help="Delete what is older than DAYS days (default: LOG_RETENTION_DAYS).")
@click.option("--every", metavar="DURATION",
              help="Purge again every DURATION (1d, 12h...) until stopped (SIGINT/SIGTERM).")
@click.pass_obj
@reports_errors
def db_purge_command(settings, days, every):
    """Delete exchanges (with their verdicts) and feedback older than the retention period.

    \b
    Example:
        assistant db purge                 # LOG_RETENTION_DAYS=90 in the environment
        assistant db purge --older-than 30
        assistant db purge --every 1d      # what the compose service `log-purge` runs
    """
    from datetime import timedelta

    from assistant.conversation_log.backends import utcnow

    days = days if days is not None else settings.log_retention_days
    if days < 0:
        raise click.ClickException(
            f"LOG_RETENTION_DAYS={days}: expected 0 (keep forever) or more")

    def run_once():
        if not days:
            return _KeptForever()
        with Services(settings).open_log() as store:
            return store.purge_before(utcnow() - timedelta(days=days))

    if every is None:
        click.echo(run_once().summary())
        return
    from indexing.schedule import parse_every, run_every

    try:
        period = parse_every(every)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--every") from None
    run_every(run_once, period, emit=click.echo)


class _KeptForever:
    @staticmethod
    def summary() -> str:
        return ("LOG_RETENTION_DAYS is 0: the conversation log is kept forever, nothing to purge "
                "(set it, or pass --older-than DAYS)")


@cli.command("judge")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, None),
              help="At most this many exchanges.")
@click.pass_obj
@reports_errors
def judge_command(settings, limit):
    """Rate the relevance of logged answers that have no verdict yet (LLM as a judge)."""
    from assistant.answering.judge import judge_pending

    with Services(settings) as services:
        if services.llm is None:
            raise click.ClickException("no LLM configured: set OPENAI_API_KEY (or OPENAI_BASE_URL) "
                                       "to judge answers")
        report = judge_pending(services.llm, services.store, limit)
    click.echo(report.summary())


def _since(ctx, param, value: str):
    """``--since``: a period (24h, 7d …), an ISO date or 'all', as the start time it names."""
    from assistant.conversation_log.reports import parse_since

    try:
        return parse_since(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


@cli.command("stats")
@click.option("--since", "since", default="all", show_default=True, callback=_since,
              help="Period: 24h, 7d, 30m, 2w, an ISO date, or 'all'.")
@click.pass_obj
@reports_errors
def stats_command(settings, since):
    """Summarise the conversation log: volume, feedback, relevance, latency, tokens, cost.

    \b
    Example:
        assistant stats --since 7d
    """
    from assistant.conversation_log.reports import format_stats

    with Services(settings).open_log() as store:
        click.echo(format_stats(store, since), nl=False)


@cli.command("gaps")
@click.option("--since", "since", default="30d", show_default=True, callback=_since,
              help="Period: 24h, 7d, 30m, 2w, an ISO date, or 'all'.")
@click.option("--json", "as_json", is_flag=True, help="Print the groups as JSON.")
@click.option("--lexical", is_flag=True,
              help="Group by shared words instead of the embedding model (no model to load).")
@click.pass_obj
@reports_errors
def gaps_command(settings, since, as_json, lexical):
    """Questions the blog does not cover (declined, or rated thumbs down), grouped by meaning.

    \b
    Example:
        assistant gaps --since 30d
    """
    from assistant.conversation_log.gaps import content_gaps, format_gaps

    services = Services(settings)
    with services, services.open_log() as store:
        groups = content_gaps(store, since,
                              embed=None if lexical else services.query_embeddings)
    if as_json:
        click.echo(json.dumps({"since": since.isoformat() if since else None, "groups": groups},
                              ensure_ascii=False, indent=2))
    else:
        click.echo(format_gaps(groups))


def main() -> None:
    cli(prog_name="assistant")


if __name__ == "__main__":
    sys.exit(main())
