"""RATE_LIMIT shared by two app server processes through a real Redis (``redis_url``), and not
shared with the default in-memory storage. Each process is waitress serving ``create_app()``
configured from its environment, as ``assistant serve`` does; both log to one SQLite file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
import redis

from assistant.config import REPO_DIR
from assistant.conversation_log import Exchange, open_store
from evaluation.ports import free_port

LIMIT = 6


class AppProcess:
    def __init__(self, env: dict):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "waitress", "--host=127.0.0.1", f"--port={self.port}",
             "--threads=4", "--call", "assistant.web:create_app"],
            env=env, cwd=REPO_DIR, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/openapi.json", timeout=2).close()
                return
            except (urllib.error.URLError, OSError):
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    pytest.fail(f"app server did not start:\n{self.stderr()}", pytrace=False)
                time.sleep(0.2)

    def stderr(self) -> str:
        return self.process.stderr.read().decode(errors="replace")[-3000:] \
            if self.process.poll() is not None else ""

    def feedback(self, exchange_id: str) -> tuple[int, dict, dict]:
        request = urllib.request.Request(
            f"{self.url}/feedback",
            data=json.dumps({"feedback": 1, "exchange_id": exchange_id}).encode(),
            headers={"Content-Type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10) as r:
                return r.status, dict(r.headers), json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), json.loads(e.read())

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def two_servers(tmp_path):
    started = []

    def start(storage_url: str):
        data_dir = tmp_path / "var"
        data_dir.mkdir(exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
        env.update(PYTHONPATH=str(REPO_DIR), DATA_DIR=str(data_dir),
                   EMBEDDED_PATH=str(tmp_path / "no-index.sqlite"), OPENAI_API_KEY="",
                   OPENAI_BASE_URL="", DATABASE_URL="", RATE_LIMIT=f"{LIMIT}/minute",
                   RATE_LIMIT_STORAGE_URL=storage_url)
        with open_store("", data_dir=data_dir) as store:
            exchange = Exchange(question="Qu'est-ce qu'un VCO ?", answer="Un oscillateur.")
            assert store.save_exchange(exchange)
        servers = [AppProcess(env), AppProcess(env)]
        started.extend(servers)
        return servers, exchange.id

    yield start
    for server in started:
        server.stop()


def test_two_processes_share_the_limit_through_redis(two_servers, redis_url):
    (a, b), exchange_id = two_servers(redis_url)
    replies = [(a if n % 2 == 0 else b).feedback(exchange_id) for n in range(LIMIT + 4)]
    statuses = [status for status, _, _ in replies]
    assert statuses == [200] * LIMIT + [429] * 4, statuses
    refused = replies[LIMIT:]
    assert {status for status, _, _ in refused} == {429}
    for _, headers, body in refused:  # both processes refuse, with the JSON error and the wait
        assert 1 <= int(headers["Retry-After"]) <= 60 and "too many requests" in body["error"]
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter())
    assert any(b"arsonor" in key for key in keys), keys
    client.flushdb()


def test_in_memory_counters_are_per_process(two_servers):
    (a, b), exchange_id = two_servers("memory://")
    statuses = [(a if n % 2 == 0 else b).feedback(exchange_id)[0] for n in range(LIMIT + 4)]
    # Each process counts its own half: 5 each, under the limit of 6.
    assert statuses == [200] * (LIMIT + 4), statuses
