"""`assistant serve` (a real process over the demo index) says at start how admin access
works, and does what it says: listening on all interfaces without ADMIN_TOKEN, the admin pages
are refused while the chat page and /health answer."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

from assistant.config import REPO_DIR
from evaluation.ports import free_port


def status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_serve_on_all_interfaces_without_a_token_refuses_admin_pages(demo_index_settings, tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    s = demo_index_settings
    env.update(PYTHONPATH=str(REPO_DIR), DATA_DIR=str(tmp_path / "var"),
               EMBEDDED_PATH=str(s.embedded_file), EMBEDDING_CACHE=str(s.embedding_cache_file),
               SOURCE=s.source, OPENAI_API_KEY="", OPENAI_BASE_URL="", DATABASE_URL="",
               ADMIN_TOKEN="", PYTHONUNBUFFERED="1")
    log_file = tmp_path / "serve.log"
    with open(log_file, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "assistant.cli", "--env-file", "/nonexistent/.env", "serve",
             "--host", "0.0.0.0", "--port", str(port), "--no-warm"],
            env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 120
            while "open http://" not in log_file.read_text(errors="replace"):
                assert process.poll() is None, log_file.read_text()
                assert time.monotonic() < deadline, log_file.read_text()
                time.sleep(0.2)
            base = f"http://127.0.0.1:{port}"
            for path in ("/dashboard", "/dashboard/data", "/metrics"):
                assert status(base + path) == 403, path
            assert status(base + "/") == 200
            assert status(base + "/health") == 200
        finally:
            process.terminate()
            process.wait(20)
    text = log_file.read_text(errors="replace")
    assert "WARNING" in text and "REFUSED to everyone: no ADMIN_TOKEN" in text, text
    assert "rate limits: 10/minute;100/hour;300/day per client" in text
