"""Real Chromium (Debian's, through Playwright) and the app served for it, shared by every
browser test: ``browser`` (one Chromium per test module) and ``serve(settings)`` (the app on
127.0.0.1:<free port> by werkzeug in a thread, stopped after the test)."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ANSWER_TIMEOUT = 90_000  # ms: the first question of an app loads the embedding model
CITATION = re.compile(r"\[(\d+(?:\s*[,;]\s*\d+)*)\]")


def cited_numbers(answer: str) -> list[int]:
    """The passage numbers an answer cites ([1], [2, 3] …), sorted."""
    return sorted({int(n) for group in CITATION.findall(answer)
                   for n in re.split(r"\s*[,;]\s*", group)})


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found: apt-get install -y chromium", pytrace=False)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class Served:
    """The app served on 127.0.0.1:<free port> by werkzeug in a thread."""

    def __init__(self, app):
        from werkzeug.serving import make_server

        self.app = app
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.thread.join(10)
        self.server.server_close()
        self.app.extensions["assistant"].close()


@pytest.fixture
def serve():
    from assistant.web import create_app

    served = []

    def start(settings):
        s = Served(create_app({"SETTINGS": settings, "TESTING": True}))
        served.append(s)
        return s

    yield start
    for s in served:
        s.close()


@pytest.fixture
def app_settings(demo_index_settings, tmp_path, log_database):
    """The demo index, extractive answers, a fresh log (SQLite in tmp_path, or PostgreSQL)."""
    return demo_index_settings.replace(data_dir=str(tmp_path / "var"),
                                       database_url=log_database,
                                       openai_api_key="", openai_base_url="")
