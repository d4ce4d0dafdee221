"""The ``assistant`` command: a thin layer that parses, calls the library and prints.

Every library error (``AssistantError``) becomes a one-line message and exit code 1 (usage
errors exit 2, click's convention); no traceback reaches the user.
"""

from __future__ import annotations

import functools
import json
import sys

import click

from assistant.config import load_settings
from assistant.errors import AssistantError


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


@cli.command("index")
@click.option("--source", help="Articles JSON, chunks JSON or sitemap URL (default: SOURCE).")
@click.option("--engine", type=click.Choice(["embedded", "elasticsearch"]),
              help="Engine to build (default: ENGINE).")
@click.option("--rebuild", is_flag=True, help="Replace the whole index instead of updating it.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.pass_obj
@reports_errors
def index_command(settings, source, engine, rebuild, quiet):
    """Build or update the search index from a source.

    Unchanged chunks are skipped and cached embeddings reused, so re-indexing an unchanged
    corpus takes seconds. Readers keep a working index throughout.

    \b
    Example:
        assistant index --source data/articles.json
        assistant index --source https://example.org/sitemap.xml --rebuild
    """
    from assistant.services import build_index

    report = build_index(settings.replace(**{k: v for k, v in
                                             {"source": source, "engine": engine}.items() if v}),
                         rebuild=rebuild, progress=not quiet)
    click.echo(report.summary())


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
    from assistant.services import open_retriever

    retriever = open_retriever(settings)
    passages = retriever.search(question, top, mode=mode, category=category)
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


def main() -> None:
    cli(prog_name="assistant")


if __name__ == "__main__":
    sys.exit(main())
